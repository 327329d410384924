"""linear_scan backends agree with the reference loop, in value and gradient, including zero-gate cuts."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recurl.kernels import linear_scan

FAST_BACKENDS = ["torch"]


def _inputs(batch, length, dim, zero_every, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(batch, length, dim, generator=gen, dtype=dtype)
    if zero_every:
        a[:, ::zero_every] = 0
    b = torch.randn(batch, length, dim, generator=gen, dtype=dtype)
    h0 = torch.randn(batch, dim, generator=gen, dtype=dtype)
    return a, b, h0


def _value_and_grads(backend, a, b, h0, weight):
    a, b = a.clone().requires_grad_(), b.clone().requires_grad_()
    h0 = None if h0 is None else h0.clone().requires_grad_()
    h = linear_scan(a, b, h0, backend=backend)
    inputs = [a, b] + ([] if h0 is None else [h0])
    return h, torch.autograd.grad((h * weight).sum(), inputs)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 3),
    length=st.integers(1, 300),
    dim=st.integers(1, 7),
    zero_every=st.sampled_from([0, 1, 2, 5, 17]),
    with_h0=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_backend_matches_reference(backend, batch, length, dim, zero_every, with_h0, seed):
    a, b, h0 = _inputs(batch, length, dim, zero_every, seed=seed)
    h0 = h0 if with_h0 else None
    weight = torch.randn(batch, length, dim, dtype=torch.float64)
    expected, expected_grads = _value_and_grads("reference", a, b, h0, weight)
    got, got_grads = _value_and_grads(backend, a, b, h0, weight)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    for g, e in zip(got_grads, expected_grads):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


def test_reference_is_the_recurrence():
    a, b, h0 = _inputs(2, 4, 3, zero_every=0)
    h = linear_scan(a, b, h0, backend="reference")
    manual = h0
    for t in range(4):
        manual = a[:, t] * manual + b[:, t]
        torch.testing.assert_close(h[:, t], manual)


@pytest.mark.parametrize("backend", ["reference", *FAST_BACKENDS])
def test_zero_gate_cuts_off_inf_and_nan(backend):
    a, b, _ = _inputs(2, 200, 3, zero_every=0, dtype=torch.float32)
    b[0, 40], b[1, 150], a[1, 155] = float("inf"), float("nan"), float("nan")
    a[0, 90], a[1, 160] = 0, 0
    h = linear_scan(a, b, backend=backend)
    assert torch.isfinite(h[0, 90:]).all() and torch.isfinite(h[1, 160:]).all()
    assert not torch.isfinite(h[0, 40]).any() and torch.isnan(h[1, 150]).all()  # the bad values are really there
    for row, cut in ((0, 90), (1, 160)):  # after its cut a row is what a scan started there computes
        fresh = linear_scan(a[row : row + 1, cut:], b[row : row + 1, cut:], backend="reference")
        torch.testing.assert_close(h[row : row + 1, cut:], fresh)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_long_sequences_are_stable(backend):
    a = torch.rand(2, 50_000, 4) * 0.2 + 0.8
    b = torch.randn(2, 50_000, 4)
    h = linear_scan(a, b, backend=backend)
    assert torch.isfinite(h).all()
    torch.testing.assert_close(h[:, -50:], linear_scan(a, b, backend="reference")[:, -50:], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_accumulates_in_float32(dtype):
    a, b, _ = _inputs(2, 700, 5, zero_every=0, dtype=torch.float32)
    a = a * 0.1 + 0.9
    h = linear_scan(a.to(dtype), b.to(dtype), backend="torch")
    assert h.dtype == dtype
    expected = linear_scan(a.to(dtype).float(), b.to(dtype).float(), backend="reference")
    torch.testing.assert_close(h.float(), expected, rtol=1e-2, atol=1e-2)


def test_bad_shapes_and_backend_are_refused():
    a = torch.rand(2, 3, 4)
    with pytest.raises(ValueError, match=r"\[B, T, D\]"):
        linear_scan(a, a[:, :, :2])
    with pytest.raises(ValueError, match="h0 must be"):
        linear_scan(a, a, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="unknown scan backend .cuda."):
        linear_scan(a, a, backend="cuda")

