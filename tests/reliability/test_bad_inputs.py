"""Every command given bad input, and every kind of file the project reads, damaged: each case must exit with
status 2, name the file or flag at fault in its message, print no traceback (without --debug), and leave every
byte of the data it was given as it was.

The cases are grouped by class (``store``, ``checkpoint``, ``pretrained``, ``config``, ``scaling``, ``result``,
``run``, ``argument``, ``output``, ``hub``); each builds its inputs from copies of the shared pipeline.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from helpers.cli import refused, snapshot
from iris_wm.cli.main import main as iris_wm
from iris_wm.train.stages import stage_args

REPO = Path(__file__).resolve().parents[2]


class World:
    """Copies of the pipeline's pieces under ``root/data`` (made when first asked for), and files to damage."""

    def __init__(self, pipeline: Path, root: Path):
        self.pipeline, self.root, self.data = pipeline, root, root / "data"
        self.data.mkdir()

    def _copy(self, name: str, source: Path) -> Path:
        target = self.data / name
        if not target.exists():
            (shutil.copytree if source.is_dir() else shutil.copy2)(source, target)
        return target

    @property
    def episodes(self) -> Path:
        return self._copy("episodes", self.pipeline / "episodes")

    @property
    def tokens(self) -> Path:
        return self._copy("tokens", self.pipeline / "tokens")

    @property
    def tok_ckpt(self) -> Path:
        return self._copy("tok.ckpt", self.pipeline / "tok" / "checkpoints" / "last.ckpt")

    @property
    def wm_ckpt(self) -> Path:
        return self._copy("wm.ckpt", self.pipeline / "wm" / "checkpoints" / "last.ckpt")

    @property
    def tok_folder(self) -> Path:
        return self._copy("tok-pretrained", self.pipeline / "tok-pretrained")

    @property
    def wm_folder(self) -> Path:
        return self._copy("wm-pretrained", self.pipeline / "wm-pretrained")

    def file(self, name: str, content: str | bytes) -> Path:
        path = self.data / name
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
        return path

    def edit_json(self, path: Path, change) -> Path:
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))
        return path

    def out(self, name: str) -> Path:
        return self.root / "out" / name

    def imagine(self, **given) -> list[str]:
        sources = {
            "world_model": self.wm_folder,
            "tokenizer": self.tok_folder,
            "episodes": self.episodes,
            "tokens": self.tokens,
            "out": self.out("imagine"),
        }
        sources.update(given)
        return ["imagine", *[x for k, v in sources.items() for x in (f"--{k}", str(v))], "--horizon", "2"]

    def stage(self, command: str, verb: str, data: Path, *extra) -> list[str]:
        stage = command.replace("-", "_")
        return [command, *map(str, stage_args(verb, stage, "debug", data, self.out(stage), *extra))]

    def spec(self, **changes) -> Path:
        spec = yaml.safe_load((REPO / "configs" / "scaling" / "cpu_fast.yaml").read_text())
        spec.update(changes)
        return self.file("spec.yaml", yaml.safe_dump(spec))


def _result(w: World, **changes) -> Path:
    result = {"game": "ALE/Breakout-v5", "policy": "random", "episodes": 2, "returns": [1.0, 3.0], "lengths": [9, 9]}
    result.update(mean=2.0, stderr=1.0, human_normalized=None)
    result.update(changes)
    return w.file("result.json", json.dumps(result))


def _truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])
    return path


