"""Compile every Triton kernel for a GPU ahead of time, on a machine without one.

``python tools/compile_check.py [--arch 90]`` (a CI tool, not part of the installed package) builds each kernel
(forward and backward; float32 and bfloat16 inputs, complex64 and complex128 for the complex scan; the default tile)
down to a cubin for that compute capability and prints its registers and spill stack.
The interpreter that runs the kernel tests on CPU executes them as numpy code; it does not type-check them the way
the compiler does, nor say whether they fit in registers. Exit status 1 if a kernel spills. Must run without
``TRITON_INTERPRET`` (the kernels are then plain functions, not compilable ones).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from recurl.kernels.triton_common import tile_config

#: Each input dtype compiled: the pointer type of its tensors (complex tensors are read as their real views) and the
#: accumulator.
INPUTS = {
    "float32": ("*fp32", tl.float32), "bfloat16": ("*bf16", tl.float32),
    "complex64": ("*fp32", tl.float32), "complex128": ("*fp64", tl.float64),
}
REAL, COMPLEX = ("float32", "bfloat16"), ("complex64", "complex128")

#: Pointers that stay at least float32 when the inputs are half: the carried states (see each kernel's wrapper).
STATES = {"h0_ptr", "dh0_ptr", "m0_ptr", "u0_ptr", "w0_ptr", "du0_ptr", "dw0_ptr", "m_ptr", "u_ptr"}


def kernel_modules():
    """(name, the family's (forward, backward) kernels, constexprs other than the defaults, input dtypes) per kernel
    family."""
    from recurl.kernels.attention_scan import triton_scan as attention
    from recurl.kernels.gated_scan import triton_scan as gated
    from recurl.kernels.gated_scan.triton_cells import CELLS
    from recurl.kernels.linear_scan import triton_complex, triton_scan as linear

    return [
        ("linear_scan", linear.KERNELS, {}, REAL),
        ("linear_scan complex", triton_complex.KERNELS, {}, COMPLEX),
        *((cell, gated.KERNELS, {"CELL": cell_id, "P": projections}, REAL)
          for cell, (cell_id, projections) in CELLS.items()),
        ("attention_scan", attention.KERNELS, {"BLOCK_D": 64, "CHUNK": 16}, REAL),  # heads of 64 channels
    ]


def compile_kernel(kernel, inputs: str, constexprs: dict, arch: int):
    """Compile with every ``*_ptr`` argument a pointer to the ``inputs`` dtype's (``reset_ptr``: uint8 flags; the
    states in ``STATES``: float32 for half inputs), every other runtime argument an int32, the default tile (32 x 32,
    HAS_H0 true) updated with ``constexprs``, and as many warps as the launch would use for that tile."""
    pointer_type, accumulator = INPUTS[inputs]
    signature = {}
    for param in kernel.params:
        if param.is_constexpr:
            signature[param.name] = "constexpr"
        elif param.name == "reset_ptr":
            signature[param.name] = "*u8"
        elif param.name in STATES and pointer_type == "*bf16":
            signature[param.name] = "*fp32"
        elif param.name.endswith("_ptr"):
            signature[param.name] = pointer_type
        else:
            signature[param.name] = "i32"
    values = {"HAS_H0": True, "ACC": accumulator, "BLOCK_D": 32, "CHUNK": 32, **constexprs}
    source = ASTSource(
        fn=kernel, signature=signature,
        constexprs={(i,): values[name] for i, name in enumerate(signature) if signature[name] == "constexpr"},
    )
    *_, num_warps = tile_config(values["CHUNK"], values["BLOCK_D"], values["BLOCK_D"], values["CHUNK"], None)
    return triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps})


def resource_usage(cubin: bytes) -> tuple[int, int]:
    """(registers per thread, spill stack bytes) read from the cubin with the cuobjdump Triton ships."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        report = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"REG:(\d+)", report).group(1)), int(re.search(r"STACK:(\d+)", report).group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/compile_check.py", description=__doc__.split("\n")[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability x 10 (90: H100/H200)")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        parser.error("unset TRITON_INTERPRET: interpreted kernels cannot be compiled")
    spilled = False
    print(f"| kernel | inputs | registers | spill bytes |  (sm_{args.arch}, triton {triton.__version__})")
    for family, kernels, constexprs, inputs in kernel_modules():
        for kernel in kernels:
            for dtype in inputs:
                compiled = compile_kernel(kernel, dtype, constexprs, args.arch)
                registers, spill = resource_usage(compiled.asm["cubin"])
                spilled |= spill > 0
                print(f"| {family} {kernel.fn.__name__} | {dtype} | {registers} | {spill} |", flush=True)
    return int(spilled)


if __name__ == "__main__":
    sys.exit(main())
