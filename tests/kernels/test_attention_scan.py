"""attention_scan, Aaren's parallel form: the torch and Triton backends agree with the reference loop (the math of
``Aaren.step``) in value and gradient, with resets and a carried state, and overflow stays in its episode.

Without a GPU the Triton kernels run on CPU under Triton's interpreter (slow: shapes are small and odd on purpose).
"""

import importlib.util
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must precede the kernels' definition

from recurl.kernels import attention_scan, segmented_cummax  # noqa: E402
from recurl.kernels.attention_scan.reference import attention_scan_reference  # noqa: E402
from recurl.kernels.attention_scan.torch_scan import attention_scan_torch  # noqa: E402
from recurl.memory import MEMORIES  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
# The op's entry module (the package's ``attention_scan`` is the function of the same name).
entry_module = importlib.import_module("recurl.kernels.attention_scan")


def _inputs(batch, length, heads, dim, warm=True, seed=0, dtype=torch.float32):
    """Scores spread wide enough that the running max keeps moving; random resets, at t = 0 only in row 0 and only
    when there are several rows (its carried state is cut off, the others' is used); random loss weights on ``o`` and
    ``u``."""
    gen = torch.Generator().manual_seed(seed)
    score = 3 * torch.randn(batch, length, heads, generator=gen)
    value = torch.randn(batch, length, heads, dim, generator=gen)
    resets = torch.rand(batch, length, generator=gen) < 0.2
    resets[:, 0] = False
    resets[0, 0] = batch > 1
    if warm:
        state = (torch.randn(batch, heads, generator=gen), 1 + 3 * torch.rand(batch, heads, generator=gen),
                 torch.randn(batch, heads, dim, generator=gen))
    else:
        state = (torch.full((batch, heads), -torch.inf), torch.zeros(batch, heads), torch.zeros(batch, heads, dim))
    weights = torch.randn(batch, length, heads, dim, generator=gen), torch.randn(batch, length, heads, generator=gen)
    score, value, *state = (x.to(dtype) for x in (score, value, *state))
    return score, value, resets, tuple(state), weights


def _value_and_grads(scan, score, value, resets, state, weights, device=DEVICE):
    """(o, m, u) and the gradients of a weighted sum of o and u with respect to score, value, u0 and w0."""
    m0, u0, w0 = (x.to(device) for x in state)
    leaves = [x.to(device).requires_grad_() for x in (score, value, u0, w0)]
    o, m, u = scan(leaves[0], leaves[1], resets.to(device), (m0, leaves[2], leaves[3]))
    assert not m.requires_grad  # m only stabilises the exponentials
    loss = (o * weights[0].to(device, o.dtype)).sum() + (u * weights[1].to(device, u.dtype)).sum()
    return [x.detach().cpu() for x in (o, m, u, *torch.autograd.grad(loss, leaves))]


def _reference(score, value, resets, state, weights, dtype=torch.float64):
    score, value, *state = (x.to(dtype) for x in (score, value, *state))
    weights = [w.to(dtype) for w in weights]
    return _value_and_grads(attention_scan_reference, score, value, resets, tuple(state), weights, "cpu")


def _triton(*inputs, **config):
    from recurl.kernels.attention_scan.triton_scan import attention_scan_triton

    return _value_and_grads(lambda *args: attention_scan_triton(*args, **config), *inputs)


NAMES = ["o", "m", "u", "d score", "d value", "d u0", "d w0"]


def _assert_all_close(got, expected, tol, dtype=torch.float32, names=NAMES):
    for name, g, e in zip(names, got, expected, strict=True):
        assert g.dtype == dtype, name
        torch.testing.assert_close(g.double(), e.double(), rtol=tol, atol=tol, equal_nan=True, msg=name)


# (B, T, H, d, chunk): one step; several tiles with a partial last one and d not a power of two; the default tile
# (T = 21: one partial tile); chunk 1, the strictly sequential walk.
SHAPES = [(1, 1, 1, 1, None), (2, 13, 2, 3, 4), (1, 21, 1, 5, None), (2, 6, 3, 2, 1)]


@needs_triton
@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_triton_matches_reference(shape, warm):
    batch, length, heads, dim, chunk = shape
    inputs = _inputs(batch, length, heads, dim, warm, seed=length + dim)
    _assert_all_close(_triton(*inputs, chunk=chunk), _reference(*inputs), 1e-5)


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_torch_matches_reference(shape, warm):
    batch, length, heads, dim, _ = shape
    inputs = _inputs(batch, length, heads, dim, warm, seed=length + dim)
    got = _value_and_grads(attention_scan_torch, *inputs, device="cpu")
    _assert_all_close(got, _reference(*inputs), 1e-5)


@needs_triton
def test_triton_float64_matches_reference_to_rounding():
    inputs = _inputs(2, 11, 2, 3, dtype=torch.float64)
    _assert_all_close(_triton(*inputs, chunk=4), _reference(*inputs), 1e-12, torch.float64)


# bfloat16 keeps 8 significant bits and o is saved rounded; d score = e^(s - m) (v . R - S) subtracts sums that carry
# that rounding, which is why the kernel keeps m and u in float32 (with u in bfloat16 errors reached ~1.2e-2).
@needs_triton
@pytest.mark.parametrize("dtype, tol", [(torch.bfloat16, 1e-2), (torch.float16, 1e-2)], ids=["bf16", "fp16"])
def test_triton_half_precision_accumulates_in_float32(dtype, tol):
    inputs = _inputs(2, 11, 2, 3, dtype=dtype)  # rounded inputs; the reference runs them in float32
    _assert_all_close(_triton(*inputs, chunk=4), _reference(*inputs, dtype=torch.float32), tol, dtype)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the Triton interpreter's numpy, on inf and NaN
