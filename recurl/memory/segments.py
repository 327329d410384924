"""Run a library RNN (``nn.LSTM``, ``nn.GRU``) over rows that episode starts cut into segments.

cuDNN and oneDNN cannot reset a state mid-sequence, so every row is cut at its episode starts and each segment runs
from its own initial state: zeros, except a row's first segment, which continues the carried state (unless the row
is reset at t=0). Two layouts of the same segments:

- **packed** (CUDA): all segments as one ``PackedSequence``, which cuDNN runs natively, in one call. On CPU the same
  call takes PyTorch's native per-step path (autograd through every step), ~10x slower than an unpacked oneDNN call.
  (Kept for CUDA without a measurement against the staircase: no GPU was at hand.)
- **staircase** (CPU): segments sorted longest first and run in time chunks, each chunk one unpacked (padded) call
  over the segments still running, from the state the previous chunk ended in. A chunk is cut where the segments
  that have ended would waste more padded steps than another call costs (``CALL_COST``), and wherever a row's
  *last* segment ends, because that is where the row's final state must be read. Padding never reaches anything
  kept: a padded step comes after its segment's last real step, so by causality it changes no real output, and the
  state it leads to is dropped (the segment does not run in the next chunk, and a row's final state is read at a
  chunk end that is its true end). The cuts at last segments are most of the calls (one per distinct length, so up
  to B): an LSTM's final cell state is not among its outputs, so it can only be read where a call ends.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from recurl.memory.cell import State

#: What one more library call costs, in padded row-steps. Measured on the 2-core CPU VM at width 64, one thread:
#: ~0.24 ms of fixed cost per oneDNN call forward+backward against ~1.6 us per row-step (so ~150); 100 and 300
#: timed alike (BENCHMARKS.md).
CALL_COST = 100


def run_with_resets(rnn: nn.RNNBase, x: torch.Tensor, state: State, resets: torch.Tensor) -> tuple[torch.Tensor, State]:
    """``rnn`` (one layer, time-major) over ``x`` [B, T, in] from ``state`` ((h,) or (h, c), each [B, H]), starting
    again from zeros wherever ``resets`` [B, T] is true. Returns ``y`` [B, T, H] and the final state."""
    if rnn.batch_first or rnn.num_layers != 1:
        raise ValueError("run_with_resets: expected a one-layer RNN with batch_first=False")
    kept = tuple(torch.where(resets[:, :1], 0.0, s) for s in state)
    if not resets[:, 1:].any():  # one segment per row: the plain call
        y, final = _call(rnn, x.transpose(0, 1), kept)
        return y.transpose(0, 1), final
    starts = resets.clone()
    starts[:, 0] = True
    if x.device.type == "cuda":
        return _run_packed(rnn, x, kept, starts)
    staircase = Staircase(starts)
    ys, finals = staircase.run(rnn, staircase.gather(x), kept)
    return staircase.scatter(ys), staircase.final_state(finals)


def _call(rnn: nn.RNNBase, x: torch.Tensor | PackedSequence, state: State) -> tuple[torch.Tensor, State]:
    """One library call from ``state`` (each part [n, H]); returns the output and the final state, parts [n, H]."""
    hx = tuple(s[None] for s in state)
    y, final = rnn(x, hx if len(hx) > 1 else hx[0])
    final = final if isinstance(final, tuple) else (final,)
    return y, tuple(s[0] for s in final)


class Staircase:
    """The segments of ``starts`` [B, T] (True at each segment's first step; column 0 all True) in time chunks.

    Segments are sorted by decreasing length, so the segments still running at any time are a prefix of that order:
    chunk k covers times [t_k, t_{k+1}) of the segments longer than t_k, time-major. Laid end to end the chunks form
    one flat list of S padded steps: for each time t, one entry per segment that t's chunk runs.
    """

    def __init__(self, starts: torch.Tensor, call_cost: int = CALL_COST):
        batch, length = starts.shape
        flat = starts.flatten().cpu()
        first = flat.nonzero().squeeze(1)
        seg_len = torch.diff(first, append=first.new_tensor([flat.numel()]))
        order = torch.argsort(seg_len, descending=True, stable=True)
        first, seg_len = first[order], seg_len[order]
        is_last = (first + seg_len) % length == 0
        self.chunks = _chunks(seg_len, set(seg_len[is_last].tolist()), call_cost)
        self.shape = (batch, length)
        self.sizes = [rows * (end - start) for start, end, rows in self.chunks]

        # Entry e of the flat list is (time t, sorted segment i): step first[i] + t of x, or padding past its end.
        rows = torch.tensor([rows for _, _, rows in self.chunks])
        rows_at = rows.repeat_interleave(torch.tensor([end - start for start, end, _ in self.chunks]))
        time = torch.arange(rows_at.numel()).repeat_interleave(rows_at)
        segment = torch.arange(time.numel()) - (rows_at.cumsum(0) - rows_at)[time]
        pad = flat.numel()  # the index of the padding row appended to the flattened input
        source = torch.where(time < seg_len[segment], first[segment] + time, pad)
        position = torch.empty(pad + 1, dtype=torch.long)
        position[source] = torch.arange(source.numel())
        device = starts.device
        self.source, self.position = source.to(device), position[:pad].to(device)
        # A row's first segment continues its carried state: (sorted position, row).
        is_first = first % length == 0
        self.first_slots = is_first.nonzero().squeeze(1).to(device)
        self.first_rows = (first[is_first] // length).to(device)
        # A row's last segment ends at a chunk end: its final state is row `slot` of that chunk's final states.
        ends = torch.tensor([end for _, end, _ in self.chunks])
        last_slots = is_last.nonzero().squeeze(1)
        chunk_of_last = torch.searchsorted(ends, seg_len[last_slots])
        final_index = torch.empty(batch, dtype=torch.long)
        final_index[(first[last_slots] + seg_len[last_slots]) // length - 1] = (rows.cumsum(0) - rows)[
            chunk_of_last
        ] + last_slots
        self.final_index = final_index.to(device)

    def gather(self, x: torch.Tensor, padding: float = 0.0) -> list[torch.Tensor]:
        """Each chunk's input [t1 - t0, rows, in], cut from ``x`` [B, T, in]; padded steps hold ``padding``."""
        parts = _Reorder.apply(x.flatten(0, 1), self.source, self.position, padding).split(self.sizes)
        return [part.view(end - start, rows, -1) for part, (start, end, rows) in zip(parts, self.chunks)]

    def padding_masks(self) -> list[torch.Tensor]:
        """Per chunk, [t1 - t0, rows] bool: True at padded steps (those past their segment's end)."""
        parts = (self.source == self.shape[0] * self.shape[1]).split(self.sizes)
        return [part.view(end - start, rows) for part, (start, end, rows) in zip(parts, self.chunks)]

    def run(self, rnn: nn.RNNBase, inputs: list[torch.Tensor], state: State) -> tuple[list[torch.Tensor], list[State]]:
        """The chunks in order, each from the state the previous one ended in; the first from zeros, except each
        row's first segment, from ``state`` (parts [B, H]). Returns each chunk's outputs and final states."""
        rows = self.chunks[0][2]
        carried = tuple(
            s.new_zeros(rows, s.shape[-1]).index_copy(0, self.first_slots, s[self.first_rows]) for s in state
        )
        ys, finals = [], []
        for (_, _, rows), chunk in zip(self.chunks, inputs):
            y, carried = _call(rnn, chunk, tuple(s[:rows] for s in carried))
            ys.append(y)
            finals.append(carried)
        return ys, finals

    def scatter(self, ys: list[torch.Tensor]) -> torch.Tensor:
        """The chunks' outputs back in [B, T, H] order, padded steps dropped."""
        flat = torch.cat([y.flatten(0, 1) for y in ys])
        return _Reorder.apply(flat, self.position, self.source, 0.0).view(*self.shape, -1)

    def final_state(self, finals: list[State]) -> State:
        """Each row's state at the end of its last segment."""
        return tuple(torch.cat(parts)[self.final_index] for parts in zip(*finals))


class _Reorder(torch.autograd.Function):
    """``cat([rows, padding row])[index]`` whose backward is the same kind of gather, ``cat([grad, 0])[inverse]``,
    rather than autograd's zero-fill and scatter-add: each row is read by at most one index, so the two index
    lists are each other's inverse (the padding row's index, ``len(rows)``, is read only by padded entries)."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor, index: torch.Tensor, inverse: torch.Tensor, padding: float) -> torch.Tensor:
        ctx.save_for_backward(inverse)
        return torch.cat([rows, rows.new_full((1, rows.shape[-1]), padding)]).index_select(0, index)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (inverse,) = ctx.saved_tensors
        return torch.cat([grad, grad.new_zeros(1, grad.shape[-1])]).index_select(0, inverse), None, None, None


def _chunks(seg_len: torch.Tensor, forced: set[int], call_cost: int) -> list[tuple[int, int, int]]:
    """Chunk ends for segments of lengths ``seg_len`` (descending): (t0, t1, rows running at t0) per chunk.

    Walking the distinct lengths upwards, a chunk ends at a length in ``forced``, or where the rows that have ended
    since it began, padded for as long again as the chunk has run, would cost ``call_cost`` row-steps or more.
    """
    values, counts = torch.unique(seg_len, return_counts=True)
    running_after = (seg_len.numel() - counts.cumsum(0)).tolist()
    chunks, start, rows = [], 0, seg_len.numel()
    for end, running in zip(values.tolist(), running_after):
        if running == 0 or end in forced or (rows - running) * (end - start) >= call_cost:
            chunks.append((start, end, rows))
            start, rows = end, running
    return chunks


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
