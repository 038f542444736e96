"""Imagination with the KV cache equals a naive loop of full forward passes, re-priming included."""

import pytest
import torch

from iris_wm.envs.imagination import ImaginationConfig, ImaginationEnv, InferenceCopy
from iris_wm.runtime.errors import ConfigError
from sequence_model.gpt import GPTConfig
from sequence_model.world_model import WorldModel, WorldModelConfig

K, V, A, C = 3, 13, 4, 4


def model(prediction="autoregressive", box=False, state=False, frames=True, reward="sign"):
    torch.manual_seed(0)
    cfg = WorldModelConfig(
        reward=reward,
        vocab_size=V if frames else 0,
        tokens_per_frame=K if frames else 0,  # 0: proprioception alone
        num_actions=None if box else A,
        action_dim=2 if box else None,
        state_dim=2 if state else None,
        state_bins=6,
        state_low=[0.0, -2.0] if state else None,
        state_high=[1.0, 2.0] if state else None,
        context_steps=C,
        gpt=GPTConfig(num_layers=2, num_heads=2, embed_dim=16, dropout=0.0),
        prediction=prediction,
    )
    return WorldModel(cfg).eval()


def naive_rollout(wm, obs, act, actions, keep, states=None, graph=False):
    """Greedy imagination recomputing the whole window for every token. A state slot is the step before's value plus
    the expected change, read back exactly (two-hot) and as the id of its bin."""
    frames = [obs[:, i] for i in range(obs.shape[1])]
    acts = [act[:, i] for i in range(act.shape[1])]
    exact = [states[:, i] for i in range(states.shape[1])] if states is not None else None
    codec, K = wm.state_codec, wm.config.tokens_per_frame
    start = 0  # first step of the current window
    results = []
    O = wm.config.tokens_per_observation  # noqa: E741  (observation tokens a step: the frame's, the state's)

    def slot_value(logits, slot):  # the id of slot `slot`, and its value (0 for a frame slot)
        logits = wm.restrict(logits[:, None], slot)[:, 0]
        if slot < K:
            return logits.argmax(-1), torch.zeros(logits.shape[0])
        value = codec.predict(logits[:, None], exact[-1][:, slot - K : slot - K + 1], torch.tensor([slot - K]))[:, 0]
        return codec.encode(value[:, None], torch.tensor([slot - K]))[:, 0], value

    for a in actions:
        steps = len(frames) - start
        # Tokens the env's cache would hold after this step: a parallel step feeds whole steps; an autoregressive
        # one also feeds the O - 1 tokens of the new observation after the action.
        # A parallel step also needs room for the step it predicts: a window's last step has no target in training.
        needed = (steps + 1 if wm.config.parallel else steps) * (O + 1) + (0 if wm.config.parallel else O - 1)
        if needed > C * (O + 1):
            start = len(frames) - keep
        window_obs = torch.stack(frames[start:], 1)
        window_act = torch.stack([*acts[start:], a], 1)
        ids = wm.interleave(window_obs, window_act)
        values = codec.position_values(torch.stack(exact[start:], 1)) if exact is not None else None
        vectors = window_act if wm.config.continuous else None
        with torch.set_grad_enabled(graph):
            out = wm(ids, actions=vectors, values=values)
            reward = wm.expected_reward(out.reward_logits[:, -1])
            end = out.termination_logits[:, -1].argmax(-1).bool()
            if wm.config.parallel:  # the last step's O observation slots predict the next observation
                new = [slot_value(out.observation_logits[:, -(O + 1) + slot], slot) for slot in range(O)]
            else:
                new = [slot_value(out.observation_logits[:, -1], 0)]
                for slot in range(1, O):
                    longer = torch.cat([ids, torch.stack([i for i, _ in new], 1)], 1)
                    read = None if values is None else torch.cat([values, torch.stack([v for _, v in new], 1)], 1)
                    logits = wm(longer, actions=vectors, values=read).observation_logits[:, -1]
                    new.append(slot_value(logits, slot))
            frame = torch.stack([i for i, _ in new], 1)
        frames.append(frame)
        acts.append(a)
        if exact is not None:
            exact.append(torch.stack([v for _, v in new[K:]], 1))
        results.append((frame, reward, end, exact[-1] if exact is not None else None))
    return results


