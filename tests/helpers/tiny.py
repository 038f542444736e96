"""Configs of tiny models for unit tests (16x16 frames, 4 tokens per frame, a one-layer transformer)."""

from iris_wm.agent.actor_critic import ActorCriticConfig
from sequence_model.gpt import GPTConfig
from sequence_model.world_model import WorldModelConfig
from tokenizer.model import TokenizerConfig
from tokenizer.quantizer import QuantizerConfig


def tokenizer_config(vocab_size: int) -> TokenizerConfig:
    """A 16x16 tokenizer (three halvings: 2x2 = 4 tokens per frame) with ``vocab_size`` codes."""
    return TokenizerConfig(
        resolution=16,
        channels=4,
        channel_mult=(1, 1, 1, 1),
        num_res_blocks=1,
        attn_resolutions=(),
        z_channels=4,
        embed_dim=4,
        quantizer=QuantizerConfig(codebook_size=vocab_size),
    )


def world_model_config(vocab_size: int, tokens_per_frame: int, num_actions: int, context_steps: int, **gpt):
    """A one-layer, two-head, width-16 world model; ``gpt`` overrides its transformer settings."""
    return WorldModelConfig(
        vocab_size=vocab_size,
        tokens_per_frame=tokens_per_frame,
        num_actions=num_actions,
        context_steps=context_steps,
        gpt=GPTConfig(**{"num_layers": 1, "num_heads": 2, "embed_dim": 16, **gpt}),
    )


def box_actor_critic_config(vocab_size: int, tokens_per_frame: int, **extra) -> ActorCriticConfig:
    """A token-reading actor-critic (LSTM 16) over a 2-D box of actions in [-1, 1]; ``extra`` adds e.g. a state."""
    return ActorCriticConfig(
        observation="tokens",
        vocab_size=vocab_size,
        tokens_per_frame=tokens_per_frame,
        action_dim=2,
        action_low=[-1.0, -1.0],
        action_high=[1.0, 1.0],
        token_embed_dim=4,
        encoder_dim=16,
        lstm_dim=16,
        **extra,
    )
