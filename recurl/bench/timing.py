"""Wall-clock timing of callables: warm-up runs first, then the median of timed runs (CUDA synchronised)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def forward_backward(run: Callable[[], torch.Tensor]) -> Callable[[], None]:
    """A callable doing ``run()``'s forward and a backward through it (of a float32 scalar, for any output dtype)."""

    def fn():
        run().float().square().mean().backward()

    return fn


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn: Callable[[], object], device: torch.device, repeats: int = 10, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def interleaved_median_ms(
    fns: dict[str, Callable[[], object]],
    device: torch.device,
    rounds: int,
    warmup: int = 1,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Median ms of each callable, timed in turns (each runs once per round), so that a machine whose speed drifts
    (a shared VM) slows them alike and the ratios between them stay meaningful. ``clock=time.process_time`` counts
    this process's CPU time instead of wall time: with one torch thread, what a run costs however often other
    processes preempt it."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            _sync(device)
            start = clock()
            fn()
            _sync(device)
            times[name].append(clock() - start)
    return {name: statistics.median(values) * 1e3 for name, values in times.items()}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} torch threads)"
