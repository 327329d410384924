"""The fused minGRU/minLSTM Triton kernels (gates + resets + scan in one pass) agree with the cells' torch path, in
value and gradient, and keep a reset's cut exact. Run on CPU under Triton's interpreter when there is no GPU."""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must precede the kernels' definition
pytest.importorskip("triton")

from recurl.kernels import linear_scan, mingru_scan_triton, minlstm_scan_triton  # noqa: E402
from recurl.memory import MEMORIES  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
KERNELS = {"mingru": mingru_scan_triton, "minlstm": minlstm_scan_triton}
CELLS = list(KERNELS)


def _cell(name, size, dtype=torch.float64):
    return MEMORIES[name](size, scan_backend="triton").to(DEVICE, dtype)


def _inputs(cell, batch, length, seed=0, scale=2.0):
    """Pre-activations wide enough to saturate some gates, episode starts at random and at t = 0 in row 0."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, length, cell.proj.out_features, generator=gen, dtype=torch.float64) * scale
    resets = torch.rand(batch, length, generator=gen) < 0.15
    resets[0, 0] = True
    h0 = torch.randn(batch, cell.size, generator=gen, dtype=torch.float64)
    weight = torch.randn(batch, length, cell.size, generator=gen, dtype=torch.float64)
    return z, resets, h0, weight


def _unfused(cell, z, resets, h0):
    """The torch path of ``LinearRecurrentCell.forward``: gates, then the reference scan."""
    a, b = cell.gates(z)
    return linear_scan(torch.where(resets[..., None], 0.0, a), b, h0, backend="reference")


def _value_and_grads(scan, z, resets, h0, weight, dtype, device):
    z = z.to(device, dtype).requires_grad_()
    h0 = None if h0 is None else h0.to(device, dtype).requires_grad_()
    h = scan(z, resets.to(device), h0)
    inputs = [z] + ([] if h0 is None else [h0])
    return [h, *torch.autograd.grad((h * weight.to(device, dtype)).sum(), inputs)]


def _check(name, batch, length, size, dtype, tol, with_h0=True, seed=0, **config):
    cell = _cell(name, size, dtype)
    z, resets, h0, weight = _inputs(cell, batch, length, seed)
    h0 = h0 if with_h0 else None
    reference_cell = _cell(name, size).cpu()
    reference_dtype = torch.float64 if dtype in (torch.float32, torch.float64) else torch.float32
    if reference_dtype != torch.float64:  # half types: the reference scans the same rounded inputs in float32
        z, h0 = z.to(dtype).to(torch.float64), None if h0 is None else h0.to(dtype).to(torch.float64)
    fused = _value_and_grads(lambda z, r, h0: KERNELS[name](z, r, h0, **config), z, resets, h0, weight, dtype, DEVICE)
    expected = _value_and_grads(
        lambda z, r, h0: _unfused(reference_cell, z, r, h0), z, resets, h0, weight, reference_dtype, "cpu"
    )
    assert fused[0].dtype == dtype
    for got, want in zip(fused, expected, strict=True):
        torch.testing.assert_close(got.cpu().double(), want.double(), rtol=tol, atol=tol)


# (B, T, D): one step; odd sizes; several time tiles with a partial last one; several channel blocks with a tail.
SHAPES = [(1, 1, 1), (3, 7, 5), (2, 70, 3), (2, 9, 37)]


@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", CELLS)
def test_float32_matches_the_torch_path(name, shape, with_h0):
    _check(name, *shape, torch.float32, 1e-5, with_h0=with_h0, seed=sum(shape))


@pytest.mark.parametrize("config", [dict(chunk=1, block_d=2), dict(chunk=8, block_d=4)])
@pytest.mark.parametrize("name", CELLS)
def test_tile_sizes_do_not_change_the_result(name, config):
    """T = 9 and D = 5: nine one-row tiles or two with a partial last one; channel blocks with a tail in both."""
    _check(name, 2, 9, 5, torch.float32, 1e-5, **config)


@pytest.mark.parametrize("name", CELLS)
def test_float64_matches_to_rounding(name):
    _check(name, 3, 45, 6, torch.float64, 1e-12)


@pytest.mark.parametrize("name", CELLS)
def test_bfloat16_accumulates_in_float32(name):
    _check(name, 2, 40, 7, torch.bfloat16, 1e-2)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the interpreter's numpy, on exp(inf)
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("name", CELLS)
def test_reset_cuts_off_inf_and_nan(name):
    cell = _cell(name, 3, torch.float32)
    z, resets, h0, _ = _inputs(cell, 2, 30)
    z, h0 = z.float(), h0.float()
    resets[:, 20] = True
    z[0, 5], z[1, 12] = float("inf"), float("nan")
    weight = torch.zeros(2, 30, 3)
    weight[:, 20:] = torch.randn(2, 10, 3)  # a loss on what follows the reset only
    h, grad_z, _ = _value_and_grads(cell.fused_scan, z, resets, h0, weight, torch.float32, DEVICE)
    h, grad_z = h.cpu(), grad_z.cpu()
    assert not torch.isfinite(h[0, 5]).all() and torch.isnan(h[1, 12]).all()  # the bad values are really there
    clean = _value_and_grads(cell.fused_scan, z[:, 20:], resets[:, 20:], None, weight[:, 20:], torch.float32, DEVICE)
    torch.testing.assert_close(h[:, 20:], clean[0].cpu())
    torch.testing.assert_close(grad_z[:, 20:], clean[1].cpu())


def test_minlstm_with_both_pre_activations_far_below_zero_is_finite():
    """f / (f + i) would be 0 / 0 where both sigmoids underflow float32; the kernel's log-space gates give 1/2, in
    value and gradient as the torch path (computed in float64, where nothing underflows)."""
    cell = _cell("minlstm", 5, torch.float32)
    z, resets, h0, weight = _inputs(cell, 2, 21)
    z[:, :, [0, 2, 4, 5, 7, 9]] = -100  # forget and input pre-activations of channels 0, 2 and 4 (slices of 5)
    fused = _value_and_grads(cell.fused_scan, z, resets, h0, weight, torch.float32, DEVICE)
    expected = _value_and_grads(
        lambda z, r, h0: _unfused(_cell("minlstm", 5).cpu(), z, r, h0), z, resets, h0, weight, torch.float64, "cpu"
    )
    for got, want in zip(fused, expected, strict=True):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got.cpu().double(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", CELLS)
def test_pre_activations_at_exactly_zero_take_the_same_gradient(name):
    """g's two pieces meet at 0 with different slopes (1 and sigmoid'(0) = 1/4); the kernel and the torch path must
    pick the same one there, as zero-initialised weights give exactly 0."""
    cell = _cell(name, 4, torch.float32)
    z, resets, h0, weight = _inputs(cell, 2, 9)
    z[:, ::2] = 0.0
    fused = _value_and_grads(cell.fused_scan, z, resets, h0, weight, torch.float32, DEVICE)
    expected = _value_and_grads(
        lambda z, r, h0: _unfused(_cell(name, 4).cpu(), z, r, h0), z, resets, h0, weight, torch.float64, "cpu"
    )
    for got, want in zip(fused, expected, strict=True):
        torch.testing.assert_close(got.cpu().double(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", CELLS)
def test_layer_uses_the_fused_kernel_and_matches_its_step_loop(name, monkeypatch):
    cell = _cell(name, 5)
    calls = []
    fused = cell.fused_scan
    monkeypatch.setattr(cell, "fused_scan", lambda *args: calls.append(1) or fused(*args))
    x = torch.randn(3, 17, 5, dtype=torch.float64, device=DEVICE, requires_grad=True)
    resets = torch.rand(3, 17, device=DEVICE) < 0.2
    state = (torch.randn(3, 5, dtype=torch.float64, device=DEVICE),)
    h, (last,) = cell(x, state, resets)
    assert calls == [1]
    stepped = []
    for t in range(17):
        y, state = cell.step(x[:, t], state, resets[:, t])
        stepped.append(y)
    stepped = torch.stack(stepped, dim=1)
    torch.testing.assert_close(h, stepped)
    torch.testing.assert_close(last, state[0])
    weight = torch.randn_like(h)
    torch.testing.assert_close(*[torch.autograd.grad((y * weight).sum(), x)[0] for y in (h, stepped)])


def test_bad_shapes_are_refused():
    z = torch.randn(2, 5, 7, device=DEVICE)
    with pytest.raises(ValueError, match=r"z must be \[B, T, 2 \* D\] and resets \[B, T\]"):
        mingru_scan_triton(z, torch.zeros(2, 5, dtype=torch.bool, device=DEVICE))
    with pytest.raises(ValueError, match=r"h0 must be \[B, D\] = \(2, 3\)"):
        mingru_scan_triton(z[..., :6], torch.zeros(2, 5, dtype=torch.bool, device=DEVICE), torch.zeros(2, 4))
