"""The benchmark scripts run and print a complete table (tiny sizes: this checks the scripts, not the speed)."""

import re
import subprocess

import pytest
import torch

from recurl.bench import __main__ as bench
from recurl.bench import agent, kernels, learning, memory
from recurl.bench.__main__ import BENCHES
from recurl.memory import MEMORIES

ROW = re.compile(r"^\| .* \|$")


def table_rows(text):
    return [line for line in text.splitlines() if ROW.match(line) and not line.startswith("|---")][1:]


def numbers(row):
    cells = row.strip("|").split("|")
    return [float(cell.strip().rstrip("x")) for cell in cells if re.fullmatch(r"\s*[\d.]+x?\s*", cell)]


@pytest.mark.parametrize("clock", [[], ["--threads", "1", "--cpu-time"]], ids=["wall", "cpu"])
def test_memory_bench_times_every_backbone(capsys, clock):
    # D = 8: FFM's default sizes need a multiple of 2 * context_size (8)
    memory.main(["--device", "cpu", "--size", "2", "8", "8", "--rounds", "2", *clock])
    out = capsys.readouterr().out
    assert ("CPU time" in out) == bool(clock)
    rows = table_rows(out)
    assert [row.split("|")[4].strip() for row in rows] == [name for name in MEMORIES if name != "mlp"]
    for row in rows:
        assert all(value > 0 for value in numbers(row)[3:])  # after B, T, D: times and ratios


def test_memory_bench_times_both_layouts_of_the_library_rnns(capsys):
    memory.main(["--device", "cpu", "--size", "2", "8", "8", "--rounds", "2", "--layouts"])
    rows = table_rows(capsys.readouterr().out)
    assert [row.split("|")[4].strip() for row in rows] == ["nn.LSTM", "nn.GRU"]
    for row in rows:
        assert len(numbers(row)) == 7 and all(value > 0 for value in numbers(row)[3:])


def test_kernels_bench_has_every_row_for_every_dtype(capsys):
    # D = 8: FFM's default sizes need a multiple of 2 * context_size (8)
    kernels.main(["--device", "cpu", "--batch", "2", "--dim", "8", "--lengths", "8", "--repeats", "2"])
    rows = table_rows(capsys.readouterr().out)
    names = [row.split("|")[3].strip() for row in rows]
    layers = ["mingru torch", "minlstm torch", "aaren torch"]
    baselines = ["nn.LSTM (no resets)", "nn.GRU (no resets)", "GRUCell loop"]
    fp32 = ["scan torch", *layers, "ffm torch", "lru torch", *baselines]
    assert names == fp32 + ["scan torch", *layers, *baselines]  # bf16: FFM and LRU are complex, fp32 only
    for row in rows:
        assert float(row.split("|")[4]) > 0 and float(row.split("|")[8]) > 0  # ms, MiB saved for the backward
    assert "%" in rows[0]  # the scan row reports its bandwidth


def test_kernels_bench_triton_rows_run_under_the_interpreter(capsys):
    """The GPU table's Triton rows, checked on CPU (conftest sets TRITON_INTERPRET) so a GPU session cannot lose its
    time to a broken script."""
    pytest.importorskip("triton")
    kernels.main(["--device", "cpu", "--batch", "2", "--dim", "8", "--lengths", "5", "--repeats", "1",
                  "--dtypes", "fp32", "--backends", "triton", "torch", "--skip-loop"])
    rows = table_rows(capsys.readouterr().out)
    names = [row.split("|")[3].strip() for row in rows]
    assert names[:8] == [f"{row} {backend}" for row in ("scan", "mingru", "minlstm", "aaren")
                         for backend in ("triton", "torch")]
    saved = {name: float(row.split("|")[8]) for name, row in zip(names, rows)}
    for layer in ("mingru", "minlstm", "aaren"):  # fused kernels keep less for the backward than the torch ops
        assert 0 < saved[f"{layer} triton"] < saved[f"{layer} torch"]


