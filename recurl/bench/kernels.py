"""``python -m recurl.bench kernels``: forward+backward time of the scan and of each layer, against cuDNN and a loop.

Rows, each at B x T x D with episode starts at random (p = 1/64 per step) where the row can reset:

- ``scan <backend>``: ``linear_scan`` alone, with its achieved bandwidth (forward reads a, b and writes h; backward
  reads a, h, dh and writes da, db: 8 tensors, 32 bytes per fp32 element) as a fraction of the device's copy
  bandwidth.
- ``<backbone> <backend>``: one layer (as inside ``Memory``) of every scanned backbone (``mingru``, ``minlstm``,
  ``aaren``, ``ffm``, ``lru``: those with a ``scan_backend``), scan on that backend; on ``triton`` minGRU and minLSTM
  run their fused kernels (gates, resets and scan in one pass each way), Aaren its attention scan, FFM and LRU the
  complex ``linear_scan`` (fp32 only: torch has no bfloat16 complex type).
- ``nn.LSTM``, ``nn.GRU``: cuDNN (oneDNN on CPU) of the same width, *without* resets: they cannot reset mid-sequence.
- ``GRUCell loop``: ``nn.GRUCell`` stepped over time with resets, the way recurrent RL code without scans trains.
- ``minGRU log-space compiled`` (``--compile``): the minGRU paper's log-space formulation (cumsum + logcumsumexp,
  no resets), through ``torch.compile``.

``--complex`` prints another table instead: ``linear_scan`` of complex64 ``[B, T, D]`` tensors (FFM's and LRU's
recurrence) against two float32 scans of the same ``[B, T, D]`` (gates |a|, inputs the real and imaginary parts of
b), forward+backward, timed in turns (``interleaved_median_ms``) so that the ratio survives a machine whose speed
drifts. The same bytes move either way.

Every row reports its peak memory above the inputs (CUDA only) and what autograd saves for its backward (any
device). Triton rows need CUDA (or, only to check this script, TRITON_INTERPRET=1 on CPU); on CPU the table still runs
at small sizes to check the script and compare the torch backend with oneDNN.
"""

from __future__ import annotations

import datetime
import inspect
import math

import torch
import torch.nn.functional as F
from torch import nn

from recurl.bench.options import available_device
from recurl.bench.timing import device_name, forward_backward, interleaved_median_ms, median_ms
from recurl.command_line import Parser, positive_int
from recurl.kernels import linear_scan
from recurl.memory import MEMORIES

RESET_PROBABILITY = 1 / 64
SCAN_TENSORS_MOVED = 8  # fwd: a, b, h; bwd: a, h, dh, da, db
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
#: The backbones whose layer runs on a scan backend, in the registry's order.
SCANNED = [name for name, cell in MEMORIES.items() if "scan_backend" in inspect.signature(cell).parameters]
#: Backbones whose recurrence is complex: no bf16 rows (torch has no bfloat16 complex type).
COMPLEX_STATE = {"ffm", "lru"}


def copy_bandwidth(device: torch.device, repeats: int) -> float:
    """Bytes per second of a large device-to-device copy (read + write)."""
    x = torch.empty(1 << 28 if device.type == "cuda" else 1 << 24, device=device)
    y = torch.empty_like(x)
    return 2 * x.numel() * x.element_size() / (median_ms(lambda: y.copy_(x), device, repeats) / 1e3)


