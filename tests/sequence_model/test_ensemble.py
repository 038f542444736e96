"""An ensemble of world models imagines as one: the members' mixture drives the trajectory, and each imagined
step's disagreement (mutual information of the members' token, reward and end distributions) equals the one
computed from every member's full forward pass over the imagined sequence; identical members agree exactly and
imagine what one of them imagines alone."""

import copy
import math

import pytest
import torch

from iris_wm.envs.imagination import ImaginationConfig, ImaginationEnv
from sequence_model.ensemble import WorldModelEnsemble, mixture_and_information, mutual_information
from sequence_model.gpt import GPTConfig
from sequence_model.world_model import WorldModel, WorldModelConfig

K, V, A, C, M = 3, 13, 4, 6, 3


def members(prediction: str, same: bool = False) -> list[WorldModel]:
    cfg = WorldModelConfig(
        vocab_size=V,
        tokens_per_frame=K,
        num_actions=A,
        context_steps=C,
        gpt=GPTConfig(num_layers=2, num_heads=2, embed_dim=16, dropout=0.0),
        prediction=prediction,
    )
    out = []
    for seed in range(M):
        torch.manual_seed(0 if same else seed)
        out.append(WorldModel(cfg).eval())
    return out


def test_mutual_information_is_zero_for_agreement_and_log_m_for_certain_disagreement():
    same = torch.randn(1, 5, 7).expand(M, 5, 7)
    assert torch.allclose(mutual_information(same), torch.zeros(5), atol=1e-6)
    certain = torch.full((M, M), -1e4).fill_diagonal_(1e4)  # member m is sure of outcome m
    assert mutual_information(certain[:, None]).item() == pytest.approx(math.log(M), abs=1e-5)
    assert torch.allclose(mixture_and_information(certain[:, None])[0].exp(), torch.full((1, M), 1 / M))


@pytest.mark.parametrize("prediction", ["autoregressive", "parallel"])
def test_ensemble_imagination_equals_full_forward_passes_of_every_member(prediction):
    models = members(prediction)
    ensemble = WorldModelEnsemble(models).eval()
    g = torch.Generator().manual_seed(1)
    obs, B, steps = torch.randint(0, V, (2, 1, K), generator=g), 2, 3
    actions = torch.randint(0, A, (steps, B), generator=g)
    env = ImaginationEnv(ensemble, config=ImaginationConfig(temperature=0.0, precision="fp32"))
    env.reset(obs)
    frames, imagined = [obs[:, 0]], []
    for t in range(steps):
        imagined.append(env.step(actions[t]))
        frames.append(imagined[-1].tokens)
    per_block = K + 1
    with torch.no_grad():
        for t in range(steps):
            ids = models[0].interleave(torch.stack(frames[: t + 1], 1), actions[: t + 1].T)
            if prediction == "parallel":
                outs = [m(ids) for m in models]
                token_logits = torch.stack([o.observation_logits[:, -per_block : -per_block + K] for o in outs])
            else:  # slot j of frame t + 1 is predicted after its slots before j
                full = torch.cat([ids, frames[t + 1]], 1)
                outs = [m(full) for m in models]
                token_logits = torch.stack([o.observation_logits[:, -K - 1 : -1] for o in outs])
            assert torch.equal(mixture_and_information(token_logits)[0].argmax(-1), frames[t + 1])
            step = imagined[t].disagreement
            assert torch.allclose(step.tokens, mutual_information(token_logits).mean(-1), atol=1e-5)
            reward = torch.stack([o.reward_logits[:, t] for o in outs])
            end = torch.stack([o.termination_logits[:, t] for o in outs])
            assert torch.allclose(step.reward, mutual_information(reward), atol=1e-5)
            assert torch.allclose(step.end, mutual_information(end), atol=1e-5)
            assert bool((step.tokens > 0).all())


def test_identical_members_agree_and_imagine_what_one_imagines():
    models = members("parallel", same=True)
    g = torch.Generator().manual_seed(2)
    obs, actions = torch.randint(0, V, (4, 2, K), generator=g), torch.randint(0, A, (4, 1), generator=g)
    config = ImaginationConfig(temperature=1.0, precision="fp32")
    alone = ImaginationEnv(copy.deepcopy(models[0]), config=config, generator=torch.Generator().manual_seed(3))
    together = ImaginationEnv(WorldModelEnsemble(models), config=config, generator=torch.Generator().manual_seed(3))
    alone.reset(obs, actions)
    together.reset(obs, actions)
    for t in range(6):  # past the context: re-priming included
        a = torch.full((4,), t % A)
        one, many = alone.step(a), together.step(a)
        assert torch.equal(one.tokens, many.tokens) and torch.allclose(one.reward, many.reward, atol=1e-6)
        assert float(many.disagreement.tokens.abs().max()) < 1e-5 and one.disagreement is None


def test_members_must_share_a_configuration():
    a, b = members("parallel")[:2]
    with pytest.raises(ValueError, match="at least 2"):
        WorldModelEnsemble([a])
    other = WorldModel(WorldModelConfig(vocab_size=V + 1, tokens_per_frame=K, num_actions=A, context_steps=C))
    with pytest.raises(ValueError, match="same world-model config and a different seed"):
        WorldModelEnsemble([a, other])
