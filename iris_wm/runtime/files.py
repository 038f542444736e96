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
import zipfile
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from pathlib import Path

from iris_wm.runtime.errors import IrisError


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


def archive_problem(path: str | Path) -> str | None:
    """Why the checkpoint file at ``path`` (a zip archive, as ``torch.save`` writes one) is not whole (an entry
    failing its CRC, a cut-off file), or None. Nothing is unpickled to find out."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
        return damaged and f"its entry {damaged} fails its CRC check"
    except (zipfile.BadZipFile, OSError) as error:
        return f"not a complete archive: {error}"


class BusyError(IrisError, RuntimeError):
    """Another process is writing to the same store or output."""


class OutputExists(IrisError, FileExistsError):
    """An output that would be overwritten."""


class FolderLock:
    """An exclusive lock on a folder for as long as one process writes to it (``folder/.writer.lock``, flock):
    a second writer is refused at once, naming the first one's pid. The operating system releases it when the
    process ends, however it ends, so a killed writer never leaves a stale lock."""

    FILE = ".writer.lock"

    def __init__(self, folder: str | Path, what: str = "folder"):
        self.folder, self.what, self.handle = Path(folder), what, None

    def acquire(self) -> FolderLock:
        import fcntl

        path = self.folder / self.FILE
        try:
            handle = open(path, "a+")
        except OSError as err:
            raise IrisError(
                f"Cannot write to the {self.what} {self.folder} ({err.strerror or err}): make the folder writable, "
                "or write to a folder you own."
            ) from err
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise BusyError(
                f"Another process (pid {holder}) is writing to the {self.what} {self.folder}; nothing was written. "
                "Wait for it to finish (then rerun this command to continue from what it wrote), or write elsewhere."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self.handle = handle
        return self

    def release(self) -> None:
        if self.handle is not None:
            self.handle.close()  # closing the descriptor releases the flock
            self.handle = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def require_new_output(path: str | Path, what: str, overwrite: bool = False) -> Path:
    """Refuse, before any work, an output ``path`` that is a file, or a non-empty folder unless ``overwrite``."""
    path = Path(path)
    if path.is_file():
        raise OutputExists(f"The {what} {path} is a file; give a folder path (a new one).")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise OutputExists(f"{path} already exists and is not empty; choose a new folder for the {what}.")
    return path


@contextmanager
def complete_or_absent(path: str | Path, what: str, overwrite: bool = False):
    """Write a folder so that it is complete or absent: the caller writes into ``<path>.partial`` (yielded, locked
    against a second writer), which is renamed to ``path`` only when the block ends without an error. An error, a
    kill or a full disk leaves no ``path``; the partial folder of a killed writer is removed by the next one.
    With ``overwrite`` an existing ``path`` is replaced, at the very end."""
    import shutil

    path = require_new_output(path, what, overwrite)
    partial = path.with_name(path.name + ".partial")
    if partial.exists():  # a killed writer's leftovers, unless that writer is still at work (then refused)
        FolderLock(partial, what).acquire().release()
        shutil.rmtree(partial)
    try:
        partial.mkdir(parents=True)
    except OSError as err:
        raise OutputExists(
            f"Cannot create the {what} {path} ({err.strerror or err}): choose a folder you can write to."
        ) from err
    lock = FolderLock(partial, what).acquire()
    try:
        yield partial
        (partial / FolderLock.FILE).unlink()
        if path.exists():
            old = path.with_name(path.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(partial, path)
            shutil.rmtree(old)
        else:
            os.replace(partial, path)
        fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        lock.release()
