"""The one size check: parts are compared on every data-linked size they both have, and the message names them."""

import pytest

from helpers.tokens import synthetic_token_store
from iris_wm.data.sizes import SizeMismatch, check_sizes, sizes_of
from sequence_model.gpt import GPTConfig
from sequence_model.world_model import WorldModel, WorldModelConfig


def _world_model(num_actions=3, vocab=32, k=4):
    gpt = GPTConfig(num_layers=1, num_heads=1, embed_dim=8)
    return WorldModel(WorldModelConfig(vocab_size=vocab, tokens_per_frame=k, num_actions=num_actions, gpt=gpt))


def test_sizes_are_read_from_each_kind_of_part(tmp_path):
    store = synthetic_token_store(tmp_path / "tokens", episodes=2, length=5)
    assert sizes_of(store) == {"num_actions": 3, "action_dim": 0, "vocab_size": 32, "tokens_per_frame": 4}
    assert sizes_of(_world_model()) == {"vocab_size": 32, "tokens_per_frame": 4, "num_actions": 3, "action_dim": 0}
    check_sizes(token_store=store, world_model=_world_model(), nothing=None)


def test_a_mismatch_names_the_parts_and_the_size(tmp_path):
    store = synthetic_token_store(tmp_path / "tokens", episodes=2, length=5)
    with pytest.raises(
        SizeMismatch,
        match=r"The token store \(32 codes, 4 tokens per frame, 3 actions\) and the "
        r"world model \(.*5 actions\) do not fit together \(actions differ\)\. Use parts",
    ):
        check_sizes(token_store=store, world_model=_world_model(num_actions=5))
    with pytest.raises(SizeMismatch, match=r"\(codes differ\)\. Encode again\.$"):
        check_sizes(fix="Encode again.", token_store=store, world_model=_world_model(vocab=64))


def test_a_discrete_model_and_continuous_data_do_not_fit(tmp_path):
    from iris_wm.data.spaces import ActionSpace
    from iris_wm.data.store import TokenStore

    store = TokenStore.create(
        tmp_path / "box",
        TokenStore.token_spec(4),
        ActionSpace.box([-1, -1], [1, 1]),
        {"vocab_size": 32, "tokens_per_frame": 4},
    )
    assert sizes_of(store) == {"num_actions": 0, "action_dim": 2, "vocab_size": 32, "tokens_per_frame": 4}
    with pytest.raises(SizeMismatch, match=r"token store \(32 codes, 4 tokens per frame, 2 components of a continuous"):
        check_sizes(token_store=store, world_model=_world_model())
