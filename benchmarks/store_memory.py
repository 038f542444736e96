"""Peak memory of sampling windows from a large episode store (`make bench-memory`).

Builds a store of ``--steps`` 64x64 RGB frames (1M by default: about 12 GB on disk), then, in a fresh
process, opens it and draws random batches of 64 x 20-step windows. Reported: anonymous memory (heap:
what the process really holds) and file-backed resident memory (pages of the memory-mapped shards that the
kernel happens to keep; reclaimable page cache, not held by the store), after opening and at the peak over
the batches. The store must never hold the dataset in RAM: the heap stays at the index (about 20 bytes a
step) plus one batch.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def build(root: Path, steps: int, episode_length: int = 1_000, per_shard: int = 10) -> float:
    from iris_wm.data.store import Episode, EpisodeStore

    rng = np.random.default_rng(0)
    # A pool of random frames, reused with a per-episode roll: fast to write, incompressible enough.
    pool = rng.integers(0, 256, (episode_length, 3, 64, 64), dtype=np.uint8)
    store = EpisodeStore.create(root, EpisodeStore.frame_spec(64), 4, {"env": "benchmark"})
    start, written, marker = time.perf_counter(), 0, 0
    while written < steps:
        batch = []
        for _ in range(per_shard):
            n = min(episode_length, steps - written)
            if n <= 0:
                break
            frames = np.roll(pool[:n], marker, axis=0)
            ends = np.zeros(n, bool)
            ends[-1] = True
            batch.append(Episode(frames, rng.integers(0, 4, n), np.zeros(n, np.float32), ends, np.zeros(n, bool)))
            written += n
            marker += 1
        store.append(batch)
    return time.perf_counter() - start


def _status() -> dict[str, int]:
    """RssAnon, RssFile and VmHWM of this process, in MiB (Linux /proc)."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile", "VmHWM"):
            fields[key] = int(value.split()[0]) // 1024
    return fields


def measure(root: str, batches: int, batch: int, horizon: int) -> dict:
    """Runs in a fresh process: open the store and sample; memory before and after."""
    import gc

    from iris_wm.data.store import EpisodeStore
    from iris_wm.data.windows import WindowDataset

    # Open once and drop it, so the baseline holds the libraries that opening imports, not the store.
    EpisodeStore.open(root, verify="size")
    gc.collect()
    baseline = _status()
    start = time.perf_counter()
    store = EpisodeStore.open(root, verify="size")
    opened_s = time.perf_counter() - start
    after_open = _status()
    dataset = WindowDataset(store, np.arange(store.num_episodes), horizon)
    rng = np.random.default_rng(1)
    peak_anon = peak_file = 0
    start = time.perf_counter()
    for _ in range(batches):
        out = dataset.__getitems__(rng.integers(0, len(dataset), batch))
        status = _status()
        peak_anon, peak_file = max(peak_anon, status["RssAnon"]), max(peak_file, status["RssFile"])
    seconds = time.perf_counter() - start
    return {
        "store_steps": store.num_steps,
        "store_gib": sum(s["nbytes"] for s in store.manifest["shards"]) / 2**30,
        "batches": batches,
        "batch": batch,
        "T": horizon,
        "batch_mib": out.observations.numel() / 2**20,
        "open_s": opened_s,
        "ms_per_batch": seconds / batches * 1e3,
        "rss_anon_mib": {
            "before_open": baseline["RssAnon"],
            "after_open": after_open["RssAnon"],
            "peak_sampling": peak_anon,
        },
        "rss_file_mib_peak": peak_file,
        "vm_hwm_mib": _status()["VmHWM"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1_000_000, help="Frames in the benchmark store.")
    parser.add_argument("--batches", type=int, default=300, help="Random batches to draw.")
    parser.add_argument("--folder", type=Path, default=None, help="Where to build the store (default: a temp dir).")
    parser.add_argument("--json", type=Path, default=Path("docs/store_memory.json"))
    parser.add_argument("--measure", type=str, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.batches, 64, 20)))
        return
    folder = Path(tempfile.mkdtemp(dir=args.folder))
    try:
        build_s = build(folder / "store", args.steps)
        done = subprocess.run(
            [sys.executable, __file__, "--measure", str(folder / "store"), "--batches", str(args.batches)],
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(done.stdout.strip().splitlines()[-1]) | {"build_s": build_s}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    anon = result["rss_anon_mib"]
    print(
        f"{result['store_steps']:,} frames ({result['store_gib']:.1f} GiB on disk): heap {anon['before_open']} MiB "
        f"before opening, {anon['after_open']} MiB after, {anon['peak_sampling']} MiB at the peak of "
        f"{result['batches']} batches of 64 x 20 frames ({result['ms_per_batch']:.1f} ms each); file-backed "
        f"pages at most {result['rss_file_mib_peak']} MiB; written to {args.json}"
    )


if __name__ == "__main__":
    main()
