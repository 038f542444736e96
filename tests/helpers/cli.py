"""Running `iris-wm` in-process and checking how it refuses: exit status 2, the message on standard error, no
traceback."""

from __future__ import annotations

import re

import pytest

from iris_wm.cli.main import main as iris_wm


def refused(capsys, argv: list[str], *patterns: str, code: int = 2) -> str:
    """Run ``iris-wm argv``, assert it exits with ``code``, prints no traceback and that its standard error
    matches every regular expression in ``patterns``; return what it printed there."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        iris_wm(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == code, f"exit status {exit_info.value.code}, not {code}; stderr:\n{err}"
    assert "Traceback" not in err, err
    for pattern in patterns:
        assert re.search(pattern, err, re.S), f"{pattern!r} not in:\n{err}"
    return err


def snapshot(*folders) -> dict[str, str]:
    """The sha256 of every file under ``folders`` (a writer's lock file aside): equal snapshots before and after a
    refused command prove that no byte of the data changed."""
    import hashlib
    from pathlib import Path

    files = {}
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file() and path.name != ".writer.lock":
                files[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files