def log_space_mingru(k: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The minGRU paper's parallel form in log space (no resets possible: a gate of 0 is log 0)."""
    log_z, log_coeffs = -F.softplus(-k), -F.softplus(k)
    log_tilde = torch.where(h >= 0, (F.relu(h) + 0.5).log(), -F.softplus(-h))
    a_star = log_coeffs.cumsum(dim=1)
    return (a_star + (log_z + log_tilde - a_star).logcumsumexp(dim=1)).exp()


def saved_for_backward_mib(run) -> float:
    """MiB of the tensors autograd keeps from one forward for the backward (each storage once; the inputs and weights
    it keeps are counted too). Read from autograd's saved-tensor hooks, so it is measured on any device, cuDNN's
    reserve space included."""
    storages = {}

    def keep(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        run()
    return sum(storages.values()) / 2**20


def measure(run, device: torch.device, repeats: int) -> tuple[float, float, float]:
    """(median ms of forward+backward, peak MiB allocated above what was allocated before (CUDA only), MiB saved for
    the backward)."""
    fn = forward_backward(run)
    saved = saved_for_backward_mib(run)
    if device.type != "cuda":
        return median_ms(fn, device, repeats), float("nan"), saved
    fn()
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    ms = median_ms(fn, device, repeats)
    return ms, (torch.cuda.max_memory_allocated(device) - base) / 2**20, saved


def rows(batch, length, dim, dtype, device, backends, compile_log_space):
    """(name, callable doing one forward, bytes moved by the scan or None) for every row of one size."""
    def leaf(*shape):
        return torch.randn(*shape, device=device, dtype=dtype, requires_grad=True)

    x = leaf(batch, length, dim)
    resets = torch.rand(batch, length, device=device) < RESET_PROBABILITY
    a = torch.rand(batch, length, dim, device=device, dtype=dtype).masked_fill(resets[..., None], 0).requires_grad_()
    b = leaf(batch, length, dim)
    scan_bytes = SCAN_TENSORS_MOVED * b.element_size() * b.numel()
    for backend in backends:
        yield f"scan {backend}", lambda backend=backend: linear_scan(a, b, backend=backend), scan_bytes
    for name in SCANNED:
        if name in COMPLEX_STATE and dtype != torch.float32:
            continue
        for backend in backends:
            cell = MEMORIES[name](dim, scan_backend=backend).to(device, dtype)
            state = cell.initial_state(batch, device, dtype)
            yield f"{name} {backend}", lambda cell=cell, state=state: cell(x, state, resets)[0], None
    for rnn in (nn.LSTM, nn.GRU):
        module = rnn(dim, dim, batch_first=True).to(device, dtype)
        yield f"nn.{rnn.__name__} (no resets)", lambda module=module: module(x)[0], None
    gru_cell = nn.GRUCell(dim, dim).to(device, dtype)

    def cell_loop():
        h, outputs = x.new_zeros(batch, dim), []
        for t in range(length):
            h = gru_cell(x[:, t], torch.where(resets[:, t, None], 0.0, h))
            outputs.append(h)
        return torch.stack(outputs, dim=1)

    yield "GRUCell loop", cell_loop, None
    if compile_log_space:
        proj = nn.Linear(dim, 2 * dim).to(device, dtype)
        compiled = torch.compile(log_space_mingru)
        yield "minGRU log-space compiled (no resets)", lambda: compiled(*proj(x).chunk(2, dim=-1)), None


def complex_against_real(batch, length, dim, device, backend, rounds) -> dict[str, float]:
    """Median forward+backward ms of the complex scan of ``[B, T, D]`` and of two real scans of ``[B, T, D]``."""
    resets = torch.rand(batch, length, 1, device=device) < RESET_PROBABILITY
    modulus = (0.8 + 0.2 * torch.rand(batch, length, dim, device=device)).masked_fill(resets, 0)
    a = torch.polar(modulus, 2 * math.pi * torch.rand(batch, length, dim, device=device)).requires_grad_()
    b = torch.randn(batch, length, dim, device=device, dtype=torch.complex64, requires_grad=True)
    gates = modulus.clone().requires_grad_()
    inputs = [part.detach().clone().requires_grad_() for part in (b.real, b.imag)]

    def complex_scan():
        torch.view_as_real(linear_scan(a, b, backend=backend)).square().mean().backward()

    def two_real_scans():
        sum(linear_scan(gates, x, backend=backend).square().mean() for x in inputs).backward()

    return interleaved_median_ms({"complex": complex_scan, "two real": two_real_scans}, device, rounds)


def main(argv: list[str] | None = None) -> None:
    parser = Parser(prog="python -m recurl.bench kernels", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--device", type=available_device, default="auto", help="auto (CUDA if visible, else CPU), cpu, cuda, cuda:N"
    )
    parser.add_argument("--batch", type=positive_int, default=64)
    parser.add_argument("--dim", type=positive_int, default=256)
    parser.add_argument("--lengths", type=positive_int, nargs="+", default=[128, 512, 1024, 4096])
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--repeats", type=positive_int, default=20)
    parser.add_argument("--compile", action="store_true", help="add the torch.compile'd log-space minGRU row")
    parser.add_argument("--skip-loop", action="store_true", help="leave out the (slow) GRUCell loop")
    parser.add_argument("--complex", action="store_true",
                        help="instead: the complex64 scan against two float32 scans of the same size")
    parser.add_argument("--torch-threads", type=positive_int, help="torch's intra-op threads (default: torch's own)")
    parser.add_argument(
        "--backends", nargs="+", choices=["triton", "torch"],
        help="scan backends to time (default: triton and torch on CUDA, torch on CPU; triton on CPU needs "
             "TRITON_INTERPRET=1, which only checks this script)",
    )
    args = parser.parse_args(argv)
    device = args.device
    backends = args.backends or (["triton", "torch"] if device.type == "cuda" else ["torch"])
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    if args.complex:
        print(f"# complex linear_scan vs two real scans, forward+backward, {device_name(device)}, "
              f"torch {torch.__version__}, {datetime.date.today()}")
        print("| B | T | D | backend | complex64 ms | two float32 ms | complex / two real |")
        print("|---|---|---|---|---|---|---|")
        for length in args.lengths:
            for backend in backends:
                t = complex_against_real(args.batch, length, args.dim, device, backend, args.repeats)
                print(f"| {args.batch} | {length} | {args.dim} | {backend} | {t['complex']:.3f} | "
                      f"{t['two real']:.3f} | {t['complex'] / t['two real']:.2f}x |", flush=True)
        return
    bandwidth = copy_bandwidth(device, args.repeats)
    print(f"# kernels, forward+backward, {device_name(device)}, torch {torch.__version__}, "
          f"{datetime.date.today()}; copy bandwidth {bandwidth / 1e9:.0f} GB/s")
    print("| dtype | T | row | ms | vs minGRU " + backends[0] + " | scan GB/s (% of copy) | peak MiB | saved MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for dtype_name in args.dtypes:
        for length in args.lengths:
            # Each row is printed as soon as minGRU's time (the ratio's reference, the third row) is known, so that a
            # run stopped at its time limit (the GPU check) keeps the rows it measured.
            pending, reference = [], None
            for name, run, scan_bytes in rows(
                args.batch, length, args.dim, DTYPES[dtype_name], device, backends, args.compile
            ):
                if args.skip_loop and name == "GRUCell loop":
                    continue
                repeats = max(2, args.repeats // 10) if name == "GRUCell loop" else args.repeats
                pending.append((name, *measure(run, device, repeats), scan_bytes))
                if name == f"mingru {backends[0]}":
                    reference = pending[-1][1]
                while reference is not None and pending:
                    print_row(dtype_name, length, *pending.pop(0), reference, bandwidth)


def print_row(dtype_name, length, name, ms, peak, saved, scan_bytes, reference, bandwidth) -> None:
    achieved = "" if scan_bytes is None else (
        f"{scan_bytes / (ms / 1e3) / 1e9:.0f} ({100 * scan_bytes / (ms / 1e3) / bandwidth:.0f}%)"
    )
    print(f"| {dtype_name} | {length} | {name} | {ms:.3f} | {ms / reference:.2f}x | {achieved} | {peak:.0f} | "
          f"{saved:.3g} |", flush=True)
