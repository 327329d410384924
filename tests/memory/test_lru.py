"""LRU: ring initialisation, the gamma normalisation, the output equation, and refused options.

The memory contract (parallel == stepwise with resets, value and gradient) is checked in test_memory_contract.py.
"""

import math

import pytest
import torch

from conftest import compose_config
from recurl.memory import make_memory
from recurl.memory.lru import LRU


@pytest.mark.parametrize("r_min, r_max, max_phase, options", [
    (0.9, 0.999, math.pi / 10, {}),  # the defaults
    (0.0, 1.0, 2 * math.pi, {"r_min": 0.0, "r_max": 1.0, "max_phase": 2 * math.pi}),  # the paper's code's
    (0.4, 0.5, 1.0, {"r_min": 0.4, "r_max": 0.5, "max_phase": 1.0}),
])
def test_lambda_starts_on_the_ring(r_min, r_max, max_phase, options):
    cell = LRU(32, state_size=512, **options)
    lam = torch.complex(*cell._lambda()).detach()
    assert lam.shape == (512,)
    assert (lam.abs() >= r_min - 1e-6).all() and (lam.abs() <= r_max + 1e-6).all()
    phase = cell.theta_log.detach().exp()  # arg(lambda) before wrapping to (-pi, pi]
    assert (phase > 0).all() and (phase <= max_phase + 1e-6).all()
    # uniform in area on the ring: |lambda|^2 is uniform between r_min^2 and r_max^2
    spread = r_max**2 - r_min**2
    assert lam.abs().square().mean().item() == pytest.approx((r_min**2 + r_max**2) / 2, abs=0.05 * spread)


def test_gamma_starts_at_the_normalisation_of_lambda_when_asked_and_at_one_by_default():
    cell = LRU(16, r_min=0.5, r_max=0.99, normalize=True)
    radius = torch.complex(*cell._lambda()).detach().abs()
    torch.testing.assert_close(cell.gamma_log.detach().exp(), (1 - radius.square()).sqrt())
    assert torch.equal(LRU(16).gamma_log.detach(), torch.zeros(8))


def test_the_state_holds_as_many_reals_as_the_hidden_size():
    assert [LRU(size).state_size for size in (64, 5, 1)] == [32, 3, 1]
    (state,) = LRU(64).initial_state(3, torch.device("cpu"), torch.float32)
    assert state.shape == (3, 32, 2)


def test_the_normalisation_keeps_the_state_at_the_scale_of_its_input_near_the_unit_circle():
    """For white-noise inputs E|h|^2 = gamma^2 E|Bx|^2 / (1 - |lambda|^2) = E|Bx|^2, where |lambda| -> 1 would
    otherwise make it 1 / (1 - |lambda|^2) (50 to 500 times here) larger."""
    cell = LRU(16, state_size=8, r_min=0.99, r_max=0.999, normalize=True, scan_backend="reference").double()
    x = torch.randn(64, 3000, 16, dtype=torch.float64)
    with torch.no_grad():
        _, (final,) = cell(x, cell.initial_state(64, x.device, x.dtype), torch.zeros(64, 3000, dtype=torch.bool))
        state_power = final.square().sum(-1).mean(0)  # E|h_n|^2 over the batch, per channel
        input_power = cell.input_proj.weight.view(8, 2, 16).square().sum((1, 2))  # E|(B x)_n|^2 for x ~ N(0, I)
    ratio = state_power / input_power
    assert (ratio > 0.5).all() and (ratio < 2).all(), ratio


def test_the_output_is_the_real_part_of_c_h_plus_d_x_through_gelu_and_glu():
    cell = LRU(6, state_size=5).double()
    x = torch.randn(3, 6, dtype=torch.float64)
    (state,) = cell.initial_state(3, x.device, x.dtype)
    state = torch.randn_like(state)
    out, (new,) = cell.step(x, (state,), torch.zeros(3, dtype=torch.bool))
    w_b = cell.input_proj.weight.view(5, 2, 6)
    b = torch.complex(w_b[:, 0], w_b[:, 1])  # B [N, H]
    w_c = cell.output_proj.weight.view(6, 5, 2)
    c = torch.complex(w_c[..., 0], -w_c[..., 1])  # C [H, N]
    h = torch.complex(*cell._lambda()) * torch.view_as_complex(state) + cell.gamma_log.exp() * (x.to(b.dtype) @ b.T)
    torch.testing.assert_close(torch.view_as_complex(new.contiguous()), h)
    y = (h @ c.T).real + cell.skip * x
    value, gate = cell.glu(torch.nn.functional.gelu(y)).chunk(2, dim=-1)
    torch.testing.assert_close(out, value * torch.sigmoid(gate))


def test_parameters_stay_real_when_the_module_changes_dtype():
    mem = make_memory("lru", 3, 8).double()
    assert all(p.dtype == torch.float64 for p in mem.parameters())
    assert all(s.dtype == torch.float64 for s in mem.initial_state(2))


def test_the_config_builds():
    cfg = compose_config("memory=lru").memory
    options = {k: v for k, v in cfg.items() if k not in ("name", "hidden_size", "num_layers")}
    mem = make_memory("lru", 5, cfg.hidden_size, cfg.num_layers, **options)
    assert [c.state_size for c in mem.cells] == [32, 32]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"r_min": 2}, r"r_min must be in \[0, 1\), got 2"),
        ({"r_min": -0.1}, r"r_min must be in \[0, 1\)"),
        ({"r_min": 1.0}, r"r_min must be in \[0, 1\)"),
        ({"r_min": 0.5, "r_max": 0.5}, r"r_max must be in \(r_min, 1\] = \(0.5, 1\], got 0.5"),
        ({"r_max": 1.01}, r"r_max must be in \(r_min, 1\]"),
        ({"max_phase": 0}, r"max_phase must be in \(0, 2 pi\]"),
        ({"max_phase": 7}, r"max_phase must be in \(0, 2 pi\]"),
        ({"state_size": 0}, "state_size must be a positive integer, got 0"),
        ({"scan_backend": "fast"}, "unknown scan backend 'fast'"),
    ],
)
def test_bad_options_are_refused_in_one_line(options, message):
    with pytest.raises(ValueError, match=message) as refused:
        make_memory("lru", 3, 8, **options)
    assert "\n" not in str(refused.value)
