"""``sample_rows``: each row's action comes from its own generator, whatever the rows beside it, and follows the head's
distribution."""

import numpy as np
import pytest
import torch
from gymnasium import spaces

from recurl.agents.heads import make_action_head

SPACES = {
    "discrete": spaces.Discrete(5, start=2),
    "multidiscrete": spaces.MultiDiscrete(np.array([[2, 3], [4, 5]])),
    "box": spaces.Box(-1.0, 1.0, (3,)),
}


def generators(seeds):
    return [torch.Generator().manual_seed(seed) for seed in seeds]


@pytest.mark.parametrize("name", list(SPACES))
def test_a_rows_sample_depends_on_its_own_generator_alone(name):
    torch.manual_seed(0)
    head = make_action_head(SPACES[name], 4)
    features = torch.randn(5, 4)
    with torch.no_grad():
        batch = head(features).sample_rows(generators([10, 11, 12, 13, 14]))
        torch.manual_seed(123)  # torch's global stream is not read
        alone = head(features[2:3]).sample_rows(generators([12]))
        reordered = head(features.flip(0)).sample_rows(generators([14, 13, 12, 11, 10]))
        other_seeds = head(features).sample_rows(generators([20, 21, 22, 23, 24]))
    assert torch.equal(alone[0], batch[2])
    assert torch.equal(reordered, batch.flip(0))
    assert not torch.equal(other_seeds, batch)


def test_categorical_rows_follow_the_softmax():
    """Chi-square test of 20k rows, each from a generator of its own, against softmax(logits) (p < 0.001 fails)."""
    head = make_action_head(spaces.Discrete(4), 1)
    with torch.no_grad():
        head.logits.weight.zero_()
        head.logits.bias.copy_(torch.tensor([0.0, 1.0, -1.0, 2.0]))
        draws = 20_000
        actions = head(torch.zeros(draws, 1)).sample_rows(generators(range(draws)))
    counts = torch.bincount(actions, minlength=4).double()
    expected = torch.softmax(head.logits.bias.double(), -1) * draws
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < 16.27  # the 0.999 quantile of chi-square with 3 degrees of freedom


def test_gaussian_rows_have_the_heads_mean_and_std():
    head = make_action_head(spaces.Box(-1.0, 1.0, (2,)), 1)
    with torch.no_grad():
        head.mean.weight.zero_()
        head.mean.bias.copy_(torch.tensor([0.5, -2.0]))
        head.log_std.copy_(torch.tensor([0.0, np.log(3.0)]))
        draws = 20_000
        actions = head(torch.zeros(draws, 1)).sample_rows(generators(range(draws)))
    # Standard errors: std / sqrt(20k) for the mean (0.007 and 0.021), about std / sqrt(40k) for the std.
    assert torch.allclose(actions.mean(0), torch.tensor([0.5, -2.0]), atol=0.05)
    assert torch.allclose(actions.std(0), torch.tensor([1.0, 3.0]), rtol=0.03)
