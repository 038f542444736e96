"""What the hardware can do, and the precision chosen from it."""

from __future__ import annotations

import platform
from pathlib import Path

import torch


def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bf16 in hardware (AVX512-BF16 or AMX). Elsewhere (e.g. an AVX2-only AMD EPYC)
    oneDNN emulates it: a demo tokenizer step took 21.6 s in bf16 against 1.4 s in fp32 (docs/LOG.md)."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def inference_dtype(precision: str, device: torch.device | str = "cpu") -> torch.dtype:
    """The dtype of inference weights for ``precision`` (``fp32``, ``bf16`` or ``auto``): ``auto`` is bf16 on a GPU
    and on a CPU with bf16 hardware, fp32 elsewhere; an explicit ``bf16`` on a CPU without bf16 hardware is refused
    (it would only time the emulation)."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16'; got {precision!r}.")
    has_bf16 = torch.device(device).type == "cuda" or cpu_has_native_bf16()
    if precision == "bf16" and not has_bf16:
        raise ValueError(
            "precision 'bf16' asked for on a CPU without bf16 hardware (AVX512-BF16 or AMX), where oneDNN emulates it "
            "about 15x slower than fp32: use 'auto' or 'fp32'."
        )
    return torch.bfloat16 if precision == "bf16" or (precision == "auto" and has_bf16) else torch.float32


def effective_precision(precision, accelerator: str) -> tuple:
    """``(precision to use, note)``: a bf16 precision asked for on a CPU that would only emulate bf16 becomes
    ``32-true``, and the note says so; anything else is kept (note None). ``accelerator`` is Lightning's
    (``cpu``, ``cuda``, ``auto``, ...); ``precision`` may be None (Lightning's default)."""
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if on_cpu and str(precision).startswith("bf16") and not cpu_has_native_bf16():
        note = f"this CPU has no bf16 hardware (emulated bf16 is about 15x slower); precision {precision} -> 32-true."
        return "32-true", note
    return precision, None


def cpu_description() -> str:
    """CPU model and the matrix extensions that decide bf16 speed (AMX, AVX-512 BF16)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    extensions = [f for f in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if f in flags]
    return f"{model} ({', '.join(extensions) or 'no AVX-512/AMX'})"
