"""Every ``python -m recurl.X`` command line refuses a mistake in one line, ``recurl.X: error: ...``, with exit code
2: argparse's own mistakes (an unknown option, a count of 0, a word for a number) as well as the commands' checks."""

from __future__ import annotations

import argparse

import pytest

from recurl import compare, evaluate, export, record, suite
from recurl.command_line import positive_int, seed_value

COMMANDS = {"evaluate": evaluate.main, "record": record.main, "export": export.main, "compare": compare.main,
            "suite": suite.main}
SUITE = ["--tasks", "RepeatFirstEasy", "--memories", "mlp", "--dir", "suite"]


@pytest.mark.parametrize(
    "command, argv, message",
    [
        ("evaluate", ["RUN", "--episodes", "0"], "argument --episodes: 0 is not positive; give 1 or more"),
        ("evaluate", ["RUN", "--envs", "two"], "argument --envs: 'two' is not an integer; give 1 or more"),
        ("evaluate", ["RUN", "--seed", "-3"], "argument --seed: -3 is negative; give 0 or more"),
        ("evaluate", ["RUN", "--seed", "4294967296"], "argument --seed: 4294967296 is past 2**32 - 1; give a seed"),
        ("record", ["RUN", "--fps", "0"], "argument --fps: 0 is not positive; give 1 or more"),
        ("record", ["RUN", "--episodes", "-1"], "argument --episodes: -1 is not positive; give 1 or more"),
        ("export", ["RUN"], "the following arguments are required: --out"),
        ("compare", ["RUN", "--colour", "red"], "unrecognized arguments: --colour red"),
        ("suite", [*SUITE, "--steps", "0"], "argument --steps: 0 is not positive; give 1 or more"),
        ("suite", [*SUITE, "--steps", "1e5"], "argument --steps: '1e5' is not an integer; give 1 or more"),
        ("suite", [*SUITE, "--steps", "9", "--agent", "sac"], "argument --agent: invalid choice: 'sac'"),
    ],
)
def test_a_mistake_is_one_line_naming_it_and_the_help(capsys, command, argv, message):
    with pytest.raises(SystemExit) as stop:
        COMMANDS[command](argv)
    assert stop.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines  # argparse alone would print the usage first
    assert lines[0].startswith(f"recurl.{command}: error: {message}")
    assert lines[0].endswith(f"(see python -m recurl.{command} --help)")


def test_the_commands_own_checks_share_the_form(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        evaluate.main([str(tmp_path / "missing")])
    assert stop.value.code == 2
    assert capsys.readouterr().err == f"recurl.evaluate: error: {tmp_path / 'missing'} is not a folder\n"


@pytest.mark.parametrize("text, value", [("1", 1), ("+7", 7), (" 12 ", 12)])
def test_counts_read_integers(text, value):
    assert positive_int(text) == value and seed_value(text) == value


def test_counts_refuse_what_is_not_one():
    assert seed_value("0") == 0
    for text, message in [("0", "0 is not positive"), ("-2", "-2 is not positive"), ("2.5", "'2.5' is not an integer")]:
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            positive_int(text)
    with pytest.raises(argparse.ArgumentTypeError, match="-1 is negative; give 0 or more"):
        seed_value("-1")
