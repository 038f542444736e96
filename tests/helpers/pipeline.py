"""The small pipeline most end-to-end tests stand on, built once per test session: Breakout episodes, the debug
tokenizer, its token store, the debug world model, and both exported as pretrained folders.

Layout under the root::

    episodes/                  300 random-policy steps, episodes capped at 40 steps, appended every 100
    tok/checkpoints/last.ckpt  configs/tokenizer/debug.yaml (logs and reconstruction grids under tok/)
    tokens/                    the token store encoded by that tokenizer
    wm/checkpoints/last.ckpt   configs/world_model/debug.yaml
    tok-pretrained/, wm-pretrained/   the two checkpoints as pretrained folders

Tests read it and write elsewhere (their tmp_path): it is shared by all of them.
"""

from pathlib import Path

from iris_wm.cli.main import main as iris_wm
from iris_wm.train.stages import run_tokenizer_cli, run_world_model_cli, stage_args

STEPS, EPISODE_CAP, FLUSH = 300, 40, 100


def collect_and_train(root: Path, steps: int, flush: int, *env: str) -> tuple[Path, Path, Path]:
    """Collect ``steps`` random-policy steps with the ``--env.*`` arguments ``env``, fit the debug tokenizer, encode
    the episodes and fit the debug world model on them, under the layout above. Returns the tokenizer checkpoint,
    the token store and the world-model checkpoint."""
    episodes, tokens = root / "episodes", root / "tokens"
    iris_wm(["collect", "--out", str(episodes), "--steps", str(steps), "--flush_steps", str(flush), *env])
    run_tokenizer_cli(stage_args("fit", "tokenizer", "debug", episodes, root / "tok"))
    tokenizer = root / "tok" / "checkpoints" / "last.ckpt"
    run_tokenizer_cli(
        stage_args(
            "predict",
            "tokenizer",
            "debug",
            episodes,
            root / "tok",
            "--ckpt_path",
            str(tokenizer),
            "--token_writer.output",
            str(tokens),
        )
    )
    run_world_model_cli(stage_args("fit", "world_model", "debug", tokens, root / "wm"))
    return tokenizer, tokens, root / "wm" / "checkpoints" / "last.ckpt"


def build_pipeline(root: Path) -> Path:
    collect_and_train(root, STEPS, FLUSH, "--env.max_episode_steps", str(EPISODE_CAP))
    for stage in ("tok", "wm"):
        iris_wm(
            [
                "push-to-hub",
                "--checkpoint",
                str(root / stage / "checkpoints" / "last.ckpt"),
                "--out",
                str(root / f"{stage}-pretrained"),
            ]
        )
    return root
