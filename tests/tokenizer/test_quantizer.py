"""The quantizer reproduces the IRIS loss and straight-through gradients; library options run."""

import pytest
import torch
import torch.nn.functional as F

from tokenizer.quantizer import Quantizer, QuantizerConfig


def _nearest(z, codebook):
    flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    return torch.cdist(flat, codebook).argmin(-1).reshape(z.shape[0], -1)


@pytest.mark.parametrize("beta", [1.0, 0.25])
def test_iris_loss_and_gradients_match_the_formula(beta):
    torch.manual_seed(0)
    quantizer = Quantizer(QuantizerConfig(codebook_size=16, beta=beta), dim=8).train()
    codebook = quantizer.vq._codebook.embed
    with torch.no_grad():
        codebook.normal_()
    z = torch.randn(2, 8, 3, 3, requires_grad=True)
    out = quantizer(z)
    expected_tokens = _nearest(z.detach(), codebook.detach()[0])
    assert torch.equal(out.tokens, expected_tokens)

    e = codebook[0][expected_tokens]  # (B, K, E)
    flat = z.permute(0, 2, 3, 1).reshape(2, 9, 8)
    expected_loss = F.mse_loss(e, flat.detach()) + beta * F.mse_loss(flat, e.detach())
    torch.testing.assert_close(out.loss, expected_loss)

    # Straight-through: the features are the codes, and their gradient passes to z unchanged.
    torch.testing.assert_close(out.features.permute(0, 2, 3, 1).reshape(2, 9, 8), e.detach())
    (out.features.sum() + out.loss).backward()
    n = flat.numel()
    expected_grad_z = 1.0 + beta * 2 * (flat - e).detach() / n
    torch.testing.assert_close(z.grad.permute(0, 2, 3, 1).reshape(2, 9, 8), expected_grad_z)
    expected_grad_codebook = torch.zeros_like(codebook[0]).index_add_(
        0, expected_tokens.reshape(-1), (2 * (e - flat) / n).detach().reshape(-1, 8)
    )
    torch.testing.assert_close(codebook.grad[0], expected_grad_codebook)


def test_iris_codebook_starts_uniform_in_plus_minus_one_over_v():
    embed = Quantizer(QuantizerConfig(codebook_size=64), dim=8).vq._codebook.embed
    assert embed.abs().max() <= 1 / 64 and embed.std() > 0


@pytest.mark.parametrize(
    "config",
    [
        QuantizerConfig(codebook_size=16, ema=True, ema_decay=0.9),
        QuantizerConfig(codebook_size=16, ema=True, cosine=True),
        QuantizerConfig(codebook_size=16, kmeans_init=True, ema=True, dead_code_threshold=0.5),
        QuantizerConfig(kind="fsq", fsq_levels=(5, 4, 3)),
    ],
    ids=["ema", "cosine", "kmeans+dead-code", "fsq"],
)
def test_library_options_quantize_and_look_up_consistently(config):
    torch.manual_seed(0)
    quantizer = Quantizer(config, dim=8).train()
    z = torch.randn(4, 8, 2, 2, requires_grad=True)
    out = quantizer(z)
    assert out.tokens.shape == (4, 4) and out.tokens.max() < config.vocab_size
    (out.features.sum() + out.loss).backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    quantizer.eval()
    with torch.no_grad():
        again = quantizer(z)
        torch.testing.assert_close(quantizer.lookup(again.tokens, 2, 2), again.features)


def test_ema_moves_the_codebook_without_gradients():
    quantizer = Quantizer(QuantizerConfig(codebook_size=8, ema=True, ema_decay=0.5), dim=4).train()
    before = quantizer.vq.codebook.clone()
    quantizer(torch.randn(8, 4, 2, 2) + 3.0)
    assert not torch.allclose(before, quantizer.vq.codebook)
    assert not any(p.requires_grad for p in quantizer.vq._codebook.parameters())


def test_cosine_without_ema_is_explained():
    with pytest.raises(ValueError, match="cosine=True needs quantizer.ema=True"):
        Quantizer(QuantizerConfig(cosine=True), dim=8)


def test_fsq_centering_is_the_distance_to_the_bin_centres_and_agrees_with_fsqs_codes():
    torch.manual_seed(0)
    quantizer = Quantizer(QuantizerConfig(kind="fsq", fsq_levels=(8, 5, 4), fsq_centering=2.0), dim=3).train()
    z = torch.randn(2, 3, 4, 4)
    out = quantizer(z)
    flat = z.permute(0, 2, 3, 1).reshape(2, 16, 3)
    levels = torch.tensor([8.0, 5.0, 4.0])
    half = (levels - 1) * 1.001 / 2
    offset = torch.where(levels % 2 == 0, 0.5, 0.0)
    bounded = torch.tanh(flat + torch.atanh(offset / half)) * half - offset
    torch.testing.assert_close(out.loss, 2.0 * ((bounded - bounded.round()) ** 2).mean())
    # The rounded values are FSQ's own codes (scaled by the half width), so the term measures the real bins.
    codes = quantizer.lookup(out.tokens, 4, 4).permute(0, 2, 3, 1).reshape(2, 16, 3)
    torch.testing.assert_close(codes * (levels // 2), bounded.round())
    assert quantizer.eval()(z).loss == 0  # a training term only
    with pytest.raises(ValueError, match="set embed_dim to 3"):
        Quantizer(QuantizerConfig(kind="fsq", fsq_levels=(8, 5, 4), fsq_centering=1.0), dim=8)
