"""Losses of the tokenizer: L1 reconstruction and an optional LPIPS-style perceptual loss.

IRIS trains its autoencoder with L1 + commitment + a perceptual loss (LPIPS, Zhang et al. 2018, on VGG16).
Nothing can be downloaded here, so the VGG16 weights come only from a local file that the user names:
safetensors (preferred) or a PyTorch state dict, read with ``weights_only=True``. Expected keys are
torchvision's ``features.<i>.weight`` / ``features.<i>.bias`` for the 13 convolutions of VGG16 and,
optionally, LPIPS's per-layer linear weights ``lin<j>.model.1.weight`` (without them the five layers are
weighted equally). Such a file can be written on a machine with torchvision and lpips by saving
``vgg16(weights="IMAGENET1K_V1").features`` and ``lpips.LPIPS(net="vgg")`` state dicts into one dict.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# VGG16 convolution widths, "M" = 2x2 max-pool; LPIPS reads the ReLU after the last conv of each stage.
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_TAPS = (3, 8, 15, 22, 29)  # indices (in torchvision's `features`) of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
# LPIPS input normalisation for images in [-1, 1].
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read weights without unpickling arbitrary objects: safetensors, or ``torch.load(weights_only=True)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Weight file {path} does not exist.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle.UnpicklingError and friends: refuse anything but plain tensors
        raise ValueError(
            f"{path} is not a plain weights file (safetensors or a state dict of tensors): {err}. "
            "Refusing to unpickle it."
        ) from err


class PerceptualLoss(nn.Module):
    """LPIPS-style distance on VGG16 features; frozen, weights from ``weights_path``."""

    def __init__(self, weights_path: str | Path | None):
        super().__init__()
        if not weights_path:
            raise ValueError(
                "The perceptual loss is enabled (perceptual_weight > 0) but no VGG16 weight file was given. "
                "Set --model.perceptual_weights PATH to a local safetensors file with torchvision VGG16 "
                "`features.*` weights (see tokenizer/losses.py), or set --model.perceptual_weight 0."
            )
        state = load_state_dict(weights_path)
        layers: list[nn.Module] = []
        c_in = 3
        for width in _VGG16:
            if width == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(c_in, width, 3, padding=1), nn.ReLU()]
                c_in = width
        self.features = nn.Sequential(*layers)
        feature_state = {k.split("features.", 1)[1]: v for k, v in state.items() if "features." in k}
        missing, _ = self.features.load_state_dict(feature_state, strict=False)
        if missing:
            raise ValueError(f"{weights_path} lacks VGG16 weights {missing[:4]}...; see tokenizer/losses.py.")
        widths = (64, 128, 256, 512, 512)
        self.lins = nn.ParameterList()
        for j, width in enumerate(widths):
            key = next((k for k in state if k.endswith(f"lin{j}.model.1.weight")), None)
            weight = state[key].reshape(width) if key else torch.ones(width)
            self.lins.append(nn.Parameter(weight.float(), requires_grad=False))
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):  # always frozen and in eval mode
        return super().train(False)

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        x = (x - self.shift) / self.scale
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _TAPS:
                out.append(x)
        return out

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean perceptual distance between images in [-1, 1], ``(B, 3, H, W)`` each."""
        total = prediction.new_zeros(())
        for f_pred, f_true, weight in zip(self._taps(prediction), self._taps(target), self.lins, strict=True):
            diff = (F.normalize(f_pred, dim=1, eps=1e-10) - F.normalize(f_true, dim=1, eps=1e-10)) ** 2
            total = total + (diff * weight.view(1, -1, 1, 1)).sum(1).mean()
        return total
