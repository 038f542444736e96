"""``iris-wm safety-check``: the chance that an agent's policy reaches an unsafe outcome within a horizon, estimated
in its world model's imagination from real start contexts (iris_wm.evaluate.safety).

    iris-wm safety-check --agent runs/demo/agent/checkpoints/last.ckpt --tokens runs/demo/tokens \\
        --out runs/demo/safety --check.horizon 30 --check.rollouts 16 --check.unsafe end
"""

from __future__ import annotations


def main(argv: list[str]) -> None:
    from jsonargparse import ArgumentParser

    from iris_wm.evaluate.safety import safety_check

    parser = ArgumentParser(prog="iris-wm safety-check", description=safety_check.__doc__.split("\n")[0])
    parser.add_argument("--config", action="config", help="YAML file with any of the options below.")
    parser.add_function_arguments(safety_check)
    cfg = parser.parse_args(argv)
    cfg.pop("config", None)
    kwargs = parser.instantiate(cfg).as_dict()
    report = safety_check(**kwargs)
    overall, known = report["overall"], report["overall_known"]
    low, high = overall["bootstrap_95"]
    print(
        f"unsafe ({report['config']['unsafe']}) within {report['config']['horizon']} steps: {overall['rate']:.3f} "
        f"[{low:.3f}, {high:.3f}] over {overall['starts']} starts; {report['unknown_starts']} unknown"
        + (f" (known starts: {known['rate']:.3f})" if known["rate"] is not None and report["unknown_starts"] else "")
        + f"; report in {kwargs['out']}/report.md"
    )
