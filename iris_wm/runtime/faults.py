"""Fault injection for the crash tests: ``IRIS_WM_FAULT=<point>`` kills the process with SIGKILL (no clean-up,
exactly like a power cut or the OOM killer) when the code reaches the named point."""

from __future__ import annotations

import os
import signal


def maybe_fault(point: str) -> None:
    """Kill this process if ``IRIS_WM_FAULT`` names ``point`` (e.g. ``collect:120`` or ``3:agent:1``); in a
    data-parallel run, its whole process group (every rank, as a scheduler's kill would), since a lone survivor
    would wait for the dead rank until its collective's timeout."""
    if os.environ.get("IRIS_WM_FAULT") == point:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            os.killpg(os.getpgrp(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