@pytest.mark.parametrize(
    "box, state, frames",
    [(False, False, True), (True, False, True), (True, True, True), (True, True, False)],
    ids=["discrete", "box", "state", "state-only"],
)
@pytest.mark.parametrize("prediction", ["autoregressive", "parallel"])
@pytest.mark.parametrize("primed, keep", [(1, None), (2, None), (3, 1), (2, 2)])
def test_greedy_imagination_equals_full_forward_passes(primed, keep, prediction, box, state, frames):
    wm = model(prediction, box, state, frames)
    K, V = wm.config.tokens_per_frame, wm.config.vocab_size  # noqa: N806
    g = torch.Generator().manual_seed(3)
    obs = torch.randint(0, max(V, 1), (2, primed, K), generator=g)
    states = torch.rand(2, primed, 2, generator=g) if state else None
    if box:  # continuous actions: float vectors of 2 components
        act = torch.randn(2, primed - 1, 2, generator=g)
        actions = [torch.randn(2, 2, generator=g) for _ in range(9)]
    else:
        act = torch.randint(0, A, (2, primed - 1), generator=g)
        actions = [torch.randint(0, A, (2,), generator=g) for _ in range(9)]  # forces several re-primes
    env = ImaginationEnv(wm, config=ImaginationConfig(temperature=0.0, reprime_steps=keep, precision="fp32"))
    assert torch.equal(env.reset(obs, act, states), obs[:, -1])
    expected = naive_rollout(wm, wm.observation_ids(obs, states), act, actions, keep or C - 1, states)
    for a, (frame, reward, end, value) in zip(actions, expected, strict=True):
        step = env.step(a)
        if prediction == "parallel":  # never predicted from the last step of a full context
            assert env.cache.size <= env.cache.max_tokens - wm.config.tokens_per_block
        assert torch.equal(step.tokens, frame[:, :K])
        if state:
            assert (frame[:, K:] >= V).all()  # state slots drew state bins
            torch.testing.assert_close(step.state, value)
            assert torch.equal(env.observations[:, -1, K:], frame[:, K:])
        else:
            assert step.state is None
        torch.testing.assert_close(step.reward, reward)
        assert torch.equal(step.terminated, end)


@pytest.mark.parametrize("frames", [True, False], ids=["frames", "state-only"])
@pytest.mark.parametrize("prediction", ["autoregressive", "parallel"])
def test_differentiable_imagination_has_the_gradients_of_full_forward_passes(prediction, frames):
    # Greedy tokens, two-hot rewards: the states and rewards imagined through the cache, re-primings included, and
    # their gradients with respect to every action equal those of a loop of full forward passes.
    wm = model(prediction, box=True, state=True, frames=frames, reward="twohot").requires_grad_(False)
    torch.manual_seed(1)
    obs = torch.randint(0, V, (3, 2, wm.config.tokens_per_frame))
    act = torch.rand(3, 1, 2) * 2 - 1
    states = torch.stack([torch.rand(3, 2), torch.rand(3, 2) * 4 - 2], -1)
    actions = [(torch.rand(3, 2) * 2 - 1).requires_grad_() for _ in range(6)]

    def total(states_and_rewards):
        return sum((s * torch.tensor([1.0, -0.5])).sum() + 0.3 * r.sum() for s, r in states_and_rewards)

    expected = naive_rollout(wm, wm.observation_ids(obs, states), act, actions, keep=1, states=states, graph=True)
    want = torch.autograd.grad(total([(s, r) for _, r, _, s in expected]), actions)
    env = ImaginationEnv(wm, config=ImaginationConfig(temperature=0, reprime_steps=1, differentiable=True))
    env.reset(obs, act, states)
    imagined = [env.step(a) for a in actions]
    for step, (frame, reward, _, state) in zip(imagined, expected, strict=True):
        assert torch.equal(step.tokens, frame[:, : wm.config.tokens_per_frame])
        torch.testing.assert_close(step.state, state)
        torch.testing.assert_close(step.reward, reward)
    got = torch.autograd.grad(total([(s.state, s.reward) for s in imagined]), actions)
    assert all(float(g.abs().sum()) > 0 for g in want)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # grad mode off: no graph, as for evaluation
        env.reset(obs, act, states)
        assert not env.step(actions[0]).state.requires_grad


