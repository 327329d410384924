#!/usr/bin/env bash
# The GPU check, in one device call from the repository root: install what the GPU image lacks (wheels carried in
# .whl/) and the project, print the GPU and versions, run the kernel and memory tests and a DQN update on CUDA, print
# the kernels table and end-to-end PPO speed per backbone. Each part runs under its own time limit, all of them under
# one deadline, and tees its output to a file in $OUT, so that a hang costs one part and partial results still come
# back.
#
#   bash tools/gpu_check.sh          on the GPU machine (BENCHMARKS.md, "Triton kernels", gives the device call)
#   bash tools/gpu_check.sh --tiny   a dry run on CPU: Triton's interpreter, tiny sizes, a few tests; OUT defaults to
#                                    runs/gpu_check
#
# Files in $OUT (the device tool brings back at most 8): summary.md (each part's exit status and seconds), setup.log
# (installs, imports, GPU and versions), tests.log and tests.xml (pytest), kernels.md and e2e.md (the tables),
# stderr.log (the benchmarks' warnings and errors). Settings (environment): GPU_CHECK_BUDGET (seconds for the
# whole script; default 540, for a device call of timeout_s=600), GPU_CHECK_WHEELS (default .whl), GPU_CHECK_SITE
# (where the wheels go; default /tmp/site).
set -uo pipefail

TINY=0
case "${1:-}" in
    --tiny) TINY=1 ;;
    "") ;;
    *) echo "usage: bash tools/gpu_check.sh [--tiny]" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu_check}
WHEELS=${GPU_CHECK_WHEELS:-.whl}
SITE=${GPU_CHECK_SITE:-/tmp/site}
DEADLINE=$((SECONDS + ${GPU_CHECK_BUDGET:-540}))
mkdir -p "$OUT"
for file in summary.md setup.log tests.log tests.xml kernels.md e2e.md stderr.log; do : >"$OUT/$file"; done

export PYTHONUNBUFFERED=1 MPLBACKEND=Agg PYGAME_HIDE_SUPPORT_PROMPT=1 PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
if ((TINY)); then
    export TRITON_INTERPRET=1
else
    unset TRITON_INTERPRET  # the kernels must compile for the GPU, not run in the interpreter
fi

echo "| part | exit status | seconds | limit |" >>"$OUT/summary.md"
echo "|---|---|---|---|" >>"$OUT/summary.md"

# part NAME LIMIT FILE COMMAND...: COMMAND under min(LIMIT, the time left to the deadline), its output appended to
# FILE (a table, *.md: stdout only; its stderr to stderr.log) and shown; a row in summary.md (exit status 124: the
# part ran out of time).
part() {
    local name=$1 limit=$2 file=$3 start=$SECONDS rc
    shift 3
    local left=$((DEADLINE - SECONDS))
    ((limit > left)) && limit=$left
    if ((limit < 20)); then
        echo "| $name | skipped: out of time | 0 | $limit |" >>"$OUT/summary.md"
        return
    fi
    echo "=== $name (limit ${limit}s): $*" | tee -a "$OUT/stderr.log"
    if [[ $file == *.md ]]; then
        timeout -k 10 "$limit" "$@" 2> >(tee -a "$OUT/stderr.log" >&2) | tee -a "$OUT/$file"
    else
        timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$OUT/$file"
    fi
    rc=$?
    echo "| $name | $rc | $((SECONDS - start)) | $limit |" >>"$OUT/summary.md"
}

