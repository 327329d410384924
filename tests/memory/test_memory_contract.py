"""The memory contract, for every backbone: the parallel forward equals the stepwise recurrence, with resets.

Outputs, final state and gradients (inputs, parameters, initial state) must agree; resets must cut every
dependence on the past; rows must not interact; the future must not reach the past.
"""

import importlib.util
import inspect

import numpy as np
import pytest
import torch

from recurl.memory import MEMORIES, make_memory

BACKBONES = list(MEMORIES)
INPUT, HIDDEN = 5, 8
TOLERANCE = {torch.float64: dict(rtol=1e-9, atol=1e-9), torch.float32: dict(rtol=2e-4, atol=2e-5)}


def _with_triton(*extra):
    """Every backbone as built by default, then every scanned one on its Triton kernels (one layer: a second adds
    nothing the kernels have not seen), each followed by ``extra``. Triton runs in its interpreter on CPU (conftest
    sets TRITON_INTERPRET)."""
    return [pytest.param(name, {}, *extra, id=name) for name in BACKBONES] + [
        pytest.param(
            name, {"scan_backend": "triton"}, *extra, id=f"{name}-triton",
            marks=pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed"),
        )
        for name, cell in MEMORIES.items()
        if "scan_backend" in inspect.signature(cell).parameters
    ]


RESET_PATTERNS = {
    "none": [],
    "first": [0],
    "middle": [9],
    "last": [19],
    "back_to_back": [6, 7, 8],
    "all": list(range(20)),
}


def build(name, dtype=torch.float64, num_layers=1, **options):
    """The backbone on CPU, or on the GPU when it runs Triton kernels and there is one."""
    device = "cuda" if options.get("scan_backend") == "triton" and torch.cuda.is_available() else "cpu"
    return make_memory(name, INPUT, HIDDEN, num_layers=num_layers, **options).to(device, dtype)


def random_resets(batch, length, p=0.15):
    return torch.rand(batch, length) < p


def run_steps(mem, x, state, resets):
    outputs = []
    for t in range(x.shape[1]):
        y, state = mem.step(x[:, t], state, resets[:, t])
        outputs.append(y)
    return torch.stack(outputs, dim=1), state


def warm_state(mem, batch, dtype):
    """A non-trivial state: what the memory holds after a few random steps."""
    with torch.no_grad():
        x = torch.randn(batch, 6, INPUT, dtype=dtype)
        return mem(x, mem.initial_state(batch), torch.zeros(batch, 6, dtype=torch.bool))[1]


def loss_of(y, state, weights):
    total = (y * weights[0]).sum()
    for part, w in zip(state, weights[1:]):
        total = total + (torch.nan_to_num(part, neginf=0.0) * w).sum()
    return total


def assert_forward_equals_steps(mem, x, state0, resets, dtype):
    state0 = tuple(s.clone().requires_grad_(bool(torch.isfinite(s).all())) for s in state0)
    y_par, s_par = mem(x, state0, resets)
    y_seq, s_seq = run_steps(mem, x, state0, resets)
    tol = TOLERANCE[dtype]
    torch.testing.assert_close(y_par, y_seq, **tol)
    assert len(s_par) == len(s_seq)
    for a, b in zip(s_par, s_seq):
        torch.testing.assert_close(a, b, **tol)

    weights = [torch.randn_like(y_par)] + [torch.randn_like(s) for s in s_par]
    wrt = [x, *mem.parameters(), *(s for s in state0 if s.requires_grad)]
    g_par = torch.autograd.grad(loss_of(y_par, s_par, weights), wrt, allow_unused=True)
    g_seq = torch.autograd.grad(loss_of(y_seq, s_seq, weights), wrt, allow_unused=True)
    for a, b in zip(g_par, g_seq):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, **tol)
    assert g_par[0] is not None and g_par[0].abs().sum() > 0  # the check is not vacuous


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize(
    "name, options, num_layers",
    _with_triton(1) + [pytest.param(name, {}, 2, id=f"{name}-2layers") for name in BACKBONES],
)
def test_forward_equals_step_loop_with_random_resets(name, options, num_layers, dtype):
    mem = build(name, dtype, num_layers, **options)
    device = mem.input_proj.weight.device
    x = torch.randn(4, 37, INPUT, dtype=dtype, device=device, requires_grad=True)
    assert_forward_equals_steps(mem, x, mem.initial_state(4), random_resets(4, 37).to(device), dtype)


