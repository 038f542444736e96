"""Perceptual loss from a user-named local file; metrics; safe loading."""

import math
import pickle

import pytest
import torch
from safetensors.torch import save_file

from tokenizer.losses import PerceptualLoss, load_state_dict
from tokenizer.module import codebook_stats, psnr

VGG_CONVS = [
    (0, 3, 64),
    (2, 64, 64),
    (5, 64, 128),
    (7, 128, 128),
    (10, 128, 256),
    (12, 256, 256),
    (14, 256, 256),
    (17, 256, 512),
    (19, 512, 512),
    (21, 512, 512),
    (24, 512, 512),
    (26, 512, 512),
    (28, 512, 512),
]


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    torch.manual_seed(0)
    state = {}
    for index, c_in, c_out in VGG_CONVS:
        state[f"features.{index}.weight"] = torch.randn(c_out, c_in, 3, 3) * math.sqrt(2 / (9 * c_in))
        state[f"features.{index}.bias"] = torch.zeros(c_out)
    path = tmp_path_factory.mktemp("vgg") / "vgg16.safetensors"
    save_file(state, str(path))
    return path


def test_enabled_without_a_file_says_what_to_provide():
    with pytest.raises(ValueError, match="--model.perceptual_weights PATH"):
        PerceptualLoss(None)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        PerceptualLoss("/nonexistent/vgg16.safetensors")


def test_distance_is_zero_for_equal_images_and_positive_otherwise(vgg_file):
    loss = PerceptualLoss(vgg_file)
    a, b = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    assert loss(a, a).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(a, b).item() > 0
    assert not any(p.requires_grad for p in loss.parameters())
    prediction = b.clone().requires_grad_(True)
    loss(prediction, a).backward()
    assert prediction.grad.abs().sum() > 0


def test_file_without_vgg_weights_is_explained(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"something": torch.zeros(3)}, str(path))
    with pytest.raises(ValueError, match="lacks VGG16 weights"):
        PerceptualLoss(path)


class _Payload:
    def __reduce__(self):
        return (print, ("arbitrary code ran",))


def test_a_crafted_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"features.0.weight": _Payload()}, handle)
    with pytest.raises(ValueError, match="Refusing to unpickle"):
        load_state_dict(path)


def test_psnr_of_a_known_error():
    target = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    prediction = torch.full_like(target, 10)
    expected = 10 * math.log10(255**2 / 100)
    torch.testing.assert_close(psnr(prediction, target), torch.full((2,), expected))
    assert psnr(target, target)[0] == pytest.approx(100.0)


def test_codebook_usage_and_perplexity():
    usage, perplexity = codebook_stats(torch.tensor([5.0, 5.0, 0.0, 0.0]))
    assert usage.item() == 0.5 and perplexity.item() == pytest.approx(2.0)
