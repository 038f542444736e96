"""Command lines of the stage CLIs on their debug configs, with every output under one folder."""

from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def debug_args(verb, stage, data, out, *extra) -> list[str]:
    """``verb`` of ``configs/<stage>/debug.yaml`` reading ``data``; logs and ``ckpt/`` go under ``out``."""
    out = Path(out)
    return [
        verb,
        "--config",
        str(CONFIGS / stage / "debug.yaml"),
        "--data.root",
        str(data),
        "--trainer.default_root_dir",
        str(out),
        "--trainer.logger.init_args.save_dir",
        str(out),
        "--trainer.callbacks.init_args.dirpath",
        str(out / "ckpt"),
        *extra,
    ]