@pytest.mark.parametrize("pattern", RESET_PATTERNS)
@pytest.mark.parametrize("name", BACKBONES)
def test_forward_equals_step_loop_from_a_warm_state(name, pattern):
    mem = build(name)
    resets = torch.zeros(3, 20, dtype=torch.bool)
    resets[:, RESET_PATTERNS[pattern]] = True
    x = torch.randn(3, 20, INPUT, dtype=torch.float64, requires_grad=True)
    assert_forward_equals_steps(mem, x, warm_state(mem, 3, torch.float64), resets, torch.float64)


@pytest.mark.parametrize("name", BACKBONES)
def test_the_initial_state_matters_until_the_first_reset(name):
    mem = build(name)
    x = torch.randn(2, 12, INPUT, dtype=torch.float64)
    resets = torch.zeros(2, 12, dtype=torch.bool)
    resets[:, 7] = True
    y_cold, state_cold = mem(x, mem.initial_state(2), resets)
    y_warm, state_warm = mem(x, warm_state(mem, 2, torch.float64), resets)
    torch.testing.assert_close(y_cold[:, 7:], y_warm[:, 7:], rtol=0, atol=0)
    for cold, warm in zip(state_cold, state_warm, strict=True):  # the final state forgot the start state too
        torch.testing.assert_close(cold, warm, rtol=0, atol=0)
    if name != "mlp":
        assert not torch.allclose(y_cold[:, :7], y_warm[:, :7])


@pytest.mark.parametrize("name", BACKBONES)
def test_nothing_crosses_a_reset(name):
    mem = build(name)
    x = torch.randn(2, 30, INPUT, dtype=torch.float64)
    resets = torch.zeros(2, 30, dtype=torch.bool)
    resets[:, 18] = True
    y, state = mem(x, mem.initial_state(2), resets)
    x2 = x.clone()
    x2[:, :18] = torch.randn(2, 18, INPUT, dtype=torch.float64) * 100
    y2, state2 = mem(x2, mem.initial_state(2), resets)
    assert torch.equal(y[:, 18:], y2[:, 18:])
    for a, b in zip(state, state2):
        assert torch.equal(a, b)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the Triton interpreter's numpy, on inf and nan
@pytest.mark.parametrize("bad", [float("inf"), float("nan"), 1e30])
@pytest.mark.parametrize("name, options", _with_triton())
def test_inf_or_huge_values_before_a_reset_never_reach_after_it(name, options, bad):
    mem = build(name, torch.float32, **options)
    device = mem.input_proj.weight.device
    x = torch.randn(2, 40, INPUT, device=device)
    resets = torch.zeros(2, 40, dtype=torch.bool, device=device)
    resets[:, 25] = True
    clean, clean_state = mem(x, mem.initial_state(2), resets)
    x[:, 10] = bad
    y, state = mem(x, mem.initial_state(2), resets)
    stepped, step_state = run_steps(mem, x, mem.initial_state(2), resets)
    for out in (y, stepped):
        assert torch.isfinite(out[:, 25:]).all()
        torch.testing.assert_close(out[:, 25:], clean[:, 25:])
    for final in (state, step_state):  # the final state, too, holds nothing of what came before the reset
        for part, clean_part in zip(final, clean_state, strict=True):
            assert not torch.isnan(part).any()
            torch.testing.assert_close(part, clean_part)


