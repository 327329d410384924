"""The Triton linear_scan backend agrees with the reference loop, in value and gradient, including zero-gate cuts.

Without a GPU the kernels run on CPU under Triton's interpreter (slow: shapes are small and odd on purpose).
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must precede the kernels' definition
pytest.importorskip("triton")

from recurl.kernels import linear_scan, triton_common  # noqa: E402
from recurl.kernels.linear_scan import triton_scan  # noqa: E402
from recurl.kernels.linear_scan.triton_scan import linear_scan_triton  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _inputs(batch, length, dim, dtype=torch.float32, seed=0):
    """Gates in [0, 1) with zeros at random positions (and at t = 0 in every other channel, to cut h0 off)."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(batch, length, dim, generator=gen)
    a[torch.rand(batch, length, dim, generator=gen) < 0.2] = 0
    a[:, 0, ::2] = 0
    b = torch.randn(batch, length, dim, generator=gen)
    h0 = torch.randn(batch, dim, generator=gen)
    weight = torch.randn(batch, length, dim, generator=gen)
    return [x.to(dtype) for x in (a, b, h0, weight)]


def _value_and_grads(scan, a, b, h0, weight, device="cpu"):
    a, b = a.to(device).requires_grad_(), b.to(device).requires_grad_()
    h0 = None if h0 is None else h0.to(device).requires_grad_()
    h = scan(a, b, h0)
    inputs = [a, b] + ([] if h0 is None else [h0])
    return [h, *torch.autograd.grad((h * weight.to(device)).sum(), inputs)]


def _reference(a, b, h0, weight, dtype=torch.float64):
    cast = [None if x is None else x.to(dtype) for x in (a, b, h0, weight)]
    return _value_and_grads(lambda a, b, h0: linear_scan(a, b, h0, backend="reference"), *cast)


def _triton(a, b, h0, weight, **config):
    return _value_and_grads(lambda a, b, h0: linear_scan_triton(a, b, h0, **config), a, b, h0, weight, DEVICE)


def _assert_all_close(got, expected, tol, dtype):
    for g, e in zip(got, expected, strict=True):
        assert g.dtype == dtype
        torch.testing.assert_close(g.cpu().double(), e.double(), rtol=tol, atol=tol, equal_nan=True)


# (B, T, D, chunk, block_d): odd sizes, several D-blocks with a masked tail, several time tiles with a partial last one,
# and chunk=1, the strictly sequential walk. None = the defaults.
SHAPES = [
    (1, 1, 1, None, None),
    (3, 7, 5, None, None),
    (1, 33, 70, None, None),
    (3, 130, 5, None, None),
    (3, 33, 70, 1, 16),
    (1, 130, 5, 8, 2),
]


@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_float32_matches_reference(shape, with_h0):
    batch, length, dim, chunk, block_d = shape
    a, b, h0, weight = _inputs(batch, length, dim, seed=length + dim)
    h0 = h0 if with_h0 else None
    got = _triton(a, b, h0, weight, chunk=chunk, block_d=block_d)
    _assert_all_close(got, _reference(a, b, h0, weight), 1e-5, torch.float32)


def test_float64_matches_reference_to_rounding():
    a, b, h0, weight = _inputs(2, 45, 6, dtype=torch.float64)
    got = _triton(a, b, h0, weight, chunk=8, block_d=4)
    _assert_all_close(got, _reference(a, b, h0, weight), 1e-12, torch.float64)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("with_h0", [False, True])
def test_half_precision_accumulates_in_float32(dtype, with_h0):
    a, b, h0, weight = _inputs(3, 40, 7, dtype=dtype)  # rounded inputs; the reference scans them in float32
    h0 = h0 if with_h0 else None
    got = _triton(a, b, h0, weight, chunk=16)
    expected = _reference(a, b, h0, weight, dtype=torch.float32)
    assert got[-1].dtype == dtype and (h0 is None or got[-1].dtype == dtype)
    _assert_all_close(got[:3], expected[:3], 1e-2, dtype)
    if with_h0:
        torch.testing.assert_close(got[3].float().cpu(), expected[3], rtol=1e-2, atol=1e-2)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the interpreter's numpy, on inf * 0
