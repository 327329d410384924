"""``python -m recurl.bench memory``: forward+backward time of one memory layer, parallel vs stepwise vs nn.LSTM.

Each backbone's cell (one layer, width D -> D, as inside ``Memory``) runs over [B, T, D] inputs with episode starts
sprinkled at random (p = 1/64 per step): once through its parallel ``forward``, once as a Python loop of ``step``.
The reference is ``torch.nn.LSTM`` of the same width over the same input *without* resets (cuDNN/oneDNN cannot reset
mid-sequence). Sizes: B=16, T=512, D=64 on CPU; B=64, D=256, T in {128, 512, 1024} on CUDA. The three are timed in
turns, round after round, and each column is a median: on a shared machine whose speed drifts, back-to-back
medians of one and then the other skewed their ratio by up to 40%.

``--layouts`` times instead an ``nn.LSTM`` and an ``nn.GRU`` layer with resets in each of ``run_with_resets``'
layouts (packed segments, saturated reset steps), beside ``nn.LSTM`` without resets: how to choose between the
layouts on a device where they have not been measured.
"""

from __future__ import annotations

import datetime
import time

import torch

from recurl.bench.options import available_device
from recurl.bench.timing import device_name, forward_backward, interleaved_median_ms
from recurl.command_line import Parser, positive_int
from recurl.memory import MEMORIES
from recurl.memory.library_rnn import run_with_resets

RESET_PROBABILITY = 1 / 64


def _reference_and_inputs(
    batch: int, length: int, dim: int, device: torch.device
) -> tuple[torch.nn.LSTM, torch.Tensor, torch.Tensor]:
    """The reference ``nn.LSTM`` (batch-first), an input [B, T, D] that takes gradients, and resets [B, T] drawn
    with ``RESET_PROBABILITY``."""
    lstm = torch.nn.LSTM(dim, dim, batch_first=True).to(device)
    x = torch.randn(batch, length, dim, device=device, requires_grad=True)
    return lstm, x, torch.rand(batch, length, device=device) < RESET_PROBABILITY


def time_layer(
    name: str, batch: int, length: int, dim: int, device: torch.device, rounds: int, clock=time.perf_counter
) -> dict[str, float]:
    """Median ms of the layer's parallel and stepwise forward+backward and of ``nn.LSTM``'s, timed in turns."""
    cell = MEMORIES[name](dim).to(device)
    lstm, x, resets = _reference_and_inputs(batch, length, dim, device)
    state = cell.initial_state(batch, device, x.dtype)

    def steps():
        s, ys = state, []
        for t in range(length):
            y, s = cell.step(x[:, t], s, resets[:, t])
            ys.append(y)
        return torch.stack(ys, 1)

    return interleaved_median_ms(
        {
            "parallel": forward_backward(lambda: cell(x, state, resets)[0]),
            "stepwise": forward_backward(steps),
            "lstm": forward_backward(lambda: lstm(x)[0]),
        },
        device,
        rounds,
        clock=clock,
    )


def time_layouts(
    kind: str, batch: int, length: int, dim: int, device: torch.device, rounds: int, clock=time.perf_counter
) -> dict[str, float]:
    """Median ms of one ``nn.LSTM`` or ``nn.GRU`` layer over the same input and resets in each of
    ``run_with_resets``' layouts, and of ``nn.LSTM`` without resets, forward+backward, timed in turns."""
    rnn = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](dim, dim).to(device)
    lstm, x, resets = _reference_and_inputs(batch, length, dim, device)
    state = tuple(torch.zeros(batch, dim, device=device) for _ in range(2 if kind == "lstm" else 1))
    return interleaved_median_ms(
        {
            "packed": forward_backward(lambda: run_with_resets(rnn, x, state, resets, "packed")[0]),
            "reset_steps": forward_backward(lambda: run_with_resets(rnn, x, state, resets, "reset_steps")[0]),
            "lstm": forward_backward(lambda: lstm(x)[0]),
        },
        device,
        rounds,
        clock=clock,
    )


def main(argv: list[str] | None = None) -> None:
    parser = Parser(prog="python -m recurl.bench memory", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--device", type=available_device, default="auto", help="auto (CUDA if visible, else CPU), cpu, cuda, cuda:N"
    )
    parser.add_argument("--rounds", type=positive_int, default=15, help="timed runs of each, taken in turns")
    parser.add_argument("--memories", nargs="+", default=[m for m in MEMORIES if m != "mlp"], choices=list(MEMORIES))
    parser.add_argument(
        "--size", type=positive_int, nargs=3, metavar=("B", "T", "D"), help="one size instead of the defaults"
    )
    parser.add_argument("--threads", type=positive_int, help="torch threads (default: torch's, one per core)")
    parser.add_argument(
        "--cpu-time", action="store_true",
        help="time this process's CPU use instead of wall time (with --threads 1 on CPU: robust to a busy machine)",
    )
    parser.add_argument(
        "--layouts", action="store_true",
        help="instead: nn.LSTM and nn.GRU layers with resets in each of run_with_resets' layouts (packed segments, "
        "reset steps), to choose between them on a device",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.process_time if args.cpu_time else time.perf_counter
    device = args.device
    sizes = [(64, t, 256) for t in (128, 512, 1024)] if device.type == "cuda" else [(16, 512, 64)]
    if args.size:
        sizes = [tuple(args.size)]
    what = "CPU time" if args.cpu_time else "wall time"
    print(f"# memory layers, forward+backward, {what}, {device_name(device)}, torch {torch.__version__}, "
          f"{datetime.date.today()}")
    if args.layouts:
        print("| B | T | D | layer | packed ms | reset steps ms | packed / reset steps | nn.LSTM (no resets) ms |")
        print("|---|---|---|---|---|---|---|---|")
        for batch, length, dim in sizes:
            for kind in ("lstm", "gru"):
                t = time_layouts(kind, batch, length, dim, device, args.rounds, clock)
                print(
                    f"| {batch} | {length} | {dim} | nn.{kind.upper()} | {t['packed']:.2f} | {t['reset_steps']:.2f} | "
                    f"{t['packed'] / t['reset_steps']:.2f}x | {t['lstm']:.2f} |",
                    flush=True,
                )
        return
    print(
        "| B | T | D | backbone | parallel ms | stepwise ms | stepwise / parallel | nn.LSTM (no resets) ms "
        "| nn.LSTM / parallel |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for batch, length, dim in sizes:
        for name in args.memories:
            t = time_layer(name, batch, length, dim, device, args.rounds, clock)
            print(
                f"| {batch} | {length} | {dim} | {name} | {t['parallel']:.2f} | {t['stepwise']:.1f} | "
                f"{t['stepwise'] / t['parallel']:.1f}x | {t['lstm']:.2f} | {t['lstm'] / t['parallel']:.2f}x |",
                flush=True,
            )
