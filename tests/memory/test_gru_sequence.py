"""``gru_sequence`` runs its step loops on one torch thread while a step's matmul is small, and gives the process its
thread count back afterwards, also when a loop fails."""

import pytest
import torch

from recurl.memory import gru_sequence as module
from recurl.memory.gru_sequence import ONE_THREAD_BELOW_MACS, gru_sequence


def run(batch, size, length=6):
    gi = torch.randn(batch, length, 3 * size, requires_grad=True)
    w_hh = torch.randn(3 * size, size, requires_grad=True)
    b_hh = torch.randn(3 * size, requires_grad=True)
    resets = torch.zeros(batch, length, dtype=torch.bool)
    resets[0, 1] = True
    y, h = gru_sequence(gi, torch.zeros(batch, size), w_hh, b_hh, resets)
    (y.sum() + h.sum()).backward()


@pytest.fixture
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def loop_threads(monkeypatch):
    """The thread count at each step of the forward loop (its last op records it)."""
    seen = []
    lerp = torch.lerp

    def recording_lerp(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return lerp(*args, **kwargs)

    monkeypatch.setattr(module.torch, "lerp", recording_lerp)
    return seen


def test_small_steps_loop_on_one_thread_and_restore_the_count(two_threads, loop_threads):
    run(batch=4, size=8)
    assert loop_threads and set(loop_threads) == {1}
    assert torch.get_num_threads() == 2


def test_large_steps_keep_every_thread(two_threads, loop_threads):
    size = 256
    batch = ONE_THREAD_BELOW_MACS // (3 * size * size) + 1
    run(batch=batch, size=size, length=2)
    assert set(loop_threads) == {2}


def test_a_failing_loop_gives_the_threads_back(two_threads, monkeypatch):
    def failing_lerp(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(module.torch, "lerp", failing_lerp)
    with pytest.raises(RuntimeError, match="out of memory"):
        run(batch=4, size=8)
    assert torch.get_num_threads() == 2
