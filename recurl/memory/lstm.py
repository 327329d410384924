"""The LSTM baseline (Hochreiter & Schmidhuber 1997), as ``torch.nn.LSTM`` computes it.

    i, f, o = sigmoid(W x_t + U h_{t-1} + b),  g = tanh(...),  c_t = f c_{t-1} + i g,  h_t = o tanh(c_t)

The gates depend on h_{t-1}, so there is no parallel scan. ``forward`` still runs the library kernel (cuDNN on CUDA,
oneDNN/native on CPU) once over the whole batch: every row is cut at its episode starts into segments, and all
segments of all rows go through ``nn.LSTM`` as one ``PackedSequence`` — each segment from zeros, except a row's first
segment, which continues the given state. Nothing is padded and no Python loop runs over time.

The forget gate's bias starts at 1 rather than near 0 (Gers et al. 2000; Jozefowicz et al. 2015): an untrained LSTM
then keeps about 73% of its cell per step instead of 50%, so information from an episode's first step survives long
enough for the gradient to find it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from recurl.memory.cell import State, reset_state


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


class LSTM(nn.Module):
    def __init__(self, size: int):
        super().__init__()
        self.size = size
        self.lstm = nn.LSTM(size, size, batch_first=True)
        with torch.no_grad():  # gate order in nn.LSTM's biases: input, forget, cell, output
            self.lstm.bias_ih_l0[size : 2 * size].fill_(1.0)
            self.lstm.bias_hh_l0[size : 2 * size].fill_(0.0)

    def initial_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> State:
        zeros = torch.zeros(batch_size, self.size, device=device, dtype=dtype)
        return (zeros, zeros.clone())

    def forward(self, x: torch.Tensor, state: State, resets: torch.Tensor) -> tuple[torch.Tensor, State]:
        batch, length, _ = x.shape
        if not resets[:, 1:].any():  # one segment per row: the plain call
            h0, c0 = reset_state(state, self.initial_state(batch, x.device, x.dtype), resets[:, 0])
            y, (h, c) = self.lstm(x, (h0[None], c0[None]))
            return y, (h[0], c[0])
        starts = resets.clone()
        starts[:, 0] = True
        index, batch_sizes, sorted_indices, unsorted_indices, segment = _pack_segments(starts)
        first_segment, last_segment = segment.view(batch, length)[:, [0, -1]].unbind(1)
        # Each segment starts from zeros, except a row's first one, which continues the state unless reset at t=0.
        kept = reset_state(state, self.initial_state(batch, x.device, x.dtype), resets[:, 0])
        h0, c0 = (s.new_zeros(len(sorted_indices), self.size).index_copy(0, first_segment, s) for s in kept)
        flat = x.flatten(0, 1)
        packed = PackedSequence(flat.new_empty(flat.shape).index_copy(0, index, flat), batch_sizes, sorted_indices, unsorted_indices)
        out, (h, c) = self.lstm(packed, (h0[None], c0[None]))
        y = out.data[index].view(batch, length, self.size)
        return y, (h[0, last_segment], c[0, last_segment])

    def step(self, x: torch.Tensor, state: State, reset: torch.Tensor) -> tuple[torch.Tensor, State]:
        h, c = reset_state(state, self.initial_state(x.shape[0], x.device, x.dtype), reset)
        y, (h, c) = self.lstm(x[:, None], (h[None], c[None]))
        return y[:, 0], (h[0], c[0])
