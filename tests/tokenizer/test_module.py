"""The Lightning system's objective: padded frames weigh nothing; one loss() for every caller."""

from types import SimpleNamespace

import torch

from tokenizer.model import TokenizerConfig
from tokenizer.module import TokenizerModule
from tokenizer.quantizer import QuantizerConfig

TINY = TokenizerConfig(
    channels=8,
    channel_mult=(1, 1, 1),
    num_res_blocks=1,
    attn_resolutions=(),
    z_channels=16,
    embed_dim=16,
    quantizer=QuantizerConfig(codebook_size=32),
)


def _batch(frames, mask):
    return SimpleNamespace(observations=frames, mask=mask)


def test_padded_frames_do_not_change_the_loss():
    torch.manual_seed(0)
    module = TokenizerModule(TINY, l2_weight=0.5).eval()  # eval: no EMA or dropout side effects
    frames = torch.randint(0, 256, (2, 3, 3, 64, 64), dtype=torch.uint8)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    other = frames.clone()
    other[~mask] = 255 - other[~mask]
    loss_a, metrics_a = module.loss(_batch(frames, mask))
    loss_b, metrics_b = module.loss(_batch(other, mask))
    torch.testing.assert_close(loss_a, loss_b)
    # ...and equal the loss over the real frames alone, as a plain tensor batch.
    real = frames[mask]
    loss_c, _ = module.loss(real)
    torch.testing.assert_close(metrics_a["l1"], module.loss(real)[1]["l1"])
    torch.testing.assert_close(loss_a, loss_c)
    assert set(metrics_a) == {"loss", "l1", "l2", "quantizer", "perceptual"}


def test_loss_terms_are_weighted_as_configured():
    torch.manual_seed(0)
    frames = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    module = TokenizerModule(TINY, l1_weight=2.0, l2_weight=3.0, quantizer_weight=0.5).train()
    torch.manual_seed(1)
    loss, m = module.loss(frames)
    torch.testing.assert_close(loss, 2.0 * m["l1"] + 3.0 * m["l2"] + 0.5 * m["quantizer"])
    loss.backward()
    assert all(p.grad is not None for p in module.tokenizer.encoder.parameters())


def test_foreground_pixels_weigh_more_and_need_a_background():
    import dataclasses

    import pytest

    config = dataclasses.replace(TINY, background=True)
    torch.manual_seed(0)
    plain = TokenizerModule(config).eval()
    weighted = TokenizerModule(config, foreground_weight=9.0).eval()
    weighted.load_state_dict(plain.state_dict())
    frames = torch.full((2, 3, 64, 64), 100, dtype=torch.uint8)
    with torch.no_grad():
        plain.tokenizer.init_background(frames)
        weighted.tokenizer.init_background(frames)
    frames[:, :, 10:12, 20:22] = 250  # a 2x2 "ball" on the background: 4 of 4,096 pixels are foreground
    error = (plain.tokenizer(frames).reconstruction.float() - plain.tokenizer.normalize(frames)).abs()
    foreground = torch.zeros(1, 1, 64, 64)
    foreground[..., 10:12, 20:22] = 1
    expected = (error * (1 + 9.0 * foreground)).mean()
    torch.testing.assert_close(weighted.loss(frames)[1]["l1"], expected)
    assert weighted.loss(frames)[1]["l1"] > plain.loss(frames)[1]["l1"]
    with pytest.raises(ValueError, match="needs a background image"):
        TokenizerModule(TINY, foreground_weight=1.0)
