"""`make demo` end to end, with the debug configs and a few hundred steps: every stage runs, resumes, and the
report holds its figures."""

import json

from iris_wm.cli import demo


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
