"""``recurl.memory.library_rnn``: a library RNN over rows with resets in one call, with saturated reset and hold
steps inserted (CPU) or the segments packed (CUDA; its layout is checked here on CPU). Both must equal running each
segment on its own, in outputs, final states and gradients, and no inserted step may leak into any of them."""

import pytest
import torch
from torch import nn

from recurl.memory.library_rnn import SATURATED, run_with_resets

SIZE = 6


def make_rnn(kind, dtype=torch.float64):
    return {"lstm": nn.LSTM, "gru": nn.GRU}[kind](SIZE, SIZE).to(dtype)


def make_state(kind, batch, dtype=torch.float64):
    return tuple(torch.randn(batch, SIZE, dtype=dtype) for _ in range(2 if kind == "lstm" else 1))


def call(rnn, x, state):
    """``rnn`` over one sequence ``x`` [T, in] from ``state`` (parts [H])."""
    hx = tuple(part[None, None] for part in state)
    y, final = rnn(x[:, None], hx if len(hx) > 1 else hx[0])
    return y[:, 0], tuple(part[0, 0] for part in (final if isinstance(final, tuple) else (final,)))


def run_each_segment(rnn, x, state, resets):
    """The definition: each row cut at its resets, each piece its own call from zeros (a row's first piece from
    ``state`` unless the row resets at t=0)."""
    ys, finals = [], []
    for b in range(x.shape[0]):
        cuts = [t for t in range(1, x.shape[1]) if resets[b, t]]
        s = tuple(torch.zeros_like(part[b]) if resets[b, 0] else part[b] for part in state)
        row = []
        for start, end in zip([0, *cuts], [*cuts, x.shape[1]]):
            y, s = call(rnn, x[b, start:end], s if start == 0 else tuple(torch.zeros_like(part) for part in s))
            row.append(y)
        ys.append(torch.cat(row))
        finals.append(s)
    return torch.stack(ys), tuple(torch.stack(parts) for parts in zip(*finals))


def resets_of(pattern, batch=5, length=23):
    resets = torch.zeros(batch, length, dtype=torch.bool)
    if pattern == "random":
        resets = torch.rand(batch, length) < 0.2
    elif pattern == "last_longest":  # each row's last segment is its longest
        resets[:, [2, 4, 7]] = True
    elif pattern == "last_shortest":
        resets[:, [12, 21]] = True
    elif pattern == "back_to_back":  # length-1 segments, and a row reset at every step
        resets[:, 5:9] = True
        resets[1] = True
    elif pattern == "ragged":  # every row different, one without resets, one ending in a length-1 segment
        resets[0, [3, 11]] = True
        resets[2, length - 1] = True
        resets[3, 0] = True
        resets[4, 1:length:2] = True
    return resets


PATTERNS = ["random", "last_longest", "last_shortest", "back_to_back", "ragged", "none"]


def outputs_and_gradients(run, rnn, x, state, resets):
    """``run``'s outputs, final state and the gradients of a loss on both w.r.t. the input, state and weights."""
    x, state = x.clone().requires_grad_(), tuple(s.clone().requires_grad_() for s in state)
    y, final = run(rnn, x, state, resets)
    generator = torch.Generator().manual_seed(1)
    loss = (y * torch.randn(y.shape, generator=generator, dtype=y.dtype)).sum() + sum(
        (s * torch.randn(s.shape, generator=generator, dtype=s.dtype)).sum() for s in final
    )
    grads = torch.autograd.grad(loss, [x, *state, *rnn.parameters()])
    return [y.detach(), *(s.detach() for s in final), *grads]


def run_packed(rnn, x, state, resets):
    return run_with_resets(rnn, x, state, resets, layout="packed")


