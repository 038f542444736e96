"""World model numerics checked exactly: KV cache vs full pass, causality, layout, loss, counts."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from sequence_model.gpt import GPTConfig
from sequence_model.metrics import bits_per_frame
from sequence_model.rewards import twohot
from sequence_model.world_model import WorldModel, WorldModelConfig

K, V, A, T = 4, 11, 3, 5


def small(**overrides) -> WorldModel:
    torch.manual_seed(0)
    cfg = WorldModelConfig(
        vocab_size=V,
        tokens_per_frame=K,
        num_actions=A,
        context_steps=T,
        gpt=GPTConfig(num_layers=2, num_heads=2, embed_dim=16, dropout=0.1),
        **overrides,
    )
    return WorldModel(cfg).eval()


def sequence(batch=2, steps=T):
    g = torch.Generator().manual_seed(1)
    obs = torch.randint(0, V, (batch, steps, K), generator=g)
    act = torch.randint(0, A, (batch, steps), generator=g)
    return obs, act


def test_layout_offsets():
    model = small()
    obs, act = sequence(batch=1, steps=2)
    ids = model.interleave(obs, act)
    assert ids.shape == (1, 2 * (K + 1))
    assert ids[0, :K].tolist() == obs[0, 0].tolist() and ids[0, K] == act[0, 0]
    assert ids[0, K + 1 : 2 * K + 1].tolist() == obs[0, 1].tolist() and ids[0, -1] == act[0, 1]
    positions = torch.arange(2 * (K + 1))
    assert model.is_action_position(positions).nonzero().flatten().tolist() == [K, 2 * K + 1]
    # Every position but the last observation token of each frame predicts an observation token.
    assert (~model.predicts_observation(positions)).nonzero().flatten().tolist() == [K - 1, 2 * K]


def test_parallel_layout_reads_every_observation_position_and_targets_the_next_frame():
    model = small(prediction="parallel")
    assert model.config.gpt.block_size == K + 1 and small().config.gpt.block_size == 1
    assert model.target_offset == K + 1 and small().target_offset == 1
    positions = torch.arange(2 * (K + 1))
    assert (~model.predicts_observation(positions)).nonzero().flatten().tolist() == [K, 2 * K + 1]


S = K + 1  # tokens per step
CHUNKS = {
    "autoregressive": [[1] * (T * S), [S] * T, [3, 7, 1, 9, 5], [2, S, K, 11, 3]],
    "parallel": [[S] * T, [2 * S, S, 2 * S], [S, 4 * S], [T * S]],  # whole steps: a partial one is refused
}


@pytest.mark.parametrize("prediction, chunks", [(p, c) for p, cs in CHUNKS.items() for c in cs])
def test_kv_cache_decoding_equals_the_full_pass(chunks, prediction):
    model = small(prediction=prediction)
    obs, act = sequence()
    ids = model.interleave(obs, act)
    assert sum(chunks) == ids.shape[1]
    full = model(ids)
    cache = model.transformer.new_cache(batch=2)
    pieces, rewards, ends, at = [], [], [], 0
    for n in chunks:
        out = model(ids[:, at : at + n], cache)
        pieces.append(out.observation_logits)
        rewards.append(out.reward_logits)
        ends.append(out.termination_logits)
        at += n
    assert cache.size == ids.shape[1]
    torch.testing.assert_close(torch.cat(pieces, 1), full.observation_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat(rewards, 1), full.reward_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat(ends, 1), full.termination_logits, atol=1e-5, rtol=1e-5)


def test_a_parallel_model_refuses_to_continue_its_cache_by_part_of_a_step():
    model = small(prediction="parallel")
    obs, act = sequence()
    ids = model.interleave(obs, act)
    cache = model.transformer.new_cache(batch=2)
    model(ids[:, :S], cache)
    for piece in (ids[:, S : S + 1], ids[:, S : 3 * S - 2]):
        with pytest.raises(ValueError, match="whole steps of 5 tokens"):
            model(piece, cache)


def test_cache_overflow_is_explained():
    model = small()
    obs, act = sequence()
    cache = model.transformer.new_cache(batch=2)
    model(model.interleave(obs, act), cache)
    with pytest.raises(ValueError, match="KV cache overflow.*re-prime"):
        model(act[:, :1], cache)


def test_changing_future_tokens_never_changes_past_logits():
    model = small()
    obs, act = sequence()
    ids = model.interleave(obs, act)
    for cut in (1, K, K + 1, 13):
        changed = ids.clone()
        changed[:, cut:] = (changed[:, cut:] + 1) % A  # valid ids for both embeddings
        a, b = model(ids), model(changed)
        torch.testing.assert_close(a.observation_logits[:, :cut], b.observation_logits[:, :cut])
        assert not torch.allclose(a.observation_logits[:, cut:], b.observation_logits[:, cut:])


def test_changing_a_step_never_changes_the_logits_of_earlier_steps_under_the_block_mask():
    model = small(prediction="parallel")
    obs, act = sequence()
    ids = model.interleave(obs, act)
    for cut in (1, K, K + 1, 13, 2 * (K + 1) + 2):
        changed = ids.clone()
        changed[:, cut:] = (changed[:, cut:] + 1) % A
        a, b = model(ids), model(changed)
        start = cut // (K + 1) * (K + 1)  # the first position of the changed token's step
        torch.testing.assert_close(a.observation_logits[:, :start], b.observation_logits[:, :start])
        torch.testing.assert_close(a.reward_logits[:, : cut // (K + 1)], b.reward_logits[:, : cut // (K + 1)])
        # The whole step of the changed token sees it, its earlier positions included.
        assert not torch.allclose(
            a.observation_logits[:, start : start + S], b.observation_logits[:, start : start + S]
        )


def test_parallel_observation_loss_equals_a_naive_loop():
    model = small(prediction="parallel")
    obs, act = sequence()
    mask = torch.tensor([[True] * T, [True, True, True, False, False]])
    out = model(model.interleave(obs, act))
    total, count = 0.0, 0
    for b in range(obs.shape[0]):
        for t in range(1, obs.shape[1]):
            for j in range(K):
                # Token j of frame t is predicted at slot j of step t - 1.
                if mask[b, t] and mask[b, t - 1]:
                    logits = out.observation_logits[b, (t - 1) * (K + 1) + j]
                    total += F.cross_entropy(logits[None], obs[b, t, j][None]).item()
                    count += 1
    losses = model.loss(obs, act, torch.zeros(2, T), torch.zeros(2, T, dtype=torch.bool), mask)
    assert losses.observation.item() == pytest.approx(total / count, rel=1e-5)
    assert losses.next_frame.item() == pytest.approx(total / count, rel=1e-5)
    assert losses.observation_targets == losses.next_frame_targets == count


def _naive_observation_loss(model, obs, act, mask, first_frame=0):
    """The loss by an explicit loop over steps and token slots (targets in frames ``first_frame`` on)."""
    out = model(model.interleave(obs, act))
    total, count = 0.0, 0
    for b in range(obs.shape[0]):
        for t in range(first_frame, obs.shape[1]):
            for j in range(K):
                # Token j of frame t is predicted at position t*(K+1)+j-1 (j > 0) or the previous action (j = 0).
                if t == 0 and j == 0:
                    continue
                position = t * (K + 1) + j - 1
                if not (mask[b, t] and mask[b, position // (K + 1)]):
                    continue
                logits = out.observation_logits[b, position]
                total += F.cross_entropy(logits[None], obs[b, t, j][None]).item()
                count += 1
    return total / count


def padded_batch():
    """Two windows, the second padded after its third step, with rewards of both signs and one end."""
    obs, act = sequence()
    mask = torch.tensor([[True] * T, [True, True, True, False, False]])
    rewards = torch.tensor([[0.0, 1, 0, -2, 0], [0, 0, 3, 0, 0]])
    terminated = torch.zeros(2, T, dtype=torch.bool)
    terminated[1, 2] = True
    return obs, act, rewards, terminated, mask


def test_observation_loss_equals_a_naive_loop_and_ignores_padding():
    model = small()
    obs, act, rewards, terminated, mask = padded_batch()
    losses = model.loss(obs, act, rewards, terminated, mask)
    assert losses.observation.item() == pytest.approx(_naive_observation_loss(model, obs, act, mask), rel=1e-5)
    assert losses.next_frame.item() == pytest.approx(_naive_observation_loss(model, obs, act, mask, 1), rel=1e-5)
    # Changing what is in the padded steps changes nothing.
    obs2, act2, rewards2 = obs.clone(), act.clone(), rewards.clone()
    obs2[1, 3:] = (obs2[1, 3:] + 3) % V
    act2[1, 3:] = (act2[1, 3:] + 1) % A
    rewards2[1, 3:] = 7.0
    again = model.loss(obs2, act2, rewards2, terminated, mask)
    torch.testing.assert_close(again.total, losses.total)


def test_reward_and_termination_targets_are_read_at_action_positions():
    model = small()
    obs, act = sequence(batch=1)
    out = model(model.interleave(obs, act))
    rewards = torch.tensor([[0.0, 5.0, -1.0, 0.0, 0.0]])
    terminated = torch.tensor([[False, False, False, False, True]])
    losses = model.loss(obs, act, rewards, terminated, torch.ones(1, T, dtype=torch.bool))
    expected_reward = F.cross_entropy(out.reward_logits[0], torch.tensor([1, 2, 0, 1, 1]))
    expected_end = F.cross_entropy(out.termination_logits[0], terminated[0].long())
    torch.testing.assert_close(losses.reward, expected_reward)
    torch.testing.assert_close(losses.termination, expected_end)


def test_twohot_reward_round_trips_through_the_expected_value():
    model = small(reward="twohot", reward_bins=41)
    rewards = torch.tensor([[-30.0, -1.5, 0.0, 0.25, 4.0]])
    target = twohot(rewards, model.reward_bins)
    torch.testing.assert_close(target.sum(-1), torch.ones(1, 5))
    logits = target.clamp_min(1e-12).log()  # softmax(log p) = p
    torch.testing.assert_close(
        model.expected_reward(logits), rewards.clamp(-math.expm1(20), math.expm1(20)), rtol=1e-4, atol=1e-4
    )


def test_iris_size():
    model = WorldModel(WorldModelConfig(vocab_size=512, tokens_per_frame=16, num_actions=4))
    assert model.config.gpt.max_tokens == 340
    assert 8.3e6 < model.num_parameters() < 8.5e6  # IRIS: about 8.4M
    assert model.num_parameters(non_embedding=True) == model.num_parameters() - (512 + 4 + 340) * 256


def _manual_sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    n, m = scores.shape[-2:]
    if is_causal:
        attn_mask = torch.ones(n, m, dtype=torch.bool).tril()
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    return scores.softmax(-1) @ v


def test_flops_per_token_matches_a_counter_with_hand_written_attention(monkeypatch):
    model = small()
    monkeypatch.setattr(F, "scaled_dot_product_attention", _manual_sdpa)
    obs, act = sequence(batch=1)
    ids = model.interleave(obs, act)  # exactly max_tokens: attention counted at full context
    with FlopCounterMode(display=False) as counter:
        model(ids)
    counted = counter.get_total_flops() / ids.shape[1]
    assert counted == pytest.approx(model.flops_per_token(training=False), rel=0.01)
    assert model.flops_per_token() == pytest.approx(3 * model.flops_per_token(training=False))


def test_bits_per_frame():
    assert bits_per_frame(math.log(2), 16) == pytest.approx(16.0)


def test_reward_and_end_confusions_count_real_steps_by_true_and_predicted_class():
    model = small()
    obs, act, rewards, ends, mask = padded_batch()
    losses = model.loss(obs, act, rewards, ends, mask)
    out = model(model.interleave(obs, act))
    expected = torch.zeros(3, 3)
    for true, guess in zip((rewards.sign() + 1)[mask].long(), out.reward_logits.argmax(-1)[mask], strict=True):
        expected[true, guess] += 1
    assert torch.equal(losses.reward_confusion, expected)
    assert losses.termination_confusion.sum() == mask.sum() and losses.termination_confusion[1].sum() == 1


def test_classification_figures_against_hand_counts_and_the_majority_baseline():
    from sequence_model.metrics import classification_figures

    counts = torch.tensor([[90.0, 5.0], [4.0, 1.0]])  # 95 steps continue, 5 end; 6 predicted ends, 1 right
    figures = classification_figures(counts, ("continues", "ends"))
    assert figures["precision/ends"] == pytest.approx(1 / 6) and figures["recall/ends"] == pytest.approx(1 / 5)
    assert figures["f1/ends"] == pytest.approx(2 * (1 / 6) * (1 / 5) / (1 / 6 + 1 / 5))
    assert figures["majority_f1/ends"] == 0.0 and figures["majority_f1/continues"] == pytest.approx(2 * 0.95 / 1.95)
    assert classification_figures(torch.zeros(2, 2), ("a", "b"))["f1/b"] == 0.0


# ---------------------------------------------------------------- continuous (box) actions (issue 19)
D = 2  # components of a continuous action


def continuous(prediction: str) -> WorldModel:
    torch.manual_seed(0)
    cfg = WorldModelConfig(
        vocab_size=V,
        tokens_per_frame=K,
        action_dim=D,
        context_steps=T,
        gpt=GPTConfig(num_layers=2, num_heads=2, embed_dim=16),
        prediction=prediction,
    )
    return WorldModel(cfg).eval()


def vectors(batch=2, steps=T, seed=2):
    return torch.randn(batch, steps, D, generator=torch.Generator().manual_seed(seed))


def actions_among(chunk_start: int, n: int, act: torch.Tensor) -> torch.Tensor:
    """The action vectors of the action positions among ids ``chunk_start .. chunk_start + n``."""
    steps = [p // S for p in range(chunk_start, chunk_start + n) if p % S == K]
    return act[:, steps]


@pytest.mark.parametrize("prediction, chunks", [(p, c) for p, cs in CHUNKS.items() for c in cs])
def test_continuous_actions_kv_cache_decoding_equals_the_full_pass(chunks, prediction):
    model = continuous(prediction)
    obs, _ = sequence()
    act = vectors()
    ids = model.interleave(obs, act)
    assert (ids[:, K::S] == 0).all()  # placeholders where the actions go
    full = model(ids, actions=act)
    cache = model.transformer.new_cache(batch=2)
    pieces, rewards, at = [], [], 0
    for n in chunks:
        out = model(ids[:, at : at + n], cache, actions_among(at, n, act))
        pieces.append(out.observation_logits)
        rewards.append(out.reward_logits)
        at += n
    torch.testing.assert_close(torch.cat(pieces, 1), full.observation_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat(rewards, 1), full.reward_logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("prediction", ["autoregressive", "parallel"])
def test_a_continuous_action_conditions_what_follows_it_and_nothing_before(prediction):
    model = continuous(prediction)
    obs, _ = sequence()
    act = vectors()
    ids = model.interleave(obs, act)
    changed = act.clone()
    changed[:, 2] += 1.0  # the action of step 2, at position 2 * S + K
    a, b = model(ids, actions=act), model(ids, actions=changed)
    position = 2 * S + K
    cut = 2 * S if prediction == "parallel" else position  # the block mask lets step 2's frame see its action
    torch.testing.assert_close(a.observation_logits[:, :cut], b.observation_logits[:, :cut])
    torch.testing.assert_close(a.reward_logits[:, :2], b.reward_logits[:, :2])
    assert not torch.allclose(a.observation_logits[:, position:], b.observation_logits[:, position:])
    assert not torch.allclose(a.reward_logits[:, 2], b.reward_logits[:, 2])


def test_continuous_actions_are_refused_where_they_do_not_fit():
    model = continuous("parallel")
    obs, _ = sequence()
    act = vectors()
    ids = model.interleave(obs, act)
    with pytest.raises(ValueError, match=r"pass actions of shape \(2, 5, 2\)"):
        model(ids)
    with pytest.raises(ValueError, match=r"pass actions of shape \(2, 5, 2\)"):
        model(ids, actions=act[:, :4])
    with pytest.raises(ValueError, match="discrete actions, as ids"):
        small()(small().interleave(*sequence()), actions=act)
    with pytest.raises(ValueError, match="both set"):
        WorldModel(WorldModelConfig(vocab_size=V, tokens_per_frame=K, num_actions=A, action_dim=D))


def test_the_loss_of_continuous_actions_uses_them():
    model = continuous("parallel").train()
    obs, _ = sequence()
    act = vectors()
    zeros = torch.zeros(2, T)
    mask = torch.ones(2, T, dtype=torch.bool)
    loss = model.loss(obs, act, zeros, zeros.bool(), mask).total
    loss.backward()
    assert model.action_embedding.weight.grad.abs().sum() > 0
    other = model.loss(obs, act + 1, zeros, zeros.bool(), mask).total
    assert not torch.isclose(loss, other)


# ---------------------------------------------------------------- proprioception (issue 19)
SD = 2  # state components


def with_state(prediction: str, box: bool = False, frames: bool = True) -> WorldModel:
    """A small world model with a 2-component state (and no frames where ``frames`` is False: 0 tokens of 0 codes)."""
    torch.manual_seed(0)
    cfg = WorldModelConfig(
        vocab_size=V if frames else 0,
        tokens_per_frame=K if frames else 0,
        num_actions=None if box else A,
        action_dim=D if box else None,
        state_dim=SD,
        state_bins=8,
        state_low=[-1.0, 0.0],
        state_high=[1.0, 4.0],
        context_steps=T,
        gpt=GPTConfig(num_layers=2, num_heads=2, embed_dim=16),
        prediction=prediction,
    )
    return WorldModel(cfg).eval()


def states(batch=2, steps=T, seed=4):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.rand(batch, steps, generator=g) * 2 - 1, torch.rand(batch, steps, generator=g) * 4], -1)


def test_state_tokens_follow_the_frame_and_decode_to_their_bin_centres():
    model = with_state("parallel")
    assert model.config.tokens_per_observation == K + SD and model.config.tokens_per_block == K + SD + 1
    values = torch.tensor([[-1.0, 0.0], [0.99, 3.99], [-5.0, 9.0], [0.1, 1.1]])
    ids = model.state_codec.encode(values)
    assert ids.tolist() == [[V, V], [V + 7, V + 7], [V, V + 7], [V + 4, V + 2]]  # out of range: the end bins
    centres = model.state_codec.decode(ids)
    torch.testing.assert_close(centres[0], torch.tensor([-0.875, 0.25]))
    assert torch.equal(model.state_codec.encode(centres), ids)  # a bin's centre is in its bin
    obs, _ = sequence()
    both = model.observation_ids(obs, states())
    assert both.shape == (2, T, K + SD) and torch.equal(both[..., :K], obs) and (both[..., K:] >= V).all()
    with pytest.raises(ValueError, match=r"pass states of shape \(2, 5, 2\)"):
        model.observation_ids(obs)
    with pytest.raises(ValueError, match="frames only"):
        small().observation_ids(obs, states())


STATE_CHUNKS = {
    "autoregressive": [[1] * (T * (K + SD + 1)), [K + SD + 1] * T, [3, 11, 7, 14]],
    "parallel": [[K + SD + 1] * T, [2 * (K + SD + 1), 3 * (K + SD + 1)]],
}


@pytest.mark.parametrize("prediction, chunks", [(p, c) for p, cs in STATE_CHUNKS.items() for c in cs])
def test_with_a_state_kv_cache_decoding_equals_the_full_pass(chunks, prediction):
    model = with_state(prediction, box=True)
    obs, _ = sequence()
    act = vectors()
    ids = model.interleave(model.observation_ids(obs, states()), act)
    values = model.state_codec.position_values(states())
    assert sum(chunks) == ids.shape[1]
    full = model(ids, actions=act, values=values)
    cache = model.transformer.new_cache(batch=2)
    block = K + SD + 1
    pieces, at = [], 0
    for n in chunks:
        steps = [p // block for p in range(at, at + n) if p % block == K + SD]
        pieces.append(model(ids[:, at : at + n], cache, act[:, steps], values[:, at : at + n]).observation_logits)
        at += n
    torch.testing.assert_close(torch.cat(pieces, 1), full.observation_logits, atol=1e-5, rtol=1e-5)
    # The exact values are read: the bins' centres alone give other predictions.
    centres = model(ids, actions=act).observation_logits
    assert not torch.allclose(centres, full.observation_logits, atol=1e-3)


def test_a_state_value_is_two_bins_in_proportion_and_its_change_is_predicted_so():
    model = with_state("parallel")
    codec, table = model.state_codec, model.observation_embedding
    # Component 0 spans [-1, 1] in 8 bins of 0.25: centre k at -0.875 + 0.25 k. -0.3125 lies 1/4 from centre 2 to 3.
    lower, upper, weight = codec.twohot(torch.tensor([-0.3125, -0.875, 5.0]), torch.tensor([0, 0, 0]))
    assert lower.tolist() == [V + 2, V, V + 6] and upper.tolist() == [V + 3, V + 1, V + 7]
    torch.testing.assert_close(weight, torch.tensor([0.25, 0.0, 1.0]))  # out of range: the end bin's centre
    # Read as an input: the two bins' embeddings mixed 3:1 at a state slot; a bin's centre reads as its own id.
    ids = torch.zeros(1, K + SD + 1, dtype=torch.long)
    ids[0, K], ids[0, K + 1] = V + 2, V + 5
    values = torch.zeros(1, K + SD + 1)
    values[0, K], values[0, K + 1] = -0.3125, float(codec.decode(torch.tensor([V, V + 5]))[1])
    embedded = model.embed(ids, 0, values=values) - model.position_embedding.weight[: K + SD + 1]
    torch.testing.assert_close(embedded[0, K], 0.75 * table.weight[V + 2] + 0.25 * table.weight[V + 3])
    torch.testing.assert_close(embedded[0, K + 1], table.weight[V + 5])
    torch.testing.assert_close(embedded[0, :K], table.weight[ids[0, :K]])
    # A change is two bins of symlog(change / bin width); a distribution that is those two bins predicts the value
    # before plus that change, exactly.
    centres = codec.change_bins()
    assert torch.allclose(centres, -centres.flip(0)) and math.isclose(float(centres[-1]), math.log1p(8), rel_tol=1e-6)
    for change, component in ((0.03, 0), (-0.7, 1), (0.0, 1)):
        lower, upper, weight = codec.twohot_change(torch.tensor([change]), torch.tensor([component]))
        assert upper - lower == 1 and 0 <= float(weight) <= 1
        logits = torch.full((1, V + 8), -1e9)
        logits[0, lower], logits[0, upper] = torch.log(1 - weight).clamp_min(-1e9), torch.log(weight).clamp_min(-1e9)
        predicted = codec.predict(logits, torch.tensor([0.5]), torch.tensor([component]))
        torch.testing.assert_close(predicted, torch.tensor([0.5 + change]))
    with pytest.raises(ValueError, match="state_bins must be at least 2"):
        WorldModelConfig(vocab_size=V, tokens_per_frame=K, num_actions=A, state_dim=1, state_bins=1)


def test_the_state_is_a_target_of_the_one_cross_entropy_and_frame_slots_never_predict_state_bins():
    model = with_state("parallel")
    obs, act = sequence()
    zeros = torch.zeros(2, T)
    mask = torch.ones(2, T, dtype=torch.bool)
    losses = model.loss(obs, act, zeros, zeros.bool(), mask, states())
    # The state's loss, by hand: slot K + i of step t predicts, two-hot, the change of component i to step t + 1.
    ids = model.interleave(model.observation_ids(obs, states()), act)
    out = model(ids, values=model.state_codec.position_values(states()))
    block, terms = K + SD + 1, []
    for b in range(2):
        for t in range(T - 1):
            for i in range(SD):
                log_p = model.restrict(out.observation_logits[b : b + 1, t * block + K + i][:, None], K + i)
                log_p = log_p[0, 0].float().log_softmax(-1)
                change = states()[b, t + 1, i] - states()[b, t, i]
                lower, upper, weight = model.state_codec.twohot_change(change[None], torch.tensor([i]))
                terms.append(-(log_p[lower] * (1 - weight) + log_p[upper] * weight))
    torch.testing.assert_close(losses.state, torch.cat(terms).mean())
    # An autoregressive model has no target for the first step's state (its change is not in the window).
    autoregressive = with_state("autoregressive").loss(obs, act, zeros, zeros.bool(), mask, states())
    assert autoregressive.observation_targets == 2 * (T * (K + SD) - 1 - SD)
    # K + SD targets a step for T - 1 steps (the last step's next frame is not in the window)
    assert losses.observation_targets == 2 * (T - 1) * (K + SD)
    restricted = model.restrict(torch.zeros(1, K + SD, V + 8), 0)
    assert torch.isinf(restricted[0, :K, V:]).all() and torch.isfinite(restricted[0, :K, :V]).all()
    assert torch.isinf(restricted[0, K:, :V]).all() and torch.isfinite(restricted[0, K:, V:]).all()
    with pytest.raises(ValueError, match="state_low and state_high"):
        WorldModel(WorldModelConfig(vocab_size=V, tokens_per_frame=K, num_actions=A, state_dim=2))


def test_state_weight_weighs_a_state_target_against_a_frame_token_in_the_total():
    obs, act = sequence()
    zeros = torch.zeros(2, T)
    mask = torch.ones(2, T, dtype=torch.bool)
    plain = with_state("parallel").loss(obs, act, zeros, zeros.bool(), mask, states())
    events = plain.reward + plain.termination
    torch.testing.assert_close(plain.total, plain.observation + events)  # weight 1: one mean over every target
    model = with_state("parallel")
    model.config.state_weight = 4.0
    weighted = model.loss(obs, act, zeros, zeros.bool(), mask, states())
    n, n_state = plain.observation_targets, 2 * (T - 1) * SD
    state_sum, frame_sum = plain.state * n_state, plain.observation * n - plain.state * n_state
    by_hand = (frame_sum + 4.0 * state_sum) / (n - n_state + 4.0 * n_state)
    torch.testing.assert_close(weighted.total, by_hand + events)
    torch.testing.assert_close(weighted.observation, plain.observation)  # the reported metric stays unweighted
    with pytest.raises(ValueError, match="state_weight must be at least 0"):
        WorldModelConfig(vocab_size=V, tokens_per_frame=K, num_actions=A, state_weight=-1.0)


@pytest.mark.parametrize("prediction", ["autoregressive", "parallel"])
def test_a_world_model_of_proprioception_alone_decodes_from_its_cache_exactly(prediction):
    """No frames (tokens_per_frame 0, as for state-only datasets): a step is the state's tokens and the action."""
    model = with_state(prediction, box=True, frames=False)
    cfg = model.config
    assert cfg.tokens_per_block == SD + 1 and cfg.observation_vocab == 8
    obs, act = torch.zeros(2, T, 0, dtype=torch.long), vectors()
    ids = model.interleave(model.observation_ids(obs, states()), act)
    values = model.state_codec.position_values(states())
    full = model(ids, actions=act, values=values)
    cache, pieces = model.transformer.new_cache(batch=2), []
    for t in range(T):  # a step at a time
        block = slice(t * (SD + 1), (t + 1) * (SD + 1))
        pieces.append(model(ids[:, block], cache, act[:, t : t + 1], values[:, block]).observation_logits)
    torch.testing.assert_close(torch.cat(pieces, 1), full.observation_logits, atol=1e-5, rtol=1e-5)
    zeros, mask = torch.zeros(2, T), torch.ones(2, T, dtype=torch.bool)
    losses = model.loss(obs, act, zeros, zeros.bool(), mask, states())
    assert losses.observation_targets == 2 * (T - 1) * SD and torch.equal(losses.state, losses.observation)
    with pytest.raises(ValueError, match="tokens_per_frame must be a whole number of at least 1"):
        WorldModelConfig(vocab_size=V, tokens_per_frame=0, num_actions=A)  # frames only: at least one token
