"""The LSTM baseline (Hochreiter & Schmidhuber 1997), as ``torch.nn.LSTM`` computes it.

    i, f, o = sigmoid(W x_t + U h_{t-1} + b),  g = tanh(...),  c_t = f c_{t-1} + i g,  h_t = o tanh(c_t)

The gates depend on h_{t-1}, so there is no parallel scan. ``forward`` runs the library kernel (oneDNN on CPU, cuDNN
on CUDA) over all rows and their resets in one call (``library_rnn.run_with_resets``: on CPU a reset step with
saturated gates inserted before each reset, on CUDA the episode segments packed); no Python loop runs over time.

The forget gate's bias starts at 1 rather than near 0 (Gers et al. 2000; Jozefowicz et al. 2015): an untrained LSTM
then keeps about 73% of its cell per step instead of 50%, so information from an episode's first step survives long
enough for the gradient to find it.
"""

from __future__ import annotations

import torch
from torch import nn

from recurl.memory.cell import State, reset_state
from recurl.memory.library_rnn import run_with_resets


class LSTM(nn.Module):
    def __init__(self, size: int):
        super().__init__()
        self.size = size
        self.lstm = nn.LSTM(size, size)  # time-major, as run_with_resets calls it
        with torch.no_grad():  # gate order in nn.LSTM's biases: input, forget, cell, output
            self.lstm.bias_ih_l0[size : 2 * size].fill_(1.0)
            self.lstm.bias_hh_l0[size : 2 * size].fill_(0.0)

    def initial_state(self, batch_size: int, device: torch.device, dtype: torch.dtype) -> State:
        zeros = torch.zeros(batch_size, self.size, device=device, dtype=dtype)
        return (zeros, zeros.clone())

    def forward(self, x: torch.Tensor, state: State, resets: torch.Tensor) -> tuple[torch.Tensor, State]:
        return run_with_resets(self.lstm, x, state, resets)

    def step(self, x: torch.Tensor, state: State, reset: torch.Tensor) -> tuple[torch.Tensor, State]:
        state = reset_state(state, self.initial_state(x.shape[0], x.device, x.dtype), reset)
        lstm = self.lstm  # the cell op, not a one-step nn.LSTM call: 34 us a step against 82 (B=32, width 64, CPU)
        h, c = torch.lstm_cell(x, state, lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0)
        return h, (h, c)
