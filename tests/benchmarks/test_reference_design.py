"""The benchmark's rebuilt reference design computes the same function as our world model (issue 3), so the
side-by-side speed ratios in docs/BENCHMARKS.md compare the same arithmetic done two ways."""

import importlib.util
from pathlib import Path

import pytest
import torch

from sequence_model.world_model import WorldModel, WorldModelConfig

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "reference_design.py"
spec = importlib.util.spec_from_file_location("reference_design", PATH)
ref = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ref)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    ours = WorldModel(WorldModelConfig(vocab_size=512, tokens_per_frame=16, num_actions=4)).eval()
    theirs = ref.ReferenceWorldModel(num_actions=4).eval()
    ref.copy_weights(ours, theirs)
    return ours, theirs


def test_same_size_as_ours(models):
    ours, theirs = models
    assert sum(p.numel() for p in theirs.parameters()) == ours.num_parameters() == 8_447_493


def test_full_pass_and_loss_match_ours(models):
    ours, theirs = models
    B, T = 2, 20
    obs, actions = torch.randint(0, 512, (B, T, 16)), torch.randint(0, 4, (B, T))
    rewards, ends = torch.randint(-1, 2, (B, T)).float(), torch.zeros(B, T, dtype=torch.bool)
    ids = ours.interleave(obs, actions)
    with torch.no_grad():
        mine = ours(ids)
        obs_logits, reward_logits, end_logits = theirs(ids)
        # Ours computes the observation head everywhere; the reference only where it predicts an observation.
        reads = ours.predicts_observation(torch.arange(ids.shape[1]))
        torch.testing.assert_close(obs_logits, mine.observation_logits[:, reads], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(reward_logits, mine.reward_logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(end_logits, mine.termination_logits, atol=1e-5, rtol=1e-5)
        losses = ours.loss(obs, actions, rewards, ends, torch.ones(B, T, dtype=torch.bool))
        theirs_loss = theirs.loss(ref.GivenTokens, obs, actions, rewards, ends)  # the batch holds tokens already
    torch.testing.assert_close(theirs_loss, losses.total, atol=1e-5, rtol=1e-5)


def test_cached_decoding_matches_the_full_pass(models):
    _, theirs = models
    ids = torch.cat([torch.randint(0, 512, (1, 16)), torch.randint(0, 4, (1, 1)), torch.randint(0, 512, (1, 5))], 1)
    with torch.no_grad():
        full = theirs(ids)[0]
        cache = theirs.new_cache(1)
        parts = [theirs(ids[:, :16], cache)[0]] + [theirs(ids[:, i : i + 1], cache)[0] for i in range(16, ids.shape[1])]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)