@pytest.mark.parametrize("chunk", [1, 4, None])
def test_zero_gate_cuts_off_inf_and_nan(chunk):
    a, b, h0, _ = _inputs(2, 40, 3)
    a[a == 0] = 0.5
    b[0, 5], b[1, 12] = float("inf"), float("nan")
    a[0, 21], a[:, 30] = 0, 0
    h0[1] = float("inf")  # cut off by the gate at t = 0 in channels 0 and 2 ...
    a[1, 0] = 0  # ... and now in all of them
    weight = torch.zeros(2, 40, 3)
    weight[0, 21:], weight[1, 30:] = torch.randn(19, 3), torch.randn(10, 3)  # a loss on what follows the cuts only
    h, grad_a, grad_b, grad_h0 = _triton(a, b, h0, weight, chunk=chunk)
    h, grad_a, grad_b, grad_h0 = h.cpu(), grad_a.cpu(), grad_b.cpu(), grad_h0.cpu()
    assert not torch.isfinite(h[0, 5]).any() and torch.isnan(h[1, 12]).all()  # the bad values are really there
    assert torch.isfinite(h[0, 21:]).all() and torch.isfinite(h[1, 30:]).all()
    clean = _triton(a[:, 30:], b[:, 30:], None, weight[:, 30:], chunk=chunk)
    torch.testing.assert_close(h[:, 30:], clean[0].cpu())
    # Gradients: finite from each cut on, nothing into b or h0 through a cut, and a cut gate gets exactly 0.
    assert torch.isfinite(grad_a[0, 21:]).all() and torch.isfinite(grad_a[1, 30:]).all()
    torch.testing.assert_close(grad_b[:, 30:], clean[2].cpu())
    assert (grad_b[0, :21] == 0).all() and (grad_b[1, :30] == 0).all() and (grad_h0 == 0).all()
    assert (grad_a[a == 0] == 0).all()
    # Elsewhere the reference's, NaNs included (0 * inf before the cuts).
    expected = _reference(a, b, h0, weight)
    _assert_all_close([h, grad_a, grad_b, grad_h0], expected, 1e-5, torch.float32)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_cut_at_start_blocks_even_an_infinite_gradient_to_h0():
    a, b, h0, _ = _inputs(1, 3, 2)
    a[0, 0] = torch.tensor([0.0, 0.5])
    weight = torch.tensor([[[float("inf"), 1.0], [1.0, 1.0], [1.0, 1.0]]])
    grad_h0 = _triton(a, b, h0, weight)[3].cpu()
    a1, a2 = a[0, 1, 1], a[0, 2, 1]
    torch.testing.assert_close(grad_h0, torch.stack([torch.tensor(0.0), 0.5 * (1 + a1 * (1 + a2))])[None])


def test_strided_and_mixed_dtype_inputs():
    a, b, h0, weight = _inputs(2, 19, 6)
    a_strided = a.transpose(1, 2).contiguous().transpose(1, 2)  # [B, T, D] with D not the fastest dimension
    b_strided = torch.stack([b, -b], dim=-1)[..., 0]  # D with stride 2
    got = _triton(a_strided, b_strided, h0.double(), weight)
    assert not a_strided.is_contiguous() and not b_strided.is_contiguous()
    _assert_all_close(got[:3], _reference(a, b, h0, weight)[:3], 1e-5, torch.float32)
    assert got[3].dtype == torch.float64


def test_dispatch():
    a, b, h0, _ = _inputs(2, 9, 4)
    a, b, h0 = a.to(DEVICE), b.to(DEVICE), h0.to(DEVICE)
    expected = linear_scan(a.cpu(), b.cpu(), h0.cpu(), backend="reference")
    torch.testing.assert_close(linear_scan(a, b, h0, backend="triton").cpu(), expected)
    torch.testing.assert_close(linear_scan(a, b, h0).cpu(), expected)  # auto: triton on CUDA, torch on CPU


def test_auto_on_cpu_uses_torch(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("auto must not pick triton for CPU tensors")

    monkeypatch.setattr(triton_scan, "linear_scan_triton", fail)
    a, b, h0, _ = _inputs(2, 9, 4)
    torch.testing.assert_close(linear_scan(a, b, h0), linear_scan(a, b, h0, backend="torch"))


def test_cpu_tensors_need_the_interpreter(monkeypatch):
    monkeypatch.setattr(triton_common, "INTERPRETED", False)
    a, b, _, _ = _inputs(1, 3, 2)
    with pytest.raises(ValueError, match="CUDA tensors.*TRITON_INTERPRET=1"):
        linear_scan(a, b, backend="triton")


def test_empty_sequence():
    a = torch.rand(2, 0, 3, device=DEVICE, requires_grad=True)
    h0 = torch.randn(2, 3, device=DEVICE, requires_grad=True)
    h = linear_scan_triton(a, torch.zeros_like(a), h0)
    assert h.shape == (2, 0, 3)
    (grad_h0,) = torch.autograd.grad(h.sum() + h0.sum(), [h0])
    torch.testing.assert_close(grad_h0, torch.ones_like(h0))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("chunk", [1, 4, 32])
def test_nan_gate_before_a_cut_stays_behind_it(chunk):
    """Inside a tile the gates of a span are multiplied: nan * 0 must still read as a cut."""
    a, b, h0, weight = _inputs(1, 20, 3)
    a[a == 0] = 0.5
    a[0, 7], a[0, 12] = float("nan"), 0
    h, grad_a, grad_b, _ = _triton(a, b, h0, weight, chunk=chunk)
    assert torch.isnan(h[0, 7]).all()
    clean = _triton(a[:, 12:], b[:, 12:], None, weight[:, 12:], chunk=chunk)
    for got, want in zip((h, grad_a, grad_b), clean[:3]):
        torch.testing.assert_close(got[:, 12:].cpu(), want.cpu())