# The parts. Each is a function run in its own bash (exported), so that timeout can stop it.
setup() {
    set -x
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        "$WHEELS"/*.whl || return
    # The package-dir mapping (agents/ -> recurl.agents, ...) needs an install; the image's setuptools builds it,
    # else the one carried in $WHEELS/build.
    if ! python3 -m pip install -q --no-index --no-deps --no-build-isolation -e .; then
        python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/build-site "$WHEELS"/build/*.whl &&
            PYTHONPATH=/tmp/build-site:$PYTHONPATH python3 -m pip install -q --no-index --no-deps \
                --no-build-isolation -e . || return
    fi
    set +x
    python3 - <<'EOF'
import importlib, importlib.metadata as metadata
modules = ["gymnasium", "popgym", "minigrid", "hydra", "omegaconf", "tensordict", "tensorboard", "tqdm", "matplotlib",
           "imageio", "PIL", "hypothesis", "yaml", "pytest", "xdist", "recurl.train", "recurl.bench.kernels"]
missing = []
for name in modules:
    try:
        module = importlib.import_module(name)
        print(f"import {name}: {getattr(module, '__version__', '')} {module.__file__}")
    except Exception as error:  # each missing one named, not just the first
        missing.append(name)
        print(f"import {name}: FAILED {type(error).__name__}: {error}")
if missing:
    raise SystemExit(f"missing: {', '.join(missing)}")
EOF
}

info() {
    nvidia-smi || echo "no nvidia-smi"
    python3 - <<'EOF'
import os, sys
import torch, triton
print("python", sys.version.split()[0], "| torch", torch.__version__, "| CUDA", torch.version.cuda,
      "| cuDNN", torch.backends.cudnn.version(), "| triton", triton.__version__)
print("TRITON_INTERPRET:", os.environ.get("TRITON_INTERPRET", "unset"))
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"{p.name}: {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs, "
          f"compute capability {p.major}.{p.minor}")
else:
    print("CUDA: not available")
from recurl.kernels import triton_common
print("Triton kernels interpreted:", triton_common.INTERPRETED)
EOF
}

tests() {
    local options=(-q -p no:cacheprovider --durations 15 --junitxml "$OUT/tests.xml")
    python3 -c "import xdist" 2>/dev/null && options+=(-n "$WORKERS")
    python3 -c "import pytest_timeout" 2>/dev/null && options+=(--timeout 150)
    if ((TINY)); then  # one kernel family and one backbone's contract: the command, not the suite, is checked here
        python3 -m pytest "${options[@]}" tests/kernels/test_gated_scan_triton.py tests/memory/test_memory_contract.py \
            -k "mingru and not minlstm" --maxfail 3
    else
        OMP_NUM_THREADS=2 python3 -m pytest "${options[@]}" tests/kernels tests/memory \
            tests/agents/test_dqn.py::test_a_dqn_iteration_learns_on_cuda
    fi
}

if ((TINY)); then
    WORKERS=2
    KERNELS=(--device cpu --batch 2 --dim 8 --repeats 1 --backends triton torch)
    ISSUE_TABLE=(--lengths 8 --dtypes fp32 --compile)
    MORE_TABLES=(--lengths 4 --dtypes bf16 --skip-loop)
    COMPLEX_TABLE=(--complex --lengths 8)
    PPO=(--device cpu --num-envs 4 8 --speed-steps-per-env 128)
    LAYOUTS=(--device cpu --size 2 16 8 --rounds 2)
else
    WORKERS=8
    KERNELS=()  # B=64, D=256, CUDA, triton and torch backends
    ISSUE_TABLE=(--lengths 1024 --dtypes fp32 --compile)
    MORE_TABLES=(--lengths 128 4096 --dtypes fp32 bf16 --skip-loop)
    COMPLEX_TABLE=(--complex --lengths 1024 4096)
    PPO=(--device cuda --num-envs 64 1024 --speed-steps-per-env 256)  # 4 updates of rollouts of 64 per run
    LAYOUTS=(--device cuda --size 64 1024 256 --rounds 10)  # LSTM/GRU with resets: packed cuDNN or reset steps?
fi
export TINY OUT WHEELS SITE WORKERS
export -f setup info tests

part setup 150 setup.log bash -c setup
part info 40 setup.log bash -c info
part tests 180 tests.log bash -c tests
part kernels 150 kernels.md python3 -m recurl.bench kernels "${KERNELS[@]}" "${ISSUE_TABLE[@]}"
part e2e 180 e2e.md python3 -m recurl.bench ppo --part speed "${PPO[@]}"
part layouts 45 kernels.md python3 -m recurl.bench memory --layouts "${LAYOUTS[@]}"
part kernels-more 120 kernels.md python3 -m recurl.bench kernels "${KERNELS[@]}" "${MORE_TABLES[@]}"
part kernels-complex 60 kernels.md python3 -m recurl.bench kernels "${KERNELS[@]}" "${COMPLEX_TABLE[@]}"

# Last, so that the reply's tail holds them: the tables and each part's status.
echo
cat "$OUT/kernels.md" "$OUT/e2e.md"
grep -E "passed|failed|error" "$OUT/tests.log" | tail -3
cat "$OUT/summary.md"