def test_ppo_speed_times_each_backbone_at_each_env_count(capsys):
    """The GPU check's end-to-end table (`--device`, `--num-envs`, `--speed-steps-per-env`), at tiny size on CPU: two
    PPO updates (rollouts of 64) per run, so the rate after the first update is measured too."""
    agent.main(["--part", "speed", "--memories", "mingru", "mlp", "--num-envs", "4", "5", "--device", "cpu",
                "--speed-steps-per-env", "128"], "ppo")
    out = capsys.readouterr().out
    assert "CPU" in out.splitlines()[0]
    rows = table_rows(out)
    assert [(row.split("|")[1].strip(), int(row.split("|")[2])) for row in rows] == [
        ("mingru", 4), ("mingru", 5), ("mlp", 4), ("mlp", 5)
    ]
    for row in rows:
        whole, steady = (float(cell) for cell in row.strip("|").split("|")[2:])
        assert whole > 0 and steady > 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["memory", "--rounds", "0"], "argument --rounds: 0 is not positive; give 1 or more"),
        (["memory", "--size", "2", "8", "x"], "argument --size: 'x' is not an integer; give 1 or more"),
        (["kernels", "--repeats", "-1"], "argument --repeats: -1 is not positive"),
        (["peers", "--steps", "0"], "argument --steps: 0 is not positive"),
        (["ppo", "--num-envs", "0"], "argument --num-envs: 0 is not positive"),
        (["dqn", "--speed-steps-per-env", "-1"], "argument --speed-steps-per-env: -1 is not positive"),
        (["ppo", "--device", "tpu"], "argument --device: device=tpu is not a device"),
        (["memory", "--device", "cuda"], "argument --device: device=cuda but no CUDA GPU is visible"),
        (["foo"], "argument BENCH: invalid choice: 'foo' (choose from 'memory', 'kernels', 'ppo', 'dqn', 'peers')"),
    ],
)
def test_bad_options_are_refused_in_one_line(capsys, monkeypatch, argv, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU-only torch, on any machine
    with pytest.raises(SystemExit) as exit_info:
        bench.main(argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"recurl.bench{' ' + argv[0] if argv[0] != 'foo' else ''}: error: ")
    assert f": error: {message}" in lines[0]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["ppo", "--part", "speed", "--tasks", "Foo"], "--tasks: unknown env id 'Foo' for suite 'popgym'"),
        (["dqn", "--part", "learning", "--tasks", "RepeatFirstEasy", "RepeatFirstEasyy"],
         "--tasks: unknown env id 'RepeatFirstEasyy' for suite 'popgym'; close matches: RepeatFirstEasy"),
        (["ppo", "--part", "learning", "--seeds", "0", "-1"], "argument --seeds: -1 is negative; give 0 or more"),
        (["ppo", "--part", "learning", "--seeds", "4294967296"], "argument --seeds: 4294967296 is past 2**32 - 1"),
        (["ppo", "--out", "file"], "argument --out: file is a file, not a folder; give a folder"),
    ],
)
def test_agent_bench_refuses_bad_tasks_seeds_and_out_before_any_run(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("")
    monkeypatch.setattr(agent, "speed_table", lambda *args: pytest.fail("a speed run started"))
    monkeypatch.setattr(agent, "run_sweep", lambda *args: pytest.fail("the learning sweep started"))
    with pytest.raises(SystemExit) as exit_info:
        bench.main(argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"recurl.bench {argv[0]}: error: {message}")


def test_a_failed_learning_sweep_is_one_line_with_its_exit_code(tmp_path, capsys, monkeypatch):
    def failing(command, check=False, **kwargs):  # subprocess.run whose command exits 3
        result = subprocess.CompletedProcess(command, 3)
        if check:
            result.check_returncode()
        return result

    monkeypatch.setattr(learning.subprocess, "run", failing)
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["ppo", "--part", "learning", "--out", str(tmp_path)])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        "recurl.bench ppo: error: the learning sweep (python -m recurl.train -m) failed with exit code 3; its messages "
        "above say why"
    )


def test_help_lists_every_bench_with_what_it_measures(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name, what in BENCHES.items():
        assert f"  {name:8} {what}\n" in out