@pytest.mark.parametrize("name", BACKBONES)
def test_outputs_are_causal(name):
    mem = build(name)
    x = torch.randn(2, 25, INPUT, dtype=torch.float64)
    resets = random_resets(2, 25)
    y, _ = mem(x, mem.initial_state(2), resets)
    x2 = x.clone()
    x2[:, 13:] += 1.0
    y2, _ = mem(x2, mem.initial_state(2), resets)
    assert torch.equal(y[:, :13], y2[:, :13])
    assert not torch.allclose(y[:, 13:], y2[:, 13:])


@pytest.mark.parametrize("name", BACKBONES)
def test_batch_rows_are_independent(name):
    mem = build(name)
    x = torch.randn(4, 25, INPUT, dtype=torch.float64)
    resets = random_resets(4, 25)
    y, state = mem(x, mem.initial_state(4), resets)
    x2 = x.clone()
    x2[1] = torch.randn(25, INPUT, dtype=torch.float64)
    resets2 = resets.clone()
    resets2[1] = ~resets2[1]
    y2, state2 = mem(x2, mem.initial_state(4), resets2)
    keep = [0, 2, 3]
    torch.testing.assert_close(y[keep], y2[keep], rtol=1e-12, atol=1e-12)
    for a, b in zip(state, state2):
        torch.testing.assert_close(a[keep], b[keep], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", BACKBONES)
def test_long_sequences_stay_finite(name):
    mem = build(name, torch.float32)
    x = torch.randn(2, 4096, INPUT) * 3
    resets = random_resets(2, 4096, p=0.001)
    y, state = mem(x, mem.initial_state(2), resets)
    y.square().mean().backward()
    assert torch.isfinite(y).all()
    assert all(torch.isfinite(p.grad).all() for p in mem.parameters() if p.grad is not None)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("name", BACKBONES)
def test_half_types_keep_their_dtype_and_follow_float32(name, dtype):
    """A layer cast to a half type runs both forms in it (complex recurrences scan in float32 inside) and stays near
    the float32 layer it was cast from."""
    mem = build(name, torch.float32)
    x, resets = torch.randn(3, 11, INPUT), random_resets(3, 11, p=0.3)
    want, _ = mem(x, mem.initial_state(3), resets)
    half = build(name, torch.float32).to(dtype)
    half.load_state_dict(mem.state_dict())
    y, state = half(x.to(dtype), half.initial_state(3), resets)
    y_steps, state_steps = run_steps(half, x.to(dtype), half.initial_state(3), resets)
    assert y.dtype == y_steps.dtype == dtype and all(s.dtype == dtype for s in (*state, *state_steps))
    for got in (y, y_steps):
        torch.testing.assert_close(got.float(), want, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("name", BACKBONES)
def test_shapes_and_output_size(name):
    mem = make_memory(name, INPUT, 16, num_layers=3)
    assert mem.output_size == 16
    state = mem.initial_state(5, "cpu")
    assert all(s.shape[:2] == (5, 3) for s in state)
    y, new_state = mem(torch.randn(5, 7, INPUT), state, torch.zeros(5, 7, dtype=torch.bool))
    y_t, _ = mem.step(torch.randn(5, INPUT), state, torch.zeros(5, dtype=torch.bool))
    assert y.shape == (5, 7, 16) and y_t.shape == (5, 16)
    assert [s.shape for s in new_state] == [s.shape for s in state]


def test_make_memory_refuses_bad_requests():
    with pytest.raises(ValueError, match=f"unknown memory 'rnn'; choose one of {', '.join(MEMORIES)}$"):
        make_memory("rnn", 3, 8)
    with pytest.raises(ValueError, match="hidden_size must be a positive integer"):
        make_memory("mingru", 3, 0)
    with pytest.raises(ValueError, match="unknown option.*num_heads.*accepts num_layers, scan_backend"):
        make_memory("mingru", 3, 8, num_heads=2)
    with pytest.raises(ValueError, match="multiple of num_heads"):
        make_memory("aaren", 3, 10, num_heads=4)
    mem = make_memory("mingru", 3, 8)
    with pytest.raises(ValueError, match=r"with B, T >= 1; got x \(2, 0, 3\)"):
        mem(torch.randn(2, 0, 3))
    with pytest.raises(ValueError, match=r"with B, T >= 1; got x \(0, 3\)"):
        mem.step(torch.randn(0, 3))
    with pytest.raises(ValueError, match=r"memory.forward: expected resets a torch.bool tensor \[2, 4\]; got \(2, 4\) "
                       r"torch.float32"):
        mem(torch.randn(2, 4, 3), mem.initial_state(2), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"memory.step: expected reset a torch.bool tensor \[2\]; got a ndarray"):
        mem.step(torch.randn(2, 3), None, np.zeros(2, bool))  # read as torch's bool, it printed 'bool' against 'bool'
    with pytest.raises(ValueError, match=r"memory.step: expected reset a torch.bool tensor \[2\]; got a bool"):
        mem.step(torch.randn(2, 3), None, True)
    with pytest.raises(ValueError, match=r"expected x \[B, 3\], a torch tensor; got a ndarray"):
        mem.step(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"in the memory's dtype, torch.float32; got x torch.float64 \(convert x"):
        mem(torch.randn(2, 4, 3, dtype=torch.float64))  # torch's own error named neither the memory nor the fix
    with pytest.raises(ValueError, match="the state is the tuple of tensors initial_state gives; got a tensor"):
        mem.step(torch.randn(2, 3), torch.zeros(2, 2, 8))  # an nn.GRU habit


@pytest.mark.parametrize("name", BACKBONES)
def test_mixed_precision_inputs_run_under_autocast(name):
    """Under torch.autocast a layer before the memory hands it bf16 features; autocast casts them where it must, so
    the memory's dtype check lets them through (outside autocast it names the mismatch, above)."""
    mem = make_memory(name, INPUT, HIDDEN)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x = torch.nn.Linear(3, INPUT)(torch.randn(2, 4, 3))
        assert x.dtype == torch.bfloat16
        y, _ = mem(x)
        assert torch.isfinite(y.float()).all()
        y_t, _ = mem.step(x[:, 0], list(mem.initial_state(2)))  # a list works as the tuple does
        assert torch.isfinite(y_t.float()).all()


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_a_linear_recurrent_cell_without_a_kernel_of_its_own_scans_on_triton():
    """README, "Adding a backbone": a subclass that gives only ``gates`` runs on every backend (an exponential moving
    average here); on the Triton backend its scan is linear_scan's kernel."""
    from recurl.memory.linear_recurrence import LinearRecurrentCell

    class MovingAverage(LinearRecurrentCell):
        def __init__(self, size, scan_backend="auto"):
            super().__init__(size, projections=1, scan_backend=scan_backend)

        def gates(self, z):
            decay = torch.sigmoid(z)
            return decay, (1 - decay) * z

    torch.manual_seed(0)
    x, resets = torch.randn(3, 20, HIDDEN, dtype=torch.float64), random_resets(3, 20, p=0.3)
    torch_cell = MovingAverage(HIDDEN, "torch").double()
    triton_cell = MovingAverage(HIDDEN, "triton").double()
    triton_cell.load_state_dict(torch_cell.state_dict())
    state = (torch.randn(3, HIDDEN, dtype=torch.float64),)
    want, _ = torch_cell(x, state, resets)
    got, _ = triton_cell(x, state, resets)
    torch.testing.assert_close(got, want, **TOLERANCE[torch.float64])
    steps = []
    for t in range(20):
        y, state = torch_cell.step(x[:, t], state, resets[:, t])
        steps.append(y)
    torch.testing.assert_close(torch.stack(steps, 1), want, **TOLERANCE[torch.float64])
