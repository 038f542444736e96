"""`make demo` end to end, with the debug configs and a few hundred steps: every stage runs, resumes, and the
report holds its figures."""

import json

import pytest

from iris_wm.cli import demo
from iris_wm.cli import seeds as demo_seeds
from iris_wm.runtime.errors import ConfigError


def test_the_demo_runs_end_to_end_and_a_rerun_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "CONFIG", "debug")
    out = tmp_path / "demo"
    summary = demo.run(out, steps=400, seed=0, eval_episodes=2, eval_max_steps=20)
    trip = summary["round_trip"]
    assert all(trip["identical_weights"].values()) and trip["observation_ce_abs_difference"] < 1e-5, trip
    assert summary["evaluation"]["agent"]["episodes"] == 2
    assert "imagination" in summary and (out / "report.md").is_file() and (out / "pretrained" / "agent.json").is_file()
    first = json.loads((out / "summary.json").read_text())["timings_s"]
    demo.run(out, steps=400, seed=0, eval_episodes=2, eval_max_steps=20)
    again = json.loads((out / "summary.json").read_text())["timings_s"]
    assert again["tokenizer fit"] == first["tokenizer fit"], "a rerun skips the stages that are done"
    report = (out / "report.md").read_text()
    for section in ("## Tokenizer", "dynamic-pixel PSNR", "## World model", "reward: positive", "copy-last"):
        assert section in report, section
    assert summary["metrics"]["reconstruction/previous_frame/dynamic_l1"] > 10  # a dynamic pixel moved by > 10
    if summary["showcase"] is not None:
        assert (out / "showcase.png").is_file() and "showcase.png" in report

    # Another seed or config in the same folder is refused before anything is touched, with the fix.
    before = (out / "summary.json").read_text()
    with pytest.raises(ConfigError, match="seed: 0 there, 1 now.*another --out"):
        demo.run(out, steps=400, seed=1, eval_episodes=2, eval_max_steps=20)
    assert (out / "summary.json").read_text() == before

    # The agent stage over two seeds, each against random on the same games; the report gains their table.
    monkeypatch.setattr(demo_seeds, "CONFIG", "debug")
    seeds = demo_seeds.run_seeds(out, [0, 1], games=2, max_steps=20)
    assert [row["seed"] for row in seeds["seeds"]] == [0, 1] and len(seeds["seeds"][1]) == len(seeds["seeds"][0])
    assert "over 2 seeds" in (out / "report.md").read_text()
