"""A band trains each size only on the budgets near its use: the sweep, its checks and the planted-law design agree
on which points exist. Training is a planted law here (no torch), so every check is exact and fast."""

import pytest

from scaling.laws import ParametricLaw
from scaling.planted import Design
from scaling.spec import Band, SpecError, spec_from_dict
from scaling.sweep import Sweep

LAW = ParametricLaw(E=0.5, A=30.0, B=200.0, alpha=0.4, beta=0.4)
TOKENS_PER_STEP = 100
SPEC = {
    "name": "band",
    "series": [{"name": "K4", "store": "unused"}],
    "sizes": [{"embed_dim": d, "num_layers": 1} for d in (4, 8, 16, 32, 64)],
    "budgets": [1e9, 1e10, 1e11],
    "batch_size": 1,
    "warmup_steps": 1,
    "band": {"min_steps": 20, "max_tokens_per_param": 2000},
    "learning_rate": {"multipliers": [1.0], "max_extensions": 0},
    "holdout": {"factors": [2.0]},
    "fit": {"bootstrap": 10},
}


def facts_of(size) -> dict:
    params = 100 * size.embed_dim**2
    return {
        "params": params,
        "params_non_embedding": params,
        "flops_per_token": 6 * params,
        "tokens_per_step": TOKENS_PER_STEP,
        "unique_tokens": 10**12,
        "tokens_per_frame": 4,
        "vocab_size": 16,
        "store_digest": "planted",
    }


class PlantedBackend:
    """Describes sizes by a formula and 'trains' a point by evaluating a known law there."""

    def __init__(self):
        self.trained: list[tuple[str, str, float]] = []  # (role, size, budget)

    def describe(self, series, size, spec) -> dict:
        return facts_of(size)

    def train(self, trunk, spec, out, on_point) -> None:
        for branch in trunk.branches:
            self.trained.append((trunk.role, trunk.size.label, branch.budget))
            tokens = branch.steps * TOKENS_PER_STEP
            loss = float(LAW(trunk.facts["params"], tokens))
            on_point(
                branch,
                {
                    "val_obs_ce": loss,
                    "val_bits_per_frame": loss,
                    "val_reward_loss": 0.0,
                    "val_termination_loss": 0.0,
                    "train_loss": loss,
                },
            )


def _kept(spec) -> set[tuple[str, float]]:
    return {(s.label, b) for s in spec.sizes for b in spec.ladder_budgets(facts_of(s))}


def test_band_leaves_out_starved_and_overtrained_points():
    facts = facts_of(spec_from_dict(SPEC).sizes[0])  # 1,600 parameters, 9,600 FLOPs per token
    band = Band(min_steps=20, max_tokens_per_param=2000)
    assert not band.keeps(facts, 20 * TOKENS_PER_STEP * 9600 - 1e6)  # 19 steps
    assert band.keeps(facts, 20 * TOKENS_PER_STEP * 9600)  # 20 steps
    assert band.keeps(facts, 2000 * 1600 * 9600)  # exactly 2,000 tokens per parameter
    assert not band.keeps(facts, 2001 * 1600 * 9600)
    assert Band().keeps(facts, 1.0)  # the default keeps every point


def test_the_sweep_trains_exactly_the_band_and_calibrates_each_size_on_its_smallest_kept_budget(tmp_path):
    spec = spec_from_dict({**SPEC, "out": str(tmp_path)})
    kept = _kept(spec)
    assert ("d4-L1-H2", 1e11) not in kept and ("d64-L1-H2", 1e9) not in kept  # both ends are cut
    backend = PlantedBackend()
    records = Sweep(spec, backend, tmp_path, log=lambda *_: None).run()
    fit = {(r["size"], r["budget"]) for r in records if r["role"] == "fit"}
    assert fit == kept
    calibration = {(size, b) for role, size, b in backend.trained if role == "calibration"}
    first = {s.label: min(spec.ladder_budgets(facts_of(s))) for s in (spec.sizes[0], spec.sizes[-1])}
    assert calibration == set(first.items())
    assert any(r["role"] == "holdout" for r in records)


def test_the_planted_design_has_the_points_of_the_band():
    spec = spec_from_dict(SPEC)
    design = Design.from_spec(spec, [facts_of(s) for s in spec.sizes])
    n, d, c, trunk = design.points()
    labels = {100 * s.embed_dim**2: s.label for s in spec.sizes}
    assert {(labels[int(x)], float(b)) for x, b in zip(n, c, strict=True)} == _kept(spec)
    assert len(n) == len(_kept(spec))


@pytest.mark.parametrize(
    "band, repeats, message",
    [
        ({"min_steps": 10**9}, [], "is on no budget"),
        ({"min_steps": 300}, [], "fewer than 3"),  # 1e9 keeps only d4
        ({"min_steps": 20}, [{"size": 4, "budget": 1e9}], "outside the band"),
    ],
)
def test_a_band_that_cannot_work_is_refused_before_training(tmp_path, band, repeats, message):
    spec = spec_from_dict({**SPEC, "band": band, "repeats": repeats, "out": str(tmp_path)})
    backend = PlantedBackend()
    with pytest.raises(SpecError, match=message):
        Sweep(spec, backend, tmp_path, log=lambda *_: None).run()
    assert backend.trained == []