def test_a_differentiable_imagination_needs_continuous_actions_and_fp32():
    with pytest.raises(ConfigError, match="REINFORCE"):
        ImaginationEnv(model(), config=ImaginationConfig(differentiable=True))
    with pytest.raises(ConfigError, match="fp32"):
        ImaginationConfig(differentiable=True, precision="bf16")


def test_sampling_is_seeded_and_done_is_sticky():
    wm = model()
    obs = torch.randint(0, V, (5, 2, K))
    act = torch.randint(0, A, (5, 1))
    runs = []
    for _ in range(2):
        env = ImaginationEnv(
            wm,
            config=ImaginationConfig(temperature=1.0, sample_terminations=True),
            generator=torch.Generator().manual_seed(7),
        )
        env.reset(obs, act)
        steps = [env.step(torch.full((5,), 1)) for _ in range(6)]
        runs.append(torch.stack([s.tokens for s in steps]))
        for earlier, later in zip(steps, steps[1:], strict=False):
            assert (later.done >= earlier.done).all()
            assert torch.equal(later.done, earlier.done | later.terminated)
    assert torch.equal(runs[0], runs[1])


def test_bad_priming_is_explained():
    env = ImaginationEnv(model())
    with pytest.raises(ValueError, match="Prime with 1 to 3 real steps"):
        env.reset(torch.zeros(1, C, K, dtype=torch.long), torch.zeros(1, C - 1, dtype=torch.long))
    with pytest.raises(ValueError, match="tokens per frame"):
        env.reset(torch.zeros(1, 2, K + 1, dtype=torch.long), torch.zeros(1, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="Expected 1 actions"):
        env.reset(torch.zeros(1, 2, K, dtype=torch.long))
    with pytest.raises(ValueError, match="no tokenizer"):
        env.reset(torch.zeros(1, 1, K, dtype=torch.long))
        env.frames()


def test_the_inference_copy_follows_the_model_and_never_changes_it():
    wm = model()
    copy = InferenceCopy(wm, torch.bfloat16)
    assert copy.model is not wm and next(copy.model.parameters()).dtype == torch.bfloat16
    with torch.no_grad():
        wm.observation_head[-1].bias.add_(1.0)
    wm.train()
    refreshed = copy.refresh()
    torch.testing.assert_close(
        refreshed.observation_head[-1].bias.float(), wm.observation_head[-1].bias, atol=1e-2, rtol=1e-2
    )
    assert refreshed.training and next(wm.parameters()).dtype == torch.float32
    assert InferenceCopy(wm, torch.float32).model is wm  # no copy where the dtype is the model's


def test_bf16_imagination_agrees_with_fp32_and_leaves_the_model_in_fp32(monkeypatch):
    import iris_wm.runtime.hardware as hardware

    wm = model("parallel")
    before = {k: v.clone() for k, v in wm.state_dict().items()}
    obs, act = torch.randint(0, V, (8, 2, K)), torch.randint(0, A, (8, 1))
    frames = {}
    for precision in ("fp32", "bf16"):
        monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)  # a tiny model: emulation is fine here
        env = ImaginationEnv(wm, config=ImaginationConfig(temperature=0.0, precision=precision))
        env.reset(obs, act)
        frames[precision] = torch.stack([env.step(torch.full((8,), 1)).tokens for _ in range(3)])
    assert (frames["fp32"] == frames["bf16"]).float().mean() > 0.9  # bf16 rounding may flip a near tie
    assert all(torch.equal(before[k], v) for k, v in wm.state_dict().items())


def test_bf16_is_refused_where_the_cpu_would_only_emulate_it(monkeypatch):
    import iris_wm.runtime.hardware as hardware

    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(ValueError, match="without bf16 hardware.*'auto' or 'fp32'"):
        ImaginationEnv(model(), config=ImaginationConfig(precision="bf16"))
    assert ImaginationEnv(model(), config=ImaginationConfig(precision="auto")).model is not None