# Each case: its class, its id, and a function of the World giving (argv, patterns the message must match).
CASES = {
    # ---------------------------------------------------------------- stores: manifests, shards, kinds
    ("store", "manifest-truncated"): lambda w: (
        ["collect", "--out", str(w.episodes), "--steps", "400"],
        [str(_truncate(w.episodes / "manifest.json"))],
    ),
    ("store", "manifest-not-json"): lambda w: (
        w.stage("tokenizer", "fit", w.episodes),
        [str(w.file("episodes/manifest.json", "shards: [oops"))],
    ),
    ("store", "manifest-key-missing"): lambda w: (
        ["collect", "--out", str(w.episodes), "--steps", "400"],
        [str(w.edit_json(w.episodes / "manifest.json", lambda m: m.pop("shards"))), "shards"],
    ),
    ("store", "manifest-key-unknown"): lambda w: (
        w.stage("tokenizer", "validate", w.episodes),
        [str(w.edit_json(w.episodes / "manifest.json", lambda m: m.update(colour=1))), "colour"],
    ),
    ("store", "manifest-wrong-type"): lambda w: (
        w.imagine(),
        [str(w.edit_json(w.episodes / "manifest.json", lambda m: m.update(num_steps="many"))), "num_steps"],
    ),
    ("store", "shard-truncated"): lambda w: (
        w.stage("tokenizer", "fit", w.episodes),
        [_truncate(sorted((w.episodes / "shards").iterdir())[0]).name],
    ),
    ("store", "token-store-as-episodes"): lambda w: (
        ["collect", "--out", str(w.tokens), "--steps", "400"],
        [str(w.tokens), "token"],
    ),
    ("store", "episode-store-as-tokens"): lambda w: (
        w.stage("world-model", "fit", w.episodes),
        [str(w.episodes), "holds frames"],
    ),
    ("store", "stores-swapped"): lambda w: (w.imagine(tokens=w.episodes), [str(w.episodes)]),
    ("store", "not-a-store"): lambda w: (
        w.stage("tokenizer", "fit", w.file("empty/notes.txt", "hi").parent),
        [str(w.data / "empty")],
    ),
    ("store", "missing"): lambda w: (w.imagine(episodes=w.data / "nowhere"), [str(w.data / "nowhere")]),
    # ---------------------------------------------------------------- stage checkpoints
    ("checkpoint", "truncated"): lambda w: (w.imagine(world_model=_truncate(w.wm_ckpt)), [str(w.wm_ckpt)]),
    ("checkpoint", "other-stage"): lambda w: (w.imagine(world_model=w.tok_ckpt), [str(w.tok_ckpt), "no world model"]),
    ("checkpoint", "not-a-checkpoint"): lambda w: (
        ["evaluate", "--agent", str(w.file("agent.ckpt", "not a checkpoint")), "--out", str(w.out("r.json"))],
        [str(w.data / "agent.ckpt")],
    ),
    ("checkpoint", "ckpt-path-truncated"): lambda w: (
        w.stage("world-model", "validate", w.tokens, "--ckpt_path", str(_truncate(w.wm_ckpt))),
        [str(w.wm_ckpt)],
    ),
    ("checkpoint", "ckpt-path-other-stage"): lambda w: (
        w.stage("world-model", "validate", w.tokens, "--ckpt_path", str(w.tok_ckpt)),
        [str(w.tok_ckpt), "tokenizer"],
    ),
    ("checkpoint", "from-pretrained-other-stage"): lambda w: (
        w.stage("tokenizer", "validate", w.episodes, "--model.from_pretrained", str(w.wm_folder)),
        [str(w.wm_folder), "world"],
    ),
    ("checkpoint", "push-truncated"): lambda w: (
        ["push-to-hub", "--checkpoint", str(_truncate(w.tok_ckpt)), "--out", str(w.out("export"))],
        [str(w.tok_ckpt)],
    ),
    ("checkpoint", "missing"): lambda w: (
        ["push-to-hub", "--checkpoint", str(w.data / "gone.ckpt"), "--out", str(w.out("export"))],
        [str(w.data / "gone.ckpt")],
    ),
    # ---------------------------------------------------------------- pretrained folders
    ("pretrained", "config-not-json"): lambda w: (
        w.imagine(world_model=w.wm_folder),
        [str(w.file("wm-pretrained/config.json", "{oops"))],
    ),
    ("pretrained", "config-field-missing"): lambda w: (
        w.imagine(),
        [str(w.edit_json(w.wm_folder / "config.json", lambda c: c["config"].pop("context_steps"))), "context_steps"],
    ),
    ("pretrained", "config-field-unknown"): lambda w: (
        w.imagine(),
        [str(w.edit_json(w.wm_folder / "config.json", lambda c: c["config"].update(depth=3))), "depth"],
    ),
    ("pretrained", "config-wrong-type"): lambda w: (
        w.imagine(),
        [str(w.edit_json(w.tok_folder / "config.json", lambda c: c.update(parameters="many"))), "parameters"],
    ),
    ("pretrained", "other-kind"): lambda w: (w.imagine(world_model=w.tok_folder), [str(w.tok_folder), "tokenizer"]),
    ("pretrained", "weights-truncated"): lambda w: (
        w.imagine(),
        [str(_truncate(w.wm_folder / "model.safetensors"))],
    ),
    ("pretrained", "weights-missing"): lambda w: (
        w.imagine(),
        [str(w.wm_folder), "model.safetensors"] if (w.wm_folder / "model.safetensors").unlink() is None else [],
    ),
    ("pretrained", "not-a-folder-or-id"): lambda w: (
        w.imagine(world_model=w.data / "no-such-model"),
        [str(w.data / "no-such-model")],
    ),
    # ---------------------------------------------------------------- YAML configs given with --config
    ("config", "stage-config-not-yaml"): lambda w: (
        ["tokenizer", "fit", "--config", str(w.file("bad.yaml", "model: [unclosed")), "--data.root", str(w.episodes)],
        ["bad.yaml"],
    ),
    ("config", "stage-config-unknown-key"): lambda w: (
        w.stage("tokenizer", "fit", w.episodes, "--config", str(w.file("extra.yaml", "model:\n  colour: 3\n"))),
        ["colour"],
    ),
    ("config", "run-config-not-yaml"): lambda w: (
        ["run", "--config", str(w.file("run.yaml", "run: {out: [")), "--run.out", str(w.out("run"))],
        ["run.yaml"],
    ),
    ("config", "collect-config-wrong-type"): lambda w: (
        ["collect", "--config", str(w.file("c.yaml", "steps: many\n")), "--out", str(w.out("e"))],
        ["steps"],
    ),
    # ---------------------------------------------------------------- the online loop's own files
    ("run", "metrics-line-damaged"): lambda w: (
        ["run", "--config", str(REPO / "configs/run/debug.yaml"), "--run.out", str(w.data / "run")],
        [str(w.file("run/metrics.jsonl", '{"epoch": 1}\n{oops\n{"epoch": 2}\n')), "line 2"],
    ),
    ("run", "checkpoint-damaged"): lambda w: (
        ["run", "--config", str(REPO / "configs/run/debug.yaml"), "--run.out", str(w.data / "run")],
        [str(w.file("run/checkpoints/last.ckpt", b"PK not really")), "Restore"],
    ),
    # ---------------------------------------------------------------- scaling specs and records
    ("scaling", "spec-not-yaml"): lambda w: (
        ["scaling", "fit", "--spec", str(w.file("spec.yaml", "sizes: [oops")), "--out", str(w.out("s"))],
        [str(w.data / "spec.yaml")],
    ),
    ("scaling", "spec-unknown-key"): lambda w: (
        ["scaling", "fit", "--spec", str(w.spec(colour=3)), "--out", str(w.out("s"))],
        [str(w.data / "spec.yaml"), "colour"],
    ),
    ("scaling", "spec-missing"): lambda w: (
        ["scaling", "fit", "--spec", str(w.data / "none.yaml")],
        [str(w.data / "none.yaml")],
    ),
    ("scaling", "records-damaged-line"): lambda w: (
        ["scaling", "fit", "--spec", str(w.spec()), "--out", str(w.data / "sweep")],
        [str(w.file("sweep/records.jsonl", '{"key": "a", "role": "fit", "val_obs_ce": 1}\n{oops\n{}\n')), "line 2"],
    ),
    ("scaling", "records-nan-loss"): lambda w: (
        ["scaling", "fit", "--spec", str(w.spec()), "--out", str(w.data / "sweep")],
        [str(w.file("sweep/records.jsonl", '{"key": "a", "role": "fit", "val_obs_ce": NaN}\n')), "val_obs_ce"],
    ),
    # ---------------------------------------------------------------- evaluation results and figures
    ("result", "not-json"): lambda w: (["aggregate", str(w.file("r.json", "{oops"))], [str(w.data / "r.json")]),
    ("result", "key-missing"): lambda w: (
        ["aggregate", str(w.edit_json(_result(w), lambda r: r.pop("returns")))],
        [str(w.data / "result.json"), "returns"],
    ),
    ("result", "wrong-type"): lambda w: (
        ["aggregate", str(_result(w, mean="high"))],
        [str(w.data / "result.json"), "mean"],
    ),
    ("result", "edited-counts"): lambda w: (
        ["aggregate", str(_result(w, episodes=5))],
        [str(w.data / "result.json"), "5 episodes"],
    ),
    ("result", "missing"): lambda w: (["aggregate", str(w.data / "none.json")], [str(w.data / "none.json")]),
    ("result", "card-results-of-another-kind"): lambda w: (
        ["push-to-hub", "--checkpoint", str(w.tok_ckpt), "--out", str(w.out("x")), "--results", str(w.tokens)],
        [str(w.tokens)],
    ),
    ("result", "card-metrics-not-numbers"): lambda w: (
        ["push-to-hub", "--checkpoint", str(w.tok_ckpt), "--out", str(w.out("x")), "--metrics"]
        + [str(w.file("m.json", '{"score": "good"}'))],
        [str(w.data / "m.json"), "score"],
    ),
    # ---------------------------------------------------------------- arguments out of range
    ("argument", "collect-steps-zero"): lambda w: (["collect", "--out", str(w.out("e")), "--steps", "0"], ["steps"]),
    ("argument", "collect-steps-negative"): lambda w: (
        ["collect", "--out", str(w.out("e")), "--steps", "-5"],
        ["steps"],
    ),
    ("argument", "collect-workers-zero"): lambda w: (
        ["collect", "--out", str(w.out("e")), "--steps", "10", "--workers", "0"],
        ["workers"],
    ),
    ("argument", "collect-flush-everything"): lambda w: (
        ["collect", "--out", str(w.out("e")), "--steps", "10", "--flush_steps", "10000000"],
        ["flush_steps", "memory"],
    ),
    ("argument", "collect-sticky-probability"): lambda w: (
        ["collect", "--out", str(w.out("e")), "--steps", "10", "--env.sticky_action_prob", "2"],
        ["sticky_action_prob"],
    ),
    ("argument", "evaluate-episodes-zero"): lambda w: (
        ["evaluate", "--out", str(w.out("r.json")), "--episodes", "0"],
        ["episodes"],
    ),
    ("argument", "evaluate-envs-zero"): lambda w: (
        ["evaluate", "--out", str(w.out("r.json")), "--num_envs", "0"],
        ["num_envs"],
    ),
    ("argument", "evaluate-frame-skip-zero"): lambda w: (
        ["evaluate", "--out", str(w.out("r.json")), "--env.frame_skip", "0"],
        ["frame_skip"],
    ),
    ("argument", "imagine-horizon-zero"): lambda w: ([*w.imagine(), "--horizon", "0"], ["horizon"]),
    ("argument", "imagine-burn-in-negative"): lambda w: ([*w.imagine(), "--burn_in", "-1"], ["burn_in"]),
    ("argument", "imagine-temperature-negative"): lambda w: ([*w.imagine(), "--temperature", "-1"], ["temperature"]),
    ("argument", "run-epochs-zero"): lambda w: (
        ["run", "--config", str(REPO / "configs/run/debug.yaml"), "--run.out", str(w.out("run")), "--run.epochs", "0"],
        ["epochs"],
    ),
    ("argument", "run-batch-zero"): lambda w: (
        ["run", "--config", str(REPO / "configs/run/debug.yaml"), "--run.out", str(w.out("run"))]
        + ["--run.world_model_training.batch_size", "0"],
        ["batch_size"],
    ),
    ("argument", "run-temperature-zero"): lambda w: (
        ["run", "--config", str(REPO / "configs/run/debug.yaml"), "--run.out", str(w.out("run"))]
        + ["--run.collection.temperature", "0"],
        ["temperature"],
    ),
    ("argument", "stage-batch-zero"): lambda w: (
        w.stage("tokenizer", "fit", w.episodes, "--data.batch_size", "0"),
        ["batch_size"],
    ),
    ("argument", "stage-window-zero"): lambda w: (
        w.stage("world-model", "fit", w.tokens, "--data.sequence_length", "0"),
        ["sequence_length"],
    ),
    ("argument", "stage-context-zero"): lambda w: (
        w.stage("world-model", "fit", w.tokens, "--model.config.context_steps", "0"),
        ["re:context_steps|sequence_length"],  # the data's window length is linked to it
    ),
    ("argument", "agent-horizon-zero"): lambda w: (
        w.stage("agent", "fit", w.tokens, "--model.world_model", str(w.wm_ckpt), "--model.tokenizer")
        + [str(w.tok_ckpt), "--model.objective.horizon", "0"],
        ["horizon"],
    ),
    ("argument", "aggregate-no-files"): lambda w: (["aggregate"], ["results"]),
    # ---------------------------------------------------------------- outputs that cannot be written
    ("output", "collect-out-is-a-file"): lambda w: (
        ["collect", "--out", str(w.file("e.txt", "mine")), "--steps", "10"],
        [str(w.data / "e.txt")],
    ),
    ("output", "evaluate-out-is-a-folder"): lambda w: (
        ["evaluate", "--out", str(w.episodes), "--episodes", "1"],
        [str(w.episodes), "folder"],
    ),
    ("output", "imagine-out-is-a-file"): lambda w: (
        w.imagine(out=w.file("imagine.txt", "mine")),
        [str(w.data / "imagine.txt")],
    ),
    ("output", "imagine-out-under-a-file"): lambda w: (
        w.imagine(out=w.file("f.txt", "mine") / "imagine"),
        [str(w.data / "f.txt")],
    ),
    ("output", "predict-into-an-existing-store"): lambda w: (
        w.stage("tokenizer", "predict", w.episodes, "--ckpt_path", str(w.tok_ckpt), "--token_writer.output")
        + [str(w.tokens)],
        [str(w.tokens), "exists"],
    ),
    ("output", "export-over-a-file"): lambda w: (
        ["push-to-hub", "--checkpoint", str(w.tok_ckpt), "--out", str(w.file("export", "mine"))],
        [str(w.data / "export")],
    ),
    ("output", "run-out-is-a-file"): lambda w: (
        ["run", "--config", str(REPO / "configs/run/debug.yaml"), "--run.out", str(w.file("run.txt", "mine"))],
        [str(w.data / "run.txt")],
    ),
    # ---------------------------------------------------------------- the Hub
    ("hub", "bad-repo-id"): lambda w: (
        ["push-to-hub", "--checkpoint", str(w.tok_ckpt), "--out", str(w.out("x")), "--repo_id", "not an id//"],
        ["not an id//"],
    ),
    ("hub", "no-token"): lambda w: (
        ["push-to-hub", "--checkpoint", str(w.tok_ckpt), "--out", str(w.out("x")), "--repo_id", "me/model"],
        ["token", "HF_TOKEN"],
    ),
    ("hub", "store-without-token"): lambda w: (
        ["push-to-hub", "--store", str(w.episodes), "--repo_id", "me/data"],
        ["token"],
    ),
    ("hub", "unknown-hub-id"): lambda w: (w.imagine(world_model="someone/no-such-model"), ["someone/no-such-model"]),
}


