"""minLSTM's normalised gates f / (f + i), i / (f + i) are computed in log space: the same values where the ratio is
finite, and finite values and gradients where both sigmoids underflow (0 / 0 in the plain form)."""

import pytest
import torch

from recurl.kernels import linear_scan
from recurl.memory import MEMORIES
from recurl.memory.cell import positive_activation

SIZE = 4


def saturated_cell(scan_backend="torch"):
    """A float32 minLSTM whose forget and input pre-activations are -100 whatever the input: both sigmoids are 0."""
    cell = MEMORIES["minlstm"](SIZE, scan_backend=scan_backend)
    with torch.no_grad():
        cell.proj.weight[: 2 * SIZE] = 0
        cell.proj.bias[: 2 * SIZE] = -100
    return cell


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_gates_equal_the_plain_ratio_where_it_is_finite(dtype, tol):
    cell = MEMORIES["minlstm"](SIZE).to(dtype)
    z = 8 * torch.randn(6, 50, 3 * SIZE, dtype=dtype)  # wide: saturated gates, of one or the other sign, included
    forget, keep, candidate = z.chunk(3, dim=-1)
    f, i = torch.sigmoid(forget), torch.sigmoid(keep)
    a, b = cell.gates(z)
    torch.testing.assert_close(a, f / (f + i), rtol=tol, atol=tol)
    torch.testing.assert_close(b, i / (f + i) * positive_activation(candidate), rtol=tol, atol=tol)


def test_both_pre_activations_far_below_zero_give_finite_values_and_gradients():
    cell = saturated_cell()
    x = torch.randn(2, 9, SIZE, requires_grad=True)
    h0 = torch.randn(2, SIZE, requires_grad=True)
    resets = torch.zeros(2, 9, dtype=torch.bool)
    resets[1, 4] = True
    h, _ = cell(x, (h0,), resets)
    # f' = i' = 1/2: h_t = h_{t-1} / 2 + g(c_t) / 2
    half = torch.where(resets[..., None], 0.0, torch.full_like(h, 0.5))
    candidate = positive_activation(cell.proj(x)[..., 2 * SIZE :])
    torch.testing.assert_close(h, linear_scan(half, 0.5 * candidate, h0, backend="reference"))
    step, _ = cell.step(x[:, 0], (h0,), resets[:, 0])
    torch.testing.assert_close(step, h[:, 0])
    grads = torch.autograd.grad((h * torch.randn_like(h)).sum(), [x, h0, *cell.parameters()])
    assert all(torch.isfinite(g).all() for g in grads)
    assert (grads[3][: 2 * SIZE] != 0).all()  # the gates' biases do get a gradient
