"""Where an artefact came from: library versions and the git commit of the code that made it."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

TRACKED_LIBRARIES = (
    "iris-wm",
    "torch",
    "lightning",
    "numpy",
    "pyarrow",
    "datasets",
    "vector-quantize-pytorch",
    "ale-py",
    "gymnasium",
)


def library_versions(names: tuple[str, ...] = TRACKED_LIBRARIES) -> dict[str, str]:
    """Installed versions of ``names`` (``"absent"`` for a library that is not installed)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def git_sha(path: Path | None = None) -> str | None:
    """Commit of the checkout this package runs from (with ``-dirty`` if it has changes), else None."""
    where = Path(path) if path else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def provenance() -> dict:
    """The record every saved artefact carries."""
    return {"git_sha": git_sha(), "libraries": library_versions()}


def weights_digest(module) -> str:
    """sha256 of a module's state (names, dtypes, shapes and bytes of every tensor in its state_dict). It is the
    same for a model read from a Lightning checkpoint or from a pretrained folder, and differs for any other
    weights: a token store records its tokenizer's, so a different tokenizer can be caught later."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
