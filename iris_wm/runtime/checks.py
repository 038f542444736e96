"""Range checks of settings and arguments, made where they are read so that work that cannot succeed is refused
before it starts; each failure names the setting, the value and what it must be."""

from __future__ import annotations

import math
import os
from pathlib import Path

from iris_wm.runtime.errors import ConfigError


def at_least(minimum: float, where: str, **values) -> None:
    """Refuse any of ``values`` (name=value; None is left alone: it means "not set") below ``minimum``."""
    for name, value in values.items():
        if value is not None and not (_number(value) and value >= minimum):
            raise ConfigError(f"{where}: {name} must be at least {minimum}, got {value!r}.")


def within(low: float, high: float, where: str, **values) -> None:
    """Refuse any of ``values`` (None is left alone) outside ``[low, high]``."""
    for name, value in values.items():
        if value is not None and not (_number(value) and low <= value <= high):
            raise ConfigError(f"{where}: {name} must lie in [{low}, {high}], got {value!r}.")


def positive(where: str, **values) -> None:
    """Refuse any of ``values`` (None is left alone) that is not a finite number above zero."""
    for name, value in values.items():
        if value is not None and not (_number(value) and value > 0):
            raise ConfigError(f"{where}: {name} must be above 0, got {value!r}.")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def output_file(path: str | Path, what: str) -> Path:
    """Check, before any work, that ``path`` can be written as a file: not a folder, its parent not a file,
    and the folder it goes in writable (created if missing)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"The {what} {path} is a folder; name a file inside it (e.g. {path / 'result.json'}).")
    _writable_folder(path.parent, what, path)
    return path


def output_folder(path: str | Path, what: str) -> Path:
    """Check, before any work, that ``path`` can be a folder of outputs: not a file, and writable (created if
    missing)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"The {what} {path} is a file, not a folder: name a folder (the file is left alone).")
    _writable_folder(path, what, path)
    return path


def _writable_folder(folder: Path, what: str, target: Path) -> None:
    for parent in (folder, *folder.parents):
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"Cannot write the {what} {target}: {parent} is a file, not a folder.")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise ConfigError(
                    f"Cannot write the {what} {target}: {parent} is not writable; write elsewhere or fix its "
                    "permissions."
                )
            return
