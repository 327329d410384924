"""linear_scan on complex tensors (the FFM and LRU recurrences): every backend agrees with the reference loop in value
and gradient, gradients follow torch's complex convention, zero gates cut the past (inf and NaN included), and long
sequences with |a| near 1 stay finite.

Without a GPU the Triton kernels run on CPU under Triton's interpreter (slow: sizes are small and odd on purpose).
"""

import importlib.util
import math

import pytest
import torch

from recurl.kernels import linear_scan

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
BACKENDS = ["torch", pytest.param("triton", marks=needs_triton)]
TOLERANCE = {torch.complex64: 1e-5, torch.complex128: 1e-10}


def _inputs(batch, length, dim, dtype=torch.complex128, seed=0, zero_p=0.15, modulus=(0.0, 1.0)):
    """Gates of random phase and a modulus in ``modulus``, zero (a reset) with probability ``zero_p`` and at t = 0 in
    every other channel (cutting h0 off); inputs, h0 and the loss weights of random phase too."""
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, length, dim)
    low, high = modulus
    a = torch.polar(low + (high - low) * torch.rand(shape, generator=gen, dtype=torch.float64),
                    2 * math.pi * torch.rand(shape, generator=gen, dtype=torch.float64))
    a[torch.rand(shape, generator=gen) < zero_p] = 0
    a[:, 0, ::2] = 0
    b, weight = (torch.randn(shape, generator=gen, dtype=torch.complex128) for _ in range(2))
    h0 = torch.randn(batch, dim, generator=gen, dtype=torch.complex128)
    return [x.to(dtype) for x in (a, b, h0, weight)]


def _loss(h, weight):
    """A real loss that is not holomorphic in h (real and imaginary parts weighted apart)."""
    return (torch.view_as_real(h) * torch.view_as_real(weight.to(h.dtype))).sum()


def _value_and_grads(a, b, h0, weight, device="cpu", dtype=None, **scan_options):
    """h and the gradients of ``_loss`` with respect to a, b (and h0 when given), on the CPU."""
    dtype = dtype or a.dtype
    leaves = [x.to(device, dtype).requires_grad_() for x in (a, b) + (() if h0 is None else (h0,))]
    h = linear_scan(*leaves[:2], leaves[2] if h0 is not None else None, **scan_options)
    return [x.detach().cpu() for x in (h, *torch.autograd.grad(_loss(h, weight.to(device)), leaves))]


def _reference(a, b, h0, weight):
    return _value_and_grads(a, b, h0, weight, dtype=torch.complex128, backend="reference")


def _run(backend, a, b, h0, weight):
    device = DEVICE if backend == "triton" else "cpu"
    return _value_and_grads(a, b, h0, weight, device, backend=backend)


def _assert_all_close(got, expected, tol, dtype):
    for name, g, e in zip(["h", "d a", "d b", "d h0"], got, expected):
        assert g.dtype == dtype, name
        torch.testing.assert_close(g.to(torch.complex128), e, rtol=tol, atol=tol, equal_nan=True, msg=name)


def test_reference_gradient_is_the_conjugate_wirtinger_recurrence():
    """The reference's autograd (torch's convention) is g_t = dh_t + conj(a_{t+1}) g_{t+1}, d a_t = g_t conj(h_{t-1}),
    d b = g, d h0 = conj(a_0) g_0: what the fast backends implement."""
    a, b, h0, weight = _inputs(2, 9, 3, zero_p=0)
    a[:, 0] = 0.5j  # no cut anywhere: a cut gate gets no gradient
    h, grad_a, grad_b, grad_h0 = _reference(a, b, h0, weight)
    h.requires_grad_()
    (dh,) = torch.autograd.grad(_loss(h, weight), h)
    g, following = torch.zeros_like(dh), torch.zeros_like(dh[:, 0])
    for t in reversed(range(9)):
        following = dh[:, t] + (a[:, t + 1].conj() * following if t < 8 else 0)
        g[:, t] = following
    h_prev = torch.cat([h0[:, None], h[:, :-1].detach()], dim=1)
    torch.testing.assert_close(grad_b, g)
    torch.testing.assert_close(grad_a, g * h_prev.conj())
    torch.testing.assert_close(grad_h0, a[:, 0].conj() * g[:, 0])


# (B, T, D, seed): one step; odd sizes; T past the torch backend's plain loop (32) and not a multiple of the
# Triton tile (32 steps); two channel blocks of the Triton kernels (32 channels each), the second a tail.
SHAPES = [(1, 1, 1, 0), (3, 7, 5, 1), (2, 75, 3, 2), (1, 5, 33, 3)]


@pytest.mark.parametrize("with_h0", [True, False], ids=["h0", "no_h0"])
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_matches_reference(backend, shape, dtype, with_h0):
    *size, seed = shape
    a, b, h0, weight = _inputs(*size, dtype=dtype, seed=seed)
    h0 = h0 if with_h0 else None
    _assert_all_close(_run(backend, a, b, h0, weight), _reference(a, b, h0, weight), TOLERANCE[dtype], dtype)


