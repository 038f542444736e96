"""Fault injection for the crash tests: ``IRIS_WM_FAULT=<point>`` kills the process with SIGKILL (no clean-up,
exactly like a power cut or the OOM killer) when the code reaches the named point."""

from __future__ import annotations

import os
import signal


def maybe_fault(point: str) -> None:
    """Kill this process if ``IRIS_WM_FAULT`` names ``point`` (e.g. ``collect:120`` or ``3:agent:1``)."""
    if os.environ.get("IRIS_WM_FAULT") == point:
        os.kill(os.getpid(), signal.SIGKILL)
