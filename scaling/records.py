"""Run records: one JSON object per finished point, appended to a JSONL file; and ``runs.csv``.

A record is written once, at the end of the point it describes, and never scraped from logs. Each is keyed
by a hash of the settings that determine it, so a rerun of the sweep skips what is already there.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import warnings
from pathlib import Path

RECORDS = "records.jsonl"

CSV_COLUMNS = (
    "role",
    "series",
    "size",
    "seed",
    "budget",
    "params",
    "params_non_embedding",
    "flops_per_token",
    "tokens",
    "flops",
    "flops_6nd",
    "steps",
    "learning_rate",
    "epochs",
    "val_obs_ce",
    "val_bits_per_frame",
    "val_reward_loss",
    "val_termination_loss",
    "train_loss",
    "wall_s",
    "trunk",
    "key",
)


def run_key(settings: dict) -> str:
    """A stable key of the settings that determine a point (JSON with sorted keys, hashed)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=10).hexdigest()


def append_record(path: str | Path, record: dict) -> None:
    """Append one record as a line, flushed and synced, so a crash loses at most the point in progress."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=True) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_records(path: str | Path) -> list[dict]:
    """All records of a JSONL file (none if it does not exist). A torn last line, left by a crash in the middle
    of a write, is skipped with a warning; a damaged line elsewhere is an error naming the line."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                warnings.warn(
                    f"{path}: skipping a torn last line ({number}); its point will be run again.", stacklevel=2
                )
                continue
            raise ValueError(
                f"{path}, line {number}: not valid JSON. Remove or repair that line; every other record is intact."
            ) from None
        problem = record_problem(record)
        if problem:
            raise ValueError(
                f"{path}, line {number}: {problem}. Remove that line (the sweep runs its point again); every other "
                "record is intact."
            )
        records.append(record)
    return records


REQUIRED = {"key": str, "role": str, "val_obs_ce": float}
"""The fields every record must have, and their types; the losses must also be finite and non-negative."""
FITTED = {"series": str, "size": str, "budget": float, "params": int, "flops": float, "tokens": int}
"""The further fields a fit reads."""


def record_problem(record, fitted: bool = False) -> str | None:
    """Why ``record`` cannot be used (not an object, a field missing or of the wrong type, a loss that is not a
    finite non-negative number; with ``fitted``, also a field the fit reads), or None."""
    if not isinstance(record, dict):
        return f"a record must be a JSON object, not {type(record).__name__}"
    for name, kind in {**REQUIRED, **(FITTED if fitted else {})}.items():
        value = record.get(name)
        numeric = kind in (int, float) and isinstance(value, (int, float)) and not isinstance(value, bool)
        if name not in record or not (numeric or isinstance(value, kind)):
            return f"the field {name!r} is {'missing' if name not in record else f'not a {kind.__name__}'}"
    for name in ("val_obs_ce", "val_bits_per_frame", "val_reward_loss", "val_termination_loss", "train_loss"):
        value = record.get(name)
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            return f"{name} is {value}, not a finite non-negative loss (the point diverged or the line was edited)"
    return None


def write_csv(records: list[dict], path: str | Path) -> None:
    """One row per evaluated point, in the order of ``CSV_COLUMNS``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for r in records:
            writer.writerow({k: r.get(k, "") for k in CSV_COLUMNS})