@pytest.mark.parametrize("backend", [pytest.param("triton", marks=needs_triton), "torch"])
def test_inf_and_nan_stay_in_their_episode(backend):
    """Row 0: an inf score and a NaN value inside the episode [6, 13); row 1: a NaN score at the start of [7, 12),
    so m is NaN at both of its ends. Everything outside those episodes (outputs, gradients, the initial state's
    gradients) is finite and the reference's, and after them equal to a run on clean inputs."""
    score, value, resets, state, weights = _inputs(2, 20, 2, 3)
    resets[:] = False
    resets[0, [6, 13]], resets[1, [7, 12]] = True, True
    clean = score.clone(), value.clone()
    score[0, 8, 1], value[0, 9, 0], score[1, 7] = float("inf"), float("nan"), float("nan")

    def run(score, value):
        if backend == "torch":
            return _value_and_grads(attention_scan_torch, score, value, resets, state, weights, "cpu")
        return _triton(score, value, resets, state, weights, chunk=4)

    got, expected = run(score, value), _reference(score, value, resets, state, weights)
    assert not torch.isfinite(got[0][0, 9]).any() and torch.isnan(got[0][1, 7:12]).all()  # the bad values are there
    keep = torch.ones(2, 20, dtype=torch.bool)
    keep[0, 6:13], keep[1, 7:12] = False, False
    for name, g, e in zip(NAMES, got[:5], expected):
        assert torch.isfinite(g[keep]).all(), name
        torch.testing.assert_close(g[keep].double(), e[keep], rtol=1e-5, atol=1e-5, msg=name)
    assert all(torch.isfinite(g).all() for g in got[5:])
    _assert_all_close(got[5:], expected[5:], 1e-5, names=NAMES[5:])
    after = run(*clean)
    for name, g, e in zip(NAMES, got[:5], after):
        torch.testing.assert_close(g[0, 13:], e[0, 13:], rtol=0, atol=0, msg=name)
        torch.testing.assert_close(g[1, 12:], e[1, 12:], rtol=0, atol=0, msg=name)


@needs_triton
def test_aaren_on_triton_equals_its_step_loop():
    """The layer end to end: the fused scan, its final state (w = o u) and the gradients through both."""
    cell = MEMORIES["aaren"](8, scan_backend="triton").to(DEVICE, torch.float64)
    x = torch.randn(2, 10, 8, dtype=torch.float64, device=DEVICE, requires_grad=True)
    resets = torch.zeros(2, 10, dtype=torch.bool, device=DEVICE)
    resets[0, [0, 4]], resets[1, 7] = True, True
    with torch.no_grad():
        warm = cell(torch.randn_like(x[:, :5]), cell.initial_state(2, DEVICE, torch.float64), resets[:, :5] & False)[1]
    m0, u0, w0 = warm[0], warm[1].requires_grad_(), warm[2].requires_grad_()
    y, state = cell(x, (m0, u0, w0), resets)
    steps, step_state = [], (m0, u0, w0)
    for t in range(10):
        y_t, step_state = cell.step(x[:, t], step_state, resets[:, t])
        steps.append(y_t)
    y_steps = torch.stack(steps, dim=1)
    torch.testing.assert_close(y, y_steps, rtol=1e-10, atol=1e-10)
    for a, b in zip(state, step_state, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    weights = [torch.randn_like(y), *(torch.randn_like(s) for s in state)]
    wrt = [x, u0, w0, *cell.parameters()]

    def loss(y, state):
        return sum((a * w).sum() for a, w in zip((y, *state), weights))

    for a, b in zip(torch.autograd.grad(loss(y, state), wrt), torch.autograd.grad(loss(y_steps, step_state), wrt)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_auto_on_cpu_uses_torch(monkeypatch):
    monkeypatch.setattr(entry_module, "attention_scan_torch", lambda *args: "torch ran")
    score, value, resets, state, _ = _inputs(1, 3, 1, 2)
    assert attention_scan(score, value, resets, state) == "torch ran"


def test_refuses_unknown_backends_and_wrong_shapes():
    score, value, resets, state, _ = _inputs(2, 3, 2, 4)
    with pytest.raises(ValueError, match="unknown scan backend 'cuda'"):
        attention_scan(score, value, resets, state, backend="cuda")
    with pytest.raises(ValueError, match=r"score must be \[B, T, H\] and value \[B, T, H, d\]"):
        attention_scan(score, value[:, :2], resets, state)
    with pytest.raises(ValueError, match=r"resets must be bool \[B, T\]"):
        attention_scan(score, value, resets.float(), state)
    with pytest.raises(ValueError, match=r"state must be \(m0, u0, w0\)"):
        attention_scan(score, value, resets, (state[0], state[1], state[2][..., :3]))


@settings(max_examples=30, deadline=None)
@given(length=st.integers(1, 70), seed=st.integers(0, 2**16))
def test_segmented_cummax_matches_a_loop(length, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(3, length, 2, generator=gen, dtype=torch.float64)
    starts = torch.rand(3, length, generator=gen) < 0.2
    initial = torch.randn(3, 2, generator=gen, dtype=torch.float64)
    got = segmented_cummax(x, starts, initial)
    running = initial
    for t in range(length):
        running = torch.where(starts[:, t, None], x[:, t], torch.maximum(running, x[:, t]))
        assert torch.equal(got[:, t], running)