def assert_all_close(got, expected, tol):
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_reset_steps_and_packed_equal_each_segment_run_alone(kind, pattern, dtype):
    """fp32 takes oneDNN's LSTM kernel on CPU, fp64 PyTorch's native one: the saturation must hold in both."""
    rnn = make_rnn(kind, dtype)
    resets = resets_of(pattern)
    x = torch.randn(*resets.shape, SIZE, dtype=dtype)
    state = make_state(kind, resets.shape[0], dtype)
    expected = outputs_and_gradients(run_each_segment, rnn, x, state, resets)
    tol = 1e-10 if dtype == torch.float64 else 2e-5
    assert_all_close(outputs_and_gradients(run_with_resets, rnn, x, state, resets), expected, tol)
    assert_all_close(outputs_and_gradients(run_packed, rnn, x, state, resets), expected, tol)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_reset_steps_stay_exact_when_the_gates_see_large_inputs(kind):
    """Weights and inputs scaled up until gate pre-activations reach the hundreds: a reset step still outputs exactly
    the zero state and passes no gradient back, and a hold step keeps the state exactly."""
    rnn = make_rnn(kind)
    with torch.no_grad():
        for weight in rnn.parameters():
            weight.mul_(20.0)
    resets = resets_of("ragged")
    x = 10 * torch.randn(*resets.shape, SIZE, dtype=torch.float64)
    state = make_state(kind, resets.shape[0])
    got = outputs_and_gradients(run_with_resets, rnn, x, state, resets)
    assert_all_close(got, outputs_and_gradients(run_each_segment, rnn, x, state, resets), 1e-10)
    assert max(w.abs().sum(1).max() for w in (rnn.weight_ih_l0, rnn.weight_hh_l0)) * 10 < SATURATED / 10


@pytest.mark.parametrize("where", ["input", "state"])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_an_inf_or_nan_before_a_reset_never_reaches_after_it(kind, where):
    """A reset step's saturated gate would multiply the state by 0, and 0 * inf is NaN: such rows must be cut."""
    rnn = make_rnn(kind, torch.float32)
    resets = resets_of("ragged")
    x = torch.randn(*resets.shape, SIZE)
    state = make_state(kind, resets.shape[0], torch.float32)
    expected_y, _ = run_each_segment(rnn, x, state, resets)
    for bad in (float("inf"), float("nan")):
        if where == "input":
            x_bad, state_bad = x.clone(), state
            x_bad[0, 1] = bad
        else:
            x_bad, state_bad = x, tuple(s.clone().fill_(bad) for s in state)
        y, _ = run_with_resets(rnn, x_bad, state_bad, resets)
        torch.testing.assert_close(y[0, 3:], expected_y[0, 3:])  # row 0 resets at 3 and 11


def test_an_unknown_layout_is_refused():
    with pytest.raises(ValueError, match="unknown layout 'padded'; expected one of auto, reset_steps, packed"):
        resets = torch.ones(2, 3, dtype=torch.bool)
        run_with_resets(make_rnn("gru"), torch.randn(2, 3, SIZE), make_state("gru", 2), resets, "padded")


def test_only_one_layer_one_way_rnns_with_biases_are_accepted():
    x, resets = torch.randn(2, 3, SIZE), torch.zeros(2, 3, dtype=torch.bool)
    wrong = (nn.LSTM(SIZE, SIZE, num_layers=2), nn.LSTM(SIZE, SIZE, bias=False), nn.GRU(SIZE, SIZE, batch_first=True))
    for rnn in wrong:
        with pytest.raises(ValueError, match="one-layer, one-way RNN with biases"):
            run_with_resets(rnn, x, (torch.zeros(2, SIZE),) * 2, resets)
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (the cuDNN paths)")
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_cuda_runs_both_layouts_and_matches_cpu(kind):
    """``run_with_resets`` takes the packed layout on CUDA; reset steps must hold in cuDNN's kernels too, so that the
    two can be timed against each other there."""
    rnn = make_rnn(kind)
    resets = resets_of("random")
    x = torch.randn(*resets.shape, SIZE, dtype=torch.float64)
    state = make_state(kind, resets.shape[0])
    expected_y, expected_final = run_each_segment(rnn, x, state, resets)
    rnn, x, state, resets = rnn.cuda(), x.cuda(), tuple(s.cuda() for s in state), resets.cuda()
    for layout in ("auto", "reset_steps"):
        y, final = run_with_resets(rnn, x, state, resets, layout)
        assert_all_close([y.cpu(), *(s.cpu() for s in final)], [expected_y, *expected_final], 1e-10)
