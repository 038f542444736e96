"""The IRIS autoencoder: sizes, shapes, input checks."""

import pytest
import torch

from tokenizer.model import Tokenizer, TokenizerConfig
from tokenizer.quantizer import QuantizerConfig

TINY = dict(
    channels=8,
    channel_mult=(1, 1, 1),
    num_res_blocks=1,
    attn_resolutions=(16,),
    z_channels=16,
    embed_dim=16,
    quantizer=QuantizerConfig(codebook_size=32),
)


def test_iris_config_has_the_reference_parameter_count():
    model = Tokenizer(TokenizerConfig())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert abs(trainable - 4_027_523) <= 0.01 * 4_027_523
    assert trainable == 4_027_523  # exact, in fact
    assert model.tokens_per_frame == 16 and model.vocab_size == 512


@pytest.mark.parametrize("levels, tokens", [(6, 4), (5, 16), (4, 64)])
def test_grid_size_gives_4_16_or_64_tokens(levels, tokens):
    cfg = TokenizerConfig(**{**TINY, "channel_mult": (1,) * levels, "attn_resolutions": ()})
    model = Tokenizer(cfg)
    frames = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    assert model.encode(frames).shape == (2, tokens)
    assert model.tokens_per_frame == tokens


def test_encode_decode_types_and_ranges():
    model = Tokenizer(TokenizerConfig(**TINY)).eval()
    frames = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    tokens = model.encode(frames)
    assert tokens.dtype == torch.int64 and tokens.shape == (3, 256)
    assert 0 <= tokens.min() and tokens.max() < 32
    decoded = model.decode(tokens)
    assert decoded.dtype == torch.uint8 and decoded.shape == frames.shape
    # Decoding the codes of a forward pass gives the forward pass's reconstruction.
    out = model(frames)
    torch.testing.assert_close(model.decode_normalized(out.tokens), out.reconstruction)


def test_decoding_in_chunks_equals_decoding_each_frame_and_a_bf16_copy_stays_close():
    import tokenizer.model as module

    model = Tokenizer(TokenizerConfig(**TINY, background=True)).eval()
    tokens = torch.randint(0, 32, (module.DECODE_CHUNK * 2 + 3, 256))
    one_by_one = torch.cat([model.decode(t[None]) for t in tokens])
    assert (model.decode(tokens).int() - one_by_one.int()).abs().max() <= 1  # the same frames (up to rounding)
    assert model.decode(tokens[:0]).shape == (0, 3, 64, 64)
    half = Tokenizer(TokenizerConfig(**TINY, background=True)).eval()
    half.load_state_dict(model.state_dict())
    half = half.to(torch.bfloat16).to(memory_format=torch.channels_last)
    assert half.dtype == torch.bfloat16
    frames = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    assert half.encode(frames).shape == (4, 256)  # uint8 frames go in as they are
    assert (half.decode(tokens).int() - one_by_one.int()).abs().float().mean() < 2.0


@pytest.mark.parametrize(
    "frames",
    [
        torch.rand(2, 3, 64, 64),  # floats
        torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8),  # channels last
        torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8),  # no batch axis
        torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8),  # wrong size
    ],
)
def test_wrong_frames_get_a_clear_error(frames):
    model = Tokenizer(TokenizerConfig(**TINY))
    with pytest.raises(ValueError, match=r"Frames must be a uint8 tensor of shape \(B, 3, 64, 64\)"):
        model.encode(frames)


def test_wrong_token_shape_gets_a_clear_error():
    model = Tokenizer(TokenizerConfig(**TINY))
    with pytest.raises(ValueError, match=r"Tokens must have shape \(B, 256\)"):
        model.decode(torch.zeros(2, 16, dtype=torch.long))


def test_resolution_must_divide_into_the_grid():
    with pytest.raises(ValueError, match="not divisible"):
        TokenizerConfig(resolution=60, channel_mult=(1, 1, 1, 1, 1))


def test_background_starts_the_reconstruction_at_the_mean_frame():
    model = Tokenizer(TokenizerConfig(**TINY, background=True))
    frames = torch.randint(0, 256, (6, 3, 64, 64), dtype=torch.uint8)
    model.init_background(frames)
    expected = model.normalize(frames).mean(0, keepdim=True)
    torch.testing.assert_close(model.background.data, expected)
    out = model(frames[:2])  # the decoder's last layer starts at zero: only the background is drawn
    torch.testing.assert_close(out.reconstruction, expected.expand(2, -1, -1, -1))
    assert (
        sum(p.numel() for p in model.parameters())
        == sum(p.numel() for p in Tokenizer(TokenizerConfig(**TINY)).parameters()) + 3 * 64 * 64
    )


def test_background_is_removed_from_the_encoder_input():
    torch.manual_seed(0)
    model = Tokenizer(TokenizerConfig(**TINY, background=True)).eval()
    frames = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    model.init_background(frames[:2])
    plain = Tokenizer(TokenizerConfig(**TINY)).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k != "background"})
    with torch.no_grad():
        centred = model.normalize(frames) - model.background
        expected = plain.quantizer(plain.pre_quant(plain.encoder(centred))).tokens
    assert torch.equal(model.encode(frames), expected)
    assert not torch.equal(model.encode(frames), plain.encode(frames))


def test_init_background_needs_the_option():
    with pytest.raises(ValueError, match="background=False"):
        Tokenizer(TokenizerConfig(**TINY)).init_background(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
