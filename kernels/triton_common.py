"""What the Triton kernels of every op share: the tile step of a linear scan, the initial-state load, the accumulator
dtypes and the launch checks and defaults. Imported on first use only (see ``backends.triton_available``).

The tile. A program owns one sequence and a ``BLOCK_D`` slice of its channels and walks time in tiles of ``CHUNK``
steps x ``BLOCK_D`` channels: it loads a tile at once (a GPU would otherwise wait a full memory latency per step),
scans it in registers with ``tl.associative_scan`` (combining steps ``(a, b)`` into ``(a1 * a2, a2 * b1 + b2)``), folds
in the state carried from the previous tile, and carries the tile's last row on. ``CHUNK = 1`` is the plain sequential
walk (flash-linear-attention's "fused recurrent" scheme); larger chunks put ``CHUNK`` times more bytes in flight per
program, which is what matters when ``B * D`` is too small to fill the GPU, as it is in RL.

Zero gates. ``a_t == 0`` cuts the past off: ``h_t = b_t`` even if ``h_{t-1}`` is inf or NaN. Every such rule is a
``tl.where`` (multiplying by a mask would turn ``0 * inf`` into NaN). Inside a tile the combined gate of several steps
is a product, and a combined gate of 0 is read as a cut; a product of nonzero gates that underflows float32 (below
~1e-38) is therefore cut too. That drops a term ``product * state`` that is that small anyway; with ``chunk=1`` no
products are formed and a kernel follows the reference step by step.

Offsets. A ``[B, T, D]`` tensor may hold more than 2^31 elements, so indices that are multiplied by a stride are
int64: ``program_block`` returns the sequence index as int64, and every offset computed from it is int64 too.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

#: The dtype each input dtype is accumulated in.
ACCUMULATOR = {
    torch.float16: tl.float32, torch.bfloat16: tl.float32, torch.float32: tl.float32, torch.float64: tl.float64,
}


# The kernels call Triton builtins and this package's helpers only, never a ``@triton.jit`` function of
# triton.language (``tl.zeros``, ``tl.sum``): those are interpreted only if TRITON_INTERPRET was set before triton
# itself was first imported, which a test cannot ensure (tensordict imports triton).


@triton.jit
def _compose(a_first, b_first, a_then, b_then):
    """The step ``h -> then(first(h))``; a gate ``a_then == 0`` discards ``first`` entirely, even an inf or NaN in it
    (so the combined gate of a span that ends after a cut is 0, never ``nan * 0``)."""
    return tl.where(a_then == 0, 0.0, a_first * a_then), tl.where(a_then == 0, b_then, a_then * b_first + b_then)


@triton.jit
def add(x, y):
    return x + y


@triton.jit
def last_row(x, rows, CHUNK: tl.constexpr):
    """Row ``CHUNK - 1`` of the tile ``x`` (selected with where, so inf or NaN in other rows cannot leak in)."""
    return tl.reduce(tl.where(rows[:, None] == CHUNK - 1, x, 0.0), 0, add)


@triton.jit
def scan_tile(a, b, h, rows, CHUNK: tl.constexpr):
    """Run ``h_t = a_t h_{t-1} + b_t`` over the rows of a ``[CHUNK, BLOCK_D]`` tile from the carried state ``h``.

    Returns every row's state and the last one, the state to carry into the next tile. Padding rows should hold
    ``a = 1, b = 0``, which carry the state unchanged.
    """
    a_run, b_run = tl.associative_scan((a, b), 0, _compose)  # each row as if the tile started from zero
    out = tl.where(a_run == 0, b_run, a_run * h[None, :] + b_run)
    return out, last_row(out, rows, CHUNK)


@triton.jit
def program_block(D, BLOCK_D: tl.constexpr, CHUNK: tl.constexpr):
    """This program's sequence (program id 0; int64, as offsets computed from it must be), its ``BLOCK_D`` channels
    (the slice program id 1 picks, and which of them are < D) and the row indices of a tile."""
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    return tl.program_id(0).to(tl.int64), cols, cols < D, tl.arange(0, CHUNK)


@triton.jit
def initial_state(h0_ptr, pid_b, cols, col_ok, D,
                  HAS_H0: tl.constexpr, ACC: tl.constexpr, BLOCK_D: tl.constexpr):
    """This program's channels of ``h0`` (row ``pid_b``, an int64, of a ``[B, D]`` tensor), or zeros when there is
    none."""
    if HAS_H0:
        h = tl.load(h0_ptr + pid_b * D + cols, mask=col_ok, other=0.0).to(ACC)
    else:
        h = tl.full([BLOCK_D], 0.0, ACC)
    return h


#: Whether the kernels were defined under ``TRITON_INTERPRET=1`` (Triton reads it when ``@triton.jit`` runs, that is
#: when this module is first imported); only then can they run on CPU tensors.
INTERPRETED = type(scan_tile).__name__ == "InterpretedFunction"


def tile_config(length: int, dim: int, block_d: int | None, chunk: int | None, num_warps: int | None):
    """Default tile: up to 32 channels x 32 time steps, with a warp per 128 elements (4 per thread, ~60 registers)."""
    block_d = block_d or min(triton.next_power_of_2(dim), 32)
    chunk = chunk or min(triton.next_power_of_2(max(length, 1)), 32)
    for name, value in (("block_d", block_d), ("chunk", chunk)):
        if value < 1 or value & (value - 1):
            raise ValueError(f"triton scan: {name} must be a power of two; got {value}")
    num_warps = num_warps or min(max(block_d * chunk // 128, 1), 8)
    return block_d, chunk, num_warps


def check_inputs(caller: str, *tensors: torch.Tensor | None) -> None:
    """Refuse what the kernels cannot run on: CPU tensors outside the interpreter, mixed devices, integer dtypes
    (bool is allowed: episode-start flags)."""
    tensors = [x for x in tensors if x is not None]
    if not (tensors[0].is_cuda or INTERPRETED):
        raise ValueError(
            f"{caller}: backend 'triton' needs CUDA tensors (or TRITON_INTERPRET=1 set before the first use of the "
            f"backend, to run the kernels slowly on CPU); got tensors on {tensors[0].device}"
        )
    if any(x.device != tensors[0].device for x in tensors):
        raise ValueError(f"{caller}: all inputs must be on one device; got {sorted({str(x.device) for x in tensors})}")
    for x in tensors:
        if x.dtype != torch.bool and x.dtype not in ACCUMULATOR:
            raise ValueError(
                f"{caller}: backend 'triton' supports float16, bfloat16, float32 and float64; got {x.dtype}"
            )


def device_guard(x: torch.Tensor):
    """Launch on the tensor's GPU (Triton launches on the current device)."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()
