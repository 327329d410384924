"""``recurl.memory.segments``: a library RNN over episode segments, laid out as a staircase of unpacked calls (CPU)
or as one packed call (CUDA; its layout is checked here on CPU). Both must equal running each segment on its own,
and padding must never reach an output, a state or a gradient."""

import pytest
import torch
from torch import nn

from recurl.memory.segments import Staircase, _run_packed, run_with_resets

SIZE = 6


def make_rnn(kind):
    return {"lstm": nn.LSTM, "gru": nn.GRU}[kind](SIZE, SIZE).double()


def make_state(kind, batch):
    return tuple(torch.randn(batch, SIZE, dtype=torch.float64) for _ in range(2 if kind == "lstm" else 1))


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


def assert_same(a, b):
    ya, sa = a
    yb, sb = b
    torch.testing.assert_close(ya, yb, rtol=1e-10, atol=1e-10)
    for pa, pb in zip(sa, sb):
        torch.testing.assert_close(pa, pb, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_staircase_and_packed_equal_each_segment_run_alone(kind, pattern):
    rnn = make_rnn(kind)
    resets = resets_of(pattern)
    x = torch.randn(*resets.shape, SIZE, dtype=torch.float64)
    state = make_state(kind, resets.shape[0])
    expected = run_each_segment(rnn, x, state, resets)
    assert_same(run_with_resets(rnn, x, state, resets), expected)
    kept = tuple(torch.where(resets[:, :1], 0.0, s) for s in state)
    starts = resets.clone()
    starts[:, 0] = True
    assert_same(_run_packed(rnn, x, kept, starts), expected)


@pytest.mark.parametrize("call_cost", [0, 100, 10**9])
def test_padding_never_leaks_into_outputs_states_or_gradients(call_cost):
    rnn = make_rnn("lstm")
    resets = resets_of("random", batch=7, length=40)
    starts = resets.clone()
    starts[:, 0] = True
    staircase = Staircase(starts, call_cost)
    assert any(mask.any() for mask in staircase.padding_masks()) == (call_cost > 0)
    x = torch.randn(7, 40, SIZE, dtype=torch.float64, requires_grad=True)
    state = make_state("lstm", 7)

    def run(padding):
        ys, finals = staircase.run(rnn, staircase.gather(x, padding), state)
        y, final = staircase.scatter(ys), staircase.final_state(finals)
        grads = torch.autograd.grad(y.sum() + sum(s.square().sum() for s in final), [x, *rnn.parameters()])
        return y, final, grads

    clean = run(0.0)
    for padding in (1e3, -7.5):
        y, final, grads = run(padding)
        assert torch.equal(y, clean[0])
        assert all(torch.equal(a, b) for a, b in zip(final, clean[1]))
        assert all(torch.equal(a, b) for a, b in zip(grads, clean[2]))
    with torch.no_grad():  # NaN padding: outputs and states still clean (gradients through NaN are NaN * 0)
        ys, finals = staircase.run(rnn, staircase.gather(x, float("nan")), state)
        assert torch.equal(staircase.scatter(ys), clean[0])
        assert all(torch.equal(a, b) for a, b in zip(staircase.final_state(finals), clean[1]))


def test_chunks_end_where_rows_end_and_the_call_cost_trades_calls_for_padding():
    resets = resets_of("random", batch=8, length=60)
    starts = resets.clone()
    starts[:, 0] = True
    every_length = Staircase(starts, call_cost=0)  # a chunk per distinct segment length: nothing padded
    assert every_length.source.numel() == starts.numel()
    few_calls = Staircase(starts, call_cost=10**9)  # chunks only where a row's last segment ends
    assert len(few_calls.chunks) < len(every_length.chunks)
    assert few_calls.source.numel() > starts.numel()
    for staircase in (every_length, few_calls):
        chunks = staircase.chunks
        assert chunks[0][0] == 0 and [c[1] for c in chunks[:-1]] == [c[0] for c in chunks[1:]]
        assert [c[2] for c in chunks] == sorted((c[2] for c in chunks), reverse=True)  # rows only end
        ends = {end for _, end, _ in chunks}
        for row in starts:
            last_start = row.nonzero().max().item()
            assert len(row) - last_start in ends  # where the row's final state is read


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (the packed cuDNN path)")
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_cuda_runs_the_packed_path_and_matches_cpu(kind):
    rnn = make_rnn(kind)
    resets = resets_of("random")
    x = torch.randn(*resets.shape, SIZE, dtype=torch.float64)
    state = make_state(kind, resets.shape[0])
    y, final = run_with_resets(rnn.cuda(), x.cuda(), tuple(s.cuda() for s in state), resets.cuda())
    assert_same((y.cpu(), tuple(s.cpu() for s in final)), run_each_segment(rnn.cpu(), x, state, resets))