def test_torch_backend_passes_gradcheck():
    a, b, h0, _ = _inputs(2, 40, 3, zero_p=0)  # no zero gates: a cut is a jump, where finite differences are wrong
    a[:, 0] = 0.5j  # ... not at t = 0 either

    def scan(a, b, h0):
        return linear_scan(a, b, h0, backend="torch")

    assert torch.autograd.gradcheck(scan, [x.requires_grad_() for x in (a, b, h0)])


@needs_triton
def test_triton_backend_passes_gradcheck():
    a, b, h0, _ = _inputs(1, 5, 2, zero_p=0)
    a[:, 0] = 0.5j

    def scan(a, b, h0):
        return linear_scan(a, b, h0, backend="triton")

    assert torch.autograd.gradcheck(scan, [x.to(DEVICE).requires_grad_() for x in (a, b, h0)])


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the interpreter's numpy, on inf * 0
@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
def test_zero_gate_cuts_off_inf_and_nan(backend):
    a, b, h0, weight = _inputs(2, 40, 3, dtype=torch.complex64, zero_p=0)
    b[0, 5] = complex(float("inf"), 0)
    b[1, 12] = complex(float("nan"), 1)
    a[0, 21], a[:, 30] = 0, 0
    got = _value_and_grads(a, b, h0, weight, DEVICE if backend == "triton" else "cpu", backend=backend)
    h, grad_a, grad_b, _ = got
    assert not torch.isfinite(h[0, 5]).all() and torch.isnan(h[1, 12]).all()  # the bad values are really there
    assert torch.isfinite(h[0, 21:]).all() and torch.isfinite(h[1, 30:]).all()
    # After its cut a row is what a scan started there computes, in value and gradient.
    clean = _value_and_grads(a[:, 30:], b[:, 30:], None, weight[:, 30:], backend="reference")
    for g, c in zip(got[:3], clean):
        torch.testing.assert_close(g[:, 30:], c)
    assert (grad_a[a == 0] == 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_long_sequence_with_gates_near_one_stays_finite(backend):
    """T = 4096 with |a| = 0.9999 and a phase: the state rotates and decays slowly for thousands of steps, and
    float32 rounding accumulates over all of them (to a few 1e-5 of the largest value). Triton's interpreter (CPU)
    runs 1024 steps of one channel: 4096 took it 10 s."""
    batch, length, dim = (2, 4096, 4)
    if backend == "triton" and DEVICE == "cpu":
        batch, length, dim = (1, 1024, 1)
    gen = torch.Generator().manual_seed(0)
    phase = 2 * math.pi * torch.rand(batch, 1, dim, generator=gen)  # a fixed rotation per channel, as in FFM and LRU
    a = torch.polar(torch.full((batch, length, dim), 0.9999), phase)
    b = torch.randn(batch, length, dim, generator=gen, dtype=torch.complex64)
    weight = torch.randn(batch, length, dim, generator=gen, dtype=torch.complex64)
    got = _run(backend, a, b, None, weight)
    assert all(torch.isfinite(torch.view_as_real(x)).all() for x in got)
    expected = _reference(a, b, None, weight)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g.to(torch.complex128), e, rtol=1e-4, atol=1e-4 * e.abs().max().item())


@needs_triton
def test_triton_tile_sizes_do_not_change_the_result():
    from recurl.kernels.linear_scan.triton_scan import linear_scan_triton

    a, b, h0, weight = _inputs(2, 21, 7, dtype=torch.complex64, seed=4)
    expected = _reference(a, b, h0, weight)
    for config in (dict(chunk=1, block_d=2), dict(chunk=8, block_d=4)):
        leaves = [x.to(DEVICE).requires_grad_() for x in (a, b, h0)]
        h = linear_scan_triton(*leaves, **config)
        got = [x.cpu() for x in (h.detach(), *torch.autograd.grad(_loss(h, weight.to(DEVICE)), leaves))]
        _assert_all_close(got, expected, 1e-5, torch.complex64)


def test_real_gates_with_complex_inputs_promote():
    """A real gate (a decay) with complex inputs is a complex scan; the real gate's gradient is real."""
    a, b, h0, weight = _inputs(2, 50, 3)
    a = a.abs()
    for backend in ["torch", "reference"]:
        leaves = [x.clone().requires_grad_() for x in (a, b, h0)]
        h = linear_scan(*leaves, backend=backend)
        grads = torch.autograd.grad(_loss(h, weight), leaves)
        assert h.dtype == torch.complex128 and grads[0].dtype == torch.float64


@needs_triton
@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")  # torch's own, on making the tensor
def test_triton_refuses_complex32():
    a = torch.zeros(1, 2, 3, dtype=torch.complex32, device=DEVICE)
    with pytest.raises(ValueError, match="supports complex64 and complex128; got torch.complex32"):
        linear_scan(a, a, backend="triton")
