"""Durable files: each write lands whole or not at all, and configs become plain JSON values.

``write_atomic`` is the one way this project replaces a file that must survive a crash (store shards and
manifests, the online loop's checkpoint, the scaling sweep's trunk checkpoints): the bytes go to a temporary
file in the same folder, which is synced and renamed over the target, and then the folder itself is synced so
that the rename is on disk too. A crash at any point leaves the old file or the new one, never a torn one.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from dataclasses import asdict, is_dataclass
from pathlib import Path


def fsync_dir(folder: str | Path) -> None:
    """Sync a folder's entries (a rename inside it is durable only after this)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | Path, payload: bytes) -> Path:
    """Replace ``path`` with ``payload`` atomically and durably. On failure (disk full, read-only folder) the
    temporary file is removed, ``path`` is as it was, and the ``OSError`` is raised for the caller to explain."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def write_json_atomic(path: str | Path, data) -> Path:
    """:func:`write_atomic` of ``data`` as indented JSON with sorted keys."""
    return write_atomic(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())


def torch_bytes(obj) -> bytes:
    """``torch.save`` into memory. Serialising first keeps a failed write an ``OSError`` with its reason (torch's
    zip writer reports one as a ``RuntimeError``)."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def plain_json(value):
    """Dataclasses, tuples and paths as JSON values (dicts, lists, numbers, strings), so that a saved config
    compares equal to a freshly parsed one and can go into config.json, a card's YAML or a checkpoint record."""
    if is_dataclass(value) and not isinstance(value, type):
        return plain_json(asdict(value))
    if isinstance(value, dict):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