@pytest.fixture
def world(pipeline, tmp_path, monkeypatch):
    from huggingface_hub import constants

    # No token and no network: a Hub id is looked up offline, a push finds no token.
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf" / "stored_tokens"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    return World(pipeline, tmp_path)


@pytest.mark.parametrize("case", list(CASES), ids=lambda c: f"{c[0]}:{c[1]}")
def test_bad_input_is_one_clear_line_and_changes_nothing(case, world, capsys):
    argv, patterns = CASES[case](world)
    before = snapshot(world.data)
    message = refused(capsys, argv, *map(_literal, patterns))
    assert snapshot(world.data) == before, "the refused command changed the data it was given"
    lines = [line for line in message.splitlines() if line.strip()]
    assert len(lines) <= 3 or lines[0].startswith("usage:"), message
    if case[0] in ("hub", "checkpoint") and (world.root / "out").exists():
        assert not any((world.root / "out").rglob("*.safetensors")), "nothing is exported before it can succeed"


def _literal(pattern: str) -> str:
    """Patterns are literal text (paths hold regex characters), except those marked ``re:``."""
    import re

    return pattern[3:] if pattern.startswith("re:") else re.escape(pattern)


def test_debug_shows_the_traceback(world, capsys, monkeypatch):
    argv = ["collect", "--out", str(world.out("e")), "--steps", "0"]
    with pytest.raises(ValueError, match="steps must be at least 1"):
        iris_wm([*argv, "--debug"])
    monkeypatch.setenv("IRIS_WM_DEBUG", "1")
    with pytest.raises(ValueError, match="steps must be at least 1"):
        iris_wm(argv)


def test_ctrl_c_says_how_to_continue(world, capsys, monkeypatch):
    import iris_wm.data.collect as collect

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(collect, "_collect", interrupted)
    refused(capsys, ["collect", "--out", str(world.out("e")), "--steps", "10"], "interrupted; rerun the same", code=130)


def test_a_push_that_cannot_reach_the_hub_says_so_in_one_line_and_keeps_the_export(world, capsys, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    out = world.out("export")
    argv = ["push-to-hub", "--checkpoint", str(world.tok_ckpt), "--out", str(out), "--repo_id", "me/model"]
    refused(capsys, argv, "me/model", "failed", "network")
    assert (out / "model.safetensors").is_file(), "the export is kept for the next try"


def test_ctrl_c_in_a_stage_says_how_to_resume(world, capsys, monkeypatch):
    from iris_wm.train.callbacks import FaultInjection

    def interrupted(self, trainer, *args):
        if trainer.global_step == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(FaultInjection, "on_train_batch_end", interrupted)
    with pytest.raises(SystemExit) as exit_info:  # Lightning ends the process with status 1 on Ctrl-C
        iris_wm(world.stage("tokenizer", "fit", world.episodes))
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and "interrupted" in err and "--ckpt_path last" in err, err
