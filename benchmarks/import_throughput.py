"""Import throughput of a LeRobot dataset with video (`make bench-import`): frames a second through
`iris-wm import lerobot`'s code path (plan: metadata, rows and the videos' packet times; write: decode, resize,
append), for AV1 (LeRobot's default codec) and H.264 videos at 64x64 and at 256x256 resized to 64x64.

The datasets are written here by the tests' LeRobot writer (tests/helpers/lerobot.py), v3.0, four episodes a file.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        name = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        name = platform.processor()
    return f"{name}, {__import__('os').cpu_count()} cores"


def run(episodes: int, length: int) -> list[dict]:
    from iris_wm.data.importers.lerobot import LeRobotOptions, plan_lerobot
    from iris_wm.data.importers.writer import write_import

    # The tests' LeRobot writer; added to the path after iris_wm is imported (tests/iris_wm would shadow it).
    sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers.lerobot import smooth_episodes, write_lerobot

    rows = []
    for codec in ("libsvtav1", "libx264"):
        for size in (64, 256):
            root = Path(tempfile.mkdtemp())
            try:
                data = smooth_episodes([length] * episodes, size=size)
                write_lerobot(root / "src", data, "v3.0", "video", codec, fps=20, per_file=4)
                start = time.perf_counter()
                plan = plan_lerobot(root / "src", LeRobotOptions(size=64))
                planned = time.perf_counter()
                write_import(root / "store", plan, progress=False)
                done = time.perf_counter()
                frames = episodes * length
                rows.append(
                    dict(
                        codec=codec,
                        source_size=size,
                        frames=frames,
                        plan_s=round(planned - start, 2),
                        write_s=round(done - planned, 2),
                        frames_per_s=round(frames / (done - start), 1),
                    )
                )
                print(rows[-1], flush=True)
            finally:
                shutil.rmtree(root, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--length", type=int, default=250)
    parser.add_argument("--json", type=Path, default=Path("docs/import_throughput.json"))
    args = parser.parse_args()
    result = {
        "machine": machine(),
        "episodes": args.episodes,
        "length": args.length,
        "runs": run(args.episodes, args.length),
    }
    args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
