"""The GRU baseline (Cho et al. 2014), as ``torch.nn.GRU`` computes it; POPGym's study ranked it first of its 13
memory models.

    r = sigmoid(W_r x_t + U_r h_{t-1} + b_r),  z = sigmoid(W_z x_t + U_z h_{t-1} + b_z)
    n = tanh(W_n x_t + b_in + r * (U_n h_{t-1} + b_hn)),  h_t = (1 - z) n + z h_{t-1}

The gates depend on h_{t-1}, so there is no parallel scan. ``forward`` runs the whole trajectory in one call: on CPU
``gru_sequence`` (a time loop with resets folded in and a hand-written backward: PyTorch has no oneDNN GRU), on CUDA
cuDNN over the episode segments packed in one call (``library_rnn.run_with_resets``, as for the LSTM).
"""

from __future__ import annotations

import torch
from torch import nn

from recurl.memory.cell import State, reset_state
from recurl.memory.gru_sequence import gru_sequence
from recurl.memory.library_rnn import run_with_resets


class GRU(nn.Module):
    def __init__(self, size: int):
        super().__init__()
        self.size = size
        self.gru = nn.GRU(size, size)  # time-major, as run_with_resets calls it

    def initial_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> State:
        return (torch.zeros(batch_size, self.size, device=device, dtype=dtype),)

    def forward(self, x: torch.Tensor, state: State, resets: torch.Tensor) -> tuple[torch.Tensor, State]:
        if x.device.type == "cuda":
            return run_with_resets(self.gru, x, state, resets)
        gi = nn.functional.linear(x, self.gru.weight_ih_l0, self.gru.bias_ih_l0)
        gi = gi.to(state[0].dtype)  # autocast makes it bf16; the loop's matmuls and its backward run in the state's
        y, h = gru_sequence(gi, state[0], self.gru.weight_hh_l0, self.gru.bias_hh_l0, resets)
        return y, (h,)

    def step(self, x: torch.Tensor, state: State, reset: torch.Tensor) -> tuple[torch.Tensor, State]:
        (h,) = reset_state(state, self.initial_state(x.shape[0], x.device, x.dtype), reset)
        gru = self.gru  # the cell op, not a one-step nn.GRU call: 29 us a step against 47 (B=32, width 64, CPU)
        h = torch.gru_cell(x, h, gru.weight_ih_l0, gru.weight_hh_l0, gru.bias_ih_l0, gru.bias_hh_l0)
        return h, (h,)
