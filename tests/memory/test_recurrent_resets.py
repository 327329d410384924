"""The LSTM and GRU backbones (library kernels, not scans) keep the memory contract on every shape of episode
boundary: forward with resets equals the step loop, outputs, final state and gradients, in fp64 and fp32."""

import pytest
import torch

from recurl.memory import make_memory

INPUT, HIDDEN = 5, 8


def resets_of(pattern, batch, length):
    resets = torch.zeros(batch, length, dtype=torch.bool)
    if pattern == "random":
        resets = torch.rand(batch, length) < 0.15
    elif pattern == "at_t0":
        resets[:, 0] = True
        resets[0, length // 2] = True
    elif pattern == "back_to_back":  # length-1 segments
        resets[:, 3:9] = True
    elif pattern == "all":  # every step starts an episode
        resets[:] = True
    elif pattern == "last_longest":
        resets[:, [1, 3, 4]] = True
    elif pattern == "last_shortest":
        resets[:, [10, length - 1]] = True
    elif pattern == "mixed_rows":  # one row of each kind side by side
        resets[0] = True
        resets[1, [5, 6, 7]] = True
        resets[min(2, batch - 1), length - 1] = True
    return resets


CASES = [
    pytest.param(pattern, 4, id=pattern)
    for pattern in ["random", "at_t0", "back_to_back", "all", "none", "last_longest", "last_shortest", "mixed_rows"]
] + [pytest.param("random", 1, id="B=1-random"), pytest.param("none", 1, id="B=1-none")]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("pattern, batch", CASES)
@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_forward_equals_step_loop(name, pattern, batch, dtype):
    mem = make_memory(name, INPUT, HIDDEN, num_layers=2).to(dtype)
    length = 19
    resets = resets_of(pattern, batch, length)
    x = torch.randn(batch, length, INPUT, dtype=dtype, requires_grad=True)
    with torch.no_grad():  # a warm state: the first segment must continue it
        warmup = torch.randn(batch, 4, INPUT, dtype=dtype)
        state0 = mem(warmup, mem.initial_state(batch), torch.zeros(batch, 4, dtype=torch.bool))[1]
    state0 = tuple(s.clone().requires_grad_() for s in state0)

    y, state = mem(x, state0, resets)
    s, outputs = state0, []
    for t in range(length):
        y_t, s = mem.step(x[:, t], s, resets[:, t])
        outputs.append(y_t)
    y_steps = torch.stack(outputs, 1)

    tol = dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=2e-4, atol=2e-5)
    torch.testing.assert_close(y, y_steps, **tol)
    for a, b in zip(state, s):
        torch.testing.assert_close(a, b, **tol)
    weights = [torch.randn_like(y)] + [torch.randn_like(part) for part in state]
    wrt = [x, *mem.parameters(), *state0]

    def loss(out, final):
        return (out * weights[0]).sum() + sum((part * w).sum() for part, w in zip(final, weights[1:]))

    for a, b in zip(torch.autograd.grad(loss(y, state), wrt), torch.autograd.grad(loss(y_steps, s), wrt)):
        torch.testing.assert_close(a, b, **tol)
