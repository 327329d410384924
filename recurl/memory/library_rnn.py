"""Run a library RNN (``nn.LSTM``, ``nn.GRU``) over rows with episode resets, in one library call.

cuDNN and oneDNN cannot reset a state mid-sequence. Two ways round that:

- **reset steps** (CPU; oneDNN serves ``nn.LSTM``): before each reset, one extra step is inserted into the row whose
  gates are saturated so that it outputs exactly the zero state, and rows with fewer resets are padded at the end with
  *hold* steps that keep the cell state exactly. Two input columns (1 at reset steps, 1 at hold steps) carry the
  saturation: their weights, appended to ``W_ih``, are +-``SATURATED`` on the gates below, which makes sigmoid exactly
  0 or 1 in fp32 and fp64. Every row then runs as one unpacked call of T + (most resets in a row) steps:

      LSTM reset: i = f = 0  ->  c = 0, h = o tanh(0) = 0        LSTM hold: i = 0, f = 1  ->  c kept (h unread)
      GRU reset:  r = z = 0, the candidate's input -b_in  ->  n = 0, h = 0        GRU hold: z = 1  ->  h kept

  The saturated gates also stop the gradient: sigmoid'(x) = s (1 - s) = 0, so nothing flows back across a reset step,
  and a hold step passes the cell's gradient on with factor f = 1. The outputs at inserted steps are dropped. The final
  state is the call's, held since each row's last real step, except the LSTM's h, read from that step's output.
- **packed** (CUDA, and inputs or states that hold an inf or a NaN): each row cut at its resets, all segments as one
  ``PackedSequence``, which cuDNN runs natively; it runs as many steps as the longest segment. (PyTorch's packed CPU
  path is its native per-step code, ~10x slower than an unpacked oneDNN call.) Kept for CUDA without a measurement
  against reset steps, as no GPU was at hand: ``python -m recurl.bench memory --layouts`` times the two.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from recurl.memory.cell import State

#: The pre-activation that saturates a gate: sigmoid(-1e4 + whatever else a sane layer adds) is exactly 0 (and
#: sigmoid(1e4 + ...) exactly 1) in fp32 and fp64, and 1e4 is finite in fp16 too, where 1e30 would overflow to inf and
#: make the input matmul's 0 * weight a NaN.
SATURATED = 1e4


#: How ``run_with_resets`` lays the rows out: ``auto`` picks per call (see the module docstring).
LAYOUTS = ("auto", "reset_steps", "packed")


def run_with_resets(
    rnn: nn.RNNBase, x: torch.Tensor, state: State, resets: torch.Tensor, layout: str = "auto"
) -> tuple[torch.Tensor, State]:
    """``rnn`` (one layer, time-major) over ``x`` [B, T, in] from ``state`` ((h,) or (h, c), each [B, H]), starting
    again from zeros wherever ``resets`` [B, T] is true. Returns ``y`` [B, T, H] and the final state.

    ``layout`` forces one of the two ways (benchmarks compare them); a forced ``reset_steps`` turns an inf or NaN
    before a reset into NaN after it."""
    if rnn.batch_first or rnn.num_layers != 1 or rnn.bidirectional or not rnn.bias:
        raise ValueError("run_with_resets: expected a one-layer, one-way RNN with biases and batch_first=False")
    if layout not in LAYOUTS:
        raise ValueError(f"run_with_resets: unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    kept = tuple(torch.where(resets[:, :1], 0.0, s) for s in state)
    if not resets[:, 1:].any():  # one segment per row: the plain call
        y, final = _call(rnn, x.transpose(0, 1), kept)
        return y.transpose(0, 1), final
    if layout == "auto":
        # A reset step zeroes the state by multiplying it by a saturated gate, and 0 * inf is NaN: an inf or NaN
        # before a reset (from the input or the carried state; finite ones keep an LSTM or GRU finite) takes the
        # packed call, which cuts the rows instead, however slow that is on CPU. A sum is finite exactly when no
        # element is inf or NaN, unless it overflows (then finite values go the slow way), and is ~20x cheaper than
        # ``isfinite().all()``.
        finite = torch.isfinite(sum(t.sum() for t in (x, *kept)))
        layout = "packed" if x.device.type == "cuda" or not finite else "reset_steps"
    if layout == "packed":
        starts = resets.clone()
        starts[:, 0] = True
        return _run_packed(rnn, x, kept, starts)
    return _run_with_reset_steps(rnn, x, kept, resets)


def _call(rnn: nn.RNNBase, x: torch.Tensor | PackedSequence, state: State) -> tuple[torch.Tensor, State]:
    """One library call from ``state`` (each part [n, H]); returns the output and the final state, parts [n, H]."""
    hx = tuple(s[None] for s in state)
    y, final = rnn(x, hx if len(hx) > 1 else hx[0])
    final = final if isinstance(final, tuple) else (final,)
    return y, tuple(s[0] for s in final)


def _run_with_reset_steps(
    rnn: nn.RNNBase, x: torch.Tensor, state: State, resets: torch.Tensor
) -> tuple[torch.Tensor, State]:
    """One unpacked call, a reset step inserted before each reset after t=0 and hold steps at the ends of rows."""
    batch, length, size = x.shape
    inserted = resets.clone()
    inserted[:, 0] = False
    time = inserted.cumsum(1).add_(torch.arange(length, device=x.device))  # [B, T]: each real step's time in the call
    last = time[:, -1]
    steps = int(last.max()) + 1
    # Entries of the call, time-major: each real step's place in it (in x's row-major order), and flags [reset, hold]
    # that every entry gets first; real steps then overwrite theirs with [x, 0, 0].
    position = (time * batch).add_(torch.arange(batch, device=x.device)[:, None]).flatten()
    hold = torch.arange(steps, device=x.device)[:, None] > last
    flags = torch.stack([~hold, hold], -1).flatten(0, 1).to(x.dtype)
    inputs = nn.functional.pad(flags, (size, 0)).index_copy(0, position, nn.functional.pad(x.flatten(0, 1), (0, 2)))
    params = [_with_flag_columns(rnn), rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0]
    hx = tuple(s[None] for s in state)
    if rnn.mode == "LSTM":
        out, _, c = torch.lstm(inputs.view(steps, batch, -1), hx, params, True, 1, 0.0, rnn.training, False, False)
    else:
        out, h = torch.gru(inputs.view(steps, batch, -1), hx[0], params, True, 1, 0.0, rnn.training, False, False)
    y = out.flatten(0, 1).index_select(0, position).view(batch, length, -1)
    return y, (y[:, -1], c[0]) if rnn.mode == "LSTM" else (h[0],)


def _with_flag_columns(rnn: nn.RNNBase) -> torch.Tensor:
    """``W_ih`` with the reset and hold columns appended (gate order as in torch: LSTM i, f, g, o; GRU r, z, n)."""
    weight, hidden, big = rnn.weight_ih_l0, rnn.hidden_size, SATURATED
    if rnn.mode == "LSTM":  # columns [reset, hold] per gate
        flags = weight.new_tensor([[-big, -big], [-big, big], [0.0, 0.0], [0.0, 0.0]]).repeat_interleave(hidden, 0)
    elif rnn.mode == "GRU":  # the candidate's input at a reset step is W_in 0 + b_in - b_in = 0, so n = tanh(0) = 0
        gates = weight.new_tensor([[-big, 0.0], [-big, big]]).repeat_interleave(hidden, 0)
        candidate = torch.stack([-rnn.bias_ih_l0[2 * hidden :], torch.zeros_like(rnn.bias_ih_l0[2 * hidden :])], 1)
        flags = torch.cat([gates, candidate])
    else:
        raise ValueError(f"run_with_resets: expected an LSTM or a GRU, got {rnn.mode}")
    return torch.cat([weight, flags], 1)


def _run_packed(rnn: nn.RNNBase, x: torch.Tensor, state: State, starts: torch.Tensor) -> tuple[torch.Tensor, State]:
    """All segments as one ``PackedSequence``: one call, nothing padded."""
    batch, length, _ = x.shape
    index, batch_sizes, sorted_indices, unsorted_indices, segment = _pack_segments(starts)
    first_segment, last_segment = segment.view(batch, length)[:, [0, -1]].unbind(1)
    initial = tuple(s.new_zeros(len(sorted_indices), s.shape[-1]).index_copy(0, first_segment, s) for s in state)
    flat = x.flatten(0, 1)
    data = flat.new_empty(flat.shape).index_copy(0, index, flat)
    out, final = _call(rnn, PackedSequence(data, batch_sizes, sorted_indices, unsorted_indices), initial)
    y = out.data[index].view(batch, length, -1)
    return y, tuple(s[last_segment] for s in final)


def _pack_segments(starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lay out the segments of ``starts`` [B, T] (True at each segment's first step) as a PackedSequence would.

    Returns each of the B*T steps' (row-major) index in the packed data, the packed ``batch_sizes``,
    ``sorted_indices`` and ``unsorted_indices`` of the segments (ordered by decreasing length), and each step's
    segment id.
    """
    flat = starts.flatten()
    segment = torch.cumsum(flat, 0) - 1
    first = flat.nonzero().squeeze(1)
    position = torch.arange(flat.numel(), device=flat.device) - first[segment]
    lengths = torch.bincount(segment)
    order = torch.argsort(lengths, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)
    # batch_sizes[p] = number of segments longer than p
    batch_sizes = torch.bincount(position)
    offsets = torch.cumsum(batch_sizes, 0) - batch_sizes
    return offsets[position] + rank[segment], batch_sizes.cpu(), order, rank, segment
