"""FFM: the paper's sizes and initialisation, the aggregator's closed form, and refused options.

The memory contract (parallel == stepwise with resets, value and gradient) is checked in test_memory_contract.py.
"""

import math

import pytest
import torch

from conftest import compose_config
from recurl.memory import make_memory
from recurl.memory.ffm import FFM


def test_default_sizes_keep_the_papers_proportions():
    cell = FFM(64)
    assert (cell.trace_size, cell.context_size) == (8, 4)  # the paper's 32 x 4 at 256, scaled to 64
    assert FFM(256).trace_size == 32
    assert FFM(64, context_size=2).trace_size == 16
    (state,) = cell.initial_state(3, torch.device("cpu"), torch.float64)
    assert state.shape == (3, 4, 8, 2) and state.dtype == torch.float64  # S^T as (real, imaginary) pairs


def test_the_config_builds_the_papers_sizes():
    cfg = compose_config("memory=ffm").memory
    mem = make_memory("ffm", 5, cfg.hidden_size, cfg.num_layers, trace_size=cfg.trace_size,
                      context_size=cfg.context_size, scan_backend=cfg.scan_backend)
    assert [(c.trace_size, c.context_size) for c in mem.cells] == [(8, 4), (8, 4)]


def test_initial_decays_and_periods_span_the_papers_ranges():
    cell = FFM(64)
    alpha = cell.alpha.detach().double()
    assert alpha[0].item() == pytest.approx(math.log(100) / 1024, rel=1e-6)  # 1% left after 1024 steps
    assert alpha[-1].item() == pytest.approx(math.log(2), rel=1e-6)  # halves every step
    assert (alpha.diff() > 0).all()
    periods = 2 * math.pi / cell.omega.detach().double()
    torch.testing.assert_close(periods, torch.tensor([1.0, 342.0, 683.0, 1024.0], dtype=torch.float64))
    magnitude = torch.complex(*cell._gamma()).abs().view(4, 8)
    assert ((magnitude > 0) & (magnitude < 1)).all()  # every trace decays


def test_a_negative_alpha_still_decays():
    cell = FFM(16)
    with torch.no_grad():
        cell.alpha.neg_()
    assert (torch.complex(*cell._gamma()).abs() < 1).all()


def test_the_aggregate_is_the_decaying_complex_sum_of_gated_inputs():
    """S_T = sum_i gamma^(T-1-i) u_i, with u and gamma written out from the parameters as the docstring says."""
    cell = FFM(8, scan_backend="reference").double()
    x = torch.randn(2, 30, 8, dtype=torch.float64)
    _, (final,) = cell(x, cell.initial_state(2, x.device, x.dtype), torch.zeros(2, 30, dtype=torch.bool))
    m = cell.trace_size
    value, _, in_gate, _ = cell.pre(x).split([m, 8, m, 8], dim=-1)  # value, skip, input gate, output gate
    u = value * torch.sigmoid(in_gate)  # [B, T, m]
    gamma = torch.exp(-cell.alpha.abs()[:, None] + 1j * cell.omega[None, :])  # [m, c]
    lags = torch.arange(29, -1, -1, dtype=torch.float64)
    expected = (gamma ** lags[:, None, None] * u[..., None]).sum(1)  # [B, m, c]
    aggregate = torch.view_as_complex(final.contiguous()).transpose(1, 2)  # stored [B, c, m]
    torch.testing.assert_close(aggregate, expected.detach(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"context_size": 0}, "context_size must be a positive integer, got 0"),
        ({"context_size": -2}, "context_size must be a positive integer, got -2"),
        ({"trace_size": 0}, "trace_size must be a positive integer, got 0"),
        ({"context_size": 3}, r"2 \* context_size \(6\) must divide hidden_size 64.*give memory.trace_size"),
        ({"context_size": 64}, r"2 \* context_size \(128\) must divide hidden_size 64"),
    ],
)
def test_bad_options_are_refused_in_one_line(options, message):
    with pytest.raises(ValueError, match=message) as refused:
        make_memory("ffm", 3, 64, **options)
    assert "\n" not in str(refused.value)


def test_an_explicit_trace_size_frees_the_context_size():
    cell = FFM(64, trace_size=5, context_size=3)
    assert cell.mix.in_features == 2 * 5 * 3
