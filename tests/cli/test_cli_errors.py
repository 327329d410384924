"""The training CLI never fails silently: a mistake is one line on stderr, exit code 2, no traceback and no folder
left behind; every run ends with a summary line, also written to train.log."""

import math
import re
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from conftest import compose_config
from recurl.builder import setup
from recurl.checkpoint import load_checkpoint
from recurl.cli_errors import command_line_error
from recurl.memory import MEMORIES as MEMORY_CLASSES
from recurl.training import run

SMALL = ["total_steps=64", "memory.hidden_size=16", "env.num_envs=4", "torch_threads=1"]  # any agent
TINY = [*SMALL, "agent.rollout_steps=16", "agent.minibatches=2"]
MEMORIES = ", ".join(sorted(MEMORY_CLASSES))  # the memory config group's options: one yaml per backbone


def cli(tmp_path, *args):
    """``python -m recurl.train ARGS`` run in ``tmp_path``, its run folder ``tmp_path/run``."""
    return subprocess.run(
        [sys.executable, "-m", "recurl.train", *args, f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["+foo=1"], "+foo=1: recurl's config has no key 'foo'; its keys are agent, checkpoint_every, device,"),
        (["memory=gru9000"], f"memory=gru9000: memory has no option 'gru9000'; choose one of {MEMORIES}"),
        (["total_steps=-5"], "total_steps must be a positive integer, got -5"),  # found once Hydra made the folder
        (["agent.epochs=1.5"], "agent.epochs must be an integer, got 1.5"),  # once crashed mid-training
        pytest.param(
            ["logger=mlflow", "logger.tracking_uri=nope://x"], "logger=mlflow could not start a run",  # found by run()
            marks=pytest.mark.skipif(find_spec("mlflow") is None, reason="mlflow missing: pip install -e '.[mlflow]'"),
        ),
        (["-m", "memory=mingru,gru9000"], "memory has no option 'gru9000'"),
    ],
)
def test_a_mistake_is_one_line_exit_2_and_leaves_nothing(args, message, tmp_path):
    """The real command, end to end (each mistake's message is checked in process below)."""
    result = cli(tmp_path, *args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("recurl.train: error: ") and message in lines[0], result.stderr
    assert list(tmp_path.iterdir()) == []  # neither the run folder, nor a multirun's, nor anything else


def test_the_command_line_is_checked_before_torch_is_imported():
    """A typo costs a fraction of a second: recurl.train and its check import neither torch nor the agents."""
    code = (
        "import sys, recurl.train\n"
        "from recurl.cli_errors import command_line_error\n"
        "assert 'memory has no option' in command_line_error(['memory=gru9000'])\n"
        "print(sorted(m for m in ('torch', 'recurl.agents', 'recurl.training') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_value_refused_in_the_default_run_folder_leaves_no_dated_folder(tmp_path):
    """Hydra makes runs/<date>/<time>_.../ before the values are checked; all three go again. Folders above a run
    folder named with hydra.run.dir are the user's, and stay, empty or not."""
    (tmp_path / "keep").mkdir()
    for named in ([], ["hydra.run.dir=keep/empty/run"]):
        if named:
            (tmp_path / "keep" / "empty").mkdir()
        result = subprocess.run(
            [sys.executable, "-m", "recurl.train", "total_steps=-5", *named], capture_output=True, text=True,
            timeout=300, cwd=tmp_path,
        )
        assert result.returncode == 2 and "total_steps must be a positive integer" in result.stderr
        assert list(tmp_path.iterdir()) == [tmp_path / "keep"]
    assert list((tmp_path / "keep").iterdir()) == [tmp_path / "keep" / "empty"]


def test_a_mistake_beside_resume_is_one_line_and_the_run_is_untouched(tmp_path):
    assert cli(tmp_path, *TINY).returncode == 0
    run_dir = tmp_path / "run"
    before = sorted(path.relative_to(run_dir) for path in run_dir.rglob("*"))
    result = subprocess.run(
        [sys.executable, "-m", "recurl.train", f"resume={run_dir}", "agent.gama=0.9"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "recurl.train: error: agent.gama=0.9: agent=ppo has no key 'gama'; its keys are anneal_lr, clip_coef, "
        "entropy_coef, epochs, gae_lambda, gamma, learning_rate, max_grad_norm, minibatches, name, "
        "normalize_advantages, previous_action, previous_reward, rollout_steps, value_coef"
    )
    assert sorted(path.relative_to(run_dir) for path in run_dir.rglob("*")) == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["-m", "memory=aaren,mingru", "memory.num_heads=8"], "memory=mingru has no key 'num_heads'"),
        (["+seed=3"], "+seed=3: seed is already a key; set it without the +: seed=3"),
        (["~foo"], "~foo: recurl's config has no key 'foo'"),
        (["agent=a2c"], "agent=a2c: agent has no option 'a2c'; choose one of dqn, ppo"),
        (["foo=1"], "foo=1: recurl's config has no key 'foo'"),
        (["memory.hidden_size==3"], "cannot parse 'memory.hidden_size==3': write key=value"),
        (["seed"], "cannot parse 'seed': write key=value"),
        (["memory=mingru", "memory.num_heads=4"], "memory=mingru has no key 'num_heads'; its keys are hidden_size,"),
        (["seed.x=1"], "seed.x=1: recurl's config has no key 'seed.x'"),
        (["env=minigrid", "env.size=3"], "env=minigrid has no key 'size'"),
        (["hydra/launcher=joblibb"], "hydra/launcher has no option 'joblibb'"),
        (["seed=1,2"], "Ambiguous value for argument 'seed=1,2'"),
        (["--cfg", "job", "foo=1"], "foo=1: recurl's config has no key 'foo'"),
    ],
)
def test_command_line_mistakes_are_named(args, message):
    problem = command_line_error(args)
    assert problem is not None and message in problem and "\n" not in problem


@pytest.mark.parametrize(
    "args",
    [
        ["-m", "memory=mingru,minlstm", "seed=0,1"], ["++seed=3"], ["+memory.dropout=0.1"], ["memory=aaren",
        "memory.num_heads=2"], ["resume=somewhere", "total_steps=10"], ["~memory.scan_backend"], ["--help"],
        pytest.param(
            ["hydra.run.dir=x", "hydra/launcher=joblib"], id="joblib launcher",
            marks=pytest.mark.skipif(
                find_spec("hydra_plugins") is None or find_spec("hydra_plugins.hydra_joblib_launcher") is None,
                reason="hydra-joblib-launcher missing: pip install -e '.[sweep]'",
            ),
        ),
        ["-m", "memory=glob(min*)"],
    ],
)
def test_good_command_lines_pass(args):
    """What Hydra would run is not refused (``+memory.dropout`` is the backbone's to refuse, once it is built)."""
    assert command_line_error(args) is None


def test_a_run_folder_that_is_a_file_is_named(tmp_path):
    """Hydra would make the folder with a FileExistsError traceback."""
    (tmp_path / "taken").write_text("")
    for key in ("hydra.run.dir", "hydra.sweep.dir"):
        for path in (tmp_path / "taken", tmp_path / "taken" / "run"):
            assert command_line_error([f"{key}={path}"]) == (
                f"{key}={path}: {tmp_path / 'taken'} is a file; give a folder (it is made if missing)"
            )
    assert command_line_error([f"hydra.run.dir='{tmp_path / 'taken'}'"]) == (  # quoted, as a path with a space is
        f"hydra.run.dir='{tmp_path / 'taken'}': {tmp_path / 'taken'} is a file; give a folder (it is made if missing)"
    )
    assert command_line_error([f"hydra.run.dir={tmp_path / 'new' / 'run'}"]) is None


def test_config_folders_added_with_hydra_searchpath_count(tmp_path):
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "wide.yaml").write_text("name: mingru\nhidden_size: 512\nnum_layers: 2\n")
    assert "memory has no option 'wide'" in command_line_error(["memory=wide"])
    assert command_line_error([f"hydra.searchpath=[file://{tmp_path}]", "memory=wide", "memory.hidden_size=8"]) is None


def test_cfg_and_multirun_still_work(tmp_path):
    shown = subprocess.run(
        [sys.executable, "-m", "recurl.train", "--cfg", "job", "total_steps=5"], capture_output=True, text=True,
        timeout=300, cwd=tmp_path,
    )
    assert shown.returncode == 0 and "total_steps: 5" in shown.stdout
    sweep = subprocess.run(
        [sys.executable, "-m", "recurl.train", "-m", *TINY, "seed=0,1", "hydra.sweep.dir=sweep"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert sweep.returncode == 0, sweep.stderr
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir()) == [
        f"{i}_popgym-RepeatFirstEasy-v0_ppo_mingru_seed{i}" for i in (0, 1)
    ]
    named = subprocess.run(  # a sweep's own folder names (recurl.suite sets them) win over the default
        [sys.executable, "-m", "recurl.train", "-m", *TINY, "seed=3", "hydra.sweep.dir=named",
         "hydra.sweep.subdir=${env.id}_seed${seed}"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert named.returncode == 0, named.stderr
    assert (tmp_path / "named" / "popgym-RepeatFirstEasy-v0_seed3" / "metrics.csv").is_file()


# ---- the summary line and train.log ---------------------------------------------------------------------------
def test_a_run_ends_with_a_summary_line_also_in_train_log(tmp_path):
    result = cli(tmp_path, *TINY[1:], "total_steps=200", "env=gym", "env.id=CartPole-v1")
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "run"
    last = result.stderr.strip().splitlines()[-1]  # after the progress bar
    assert last.startswith(f"recurl.train: finished: {run_dir}, 256 env steps, final return ")
    assert "(mean of all " in last and last.endswith(" s")
    log = (run_dir / "train.log").read_text().strip().splitlines()
    assert log[-1].endswith(last.removeprefix("recurl.train: "))


class Exploding(gym.Env):
    """Episodes of 7 steps with reward 1 each; NaN observations from its 40th step on."""

    observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = spaces.Discrete(2)
    steps = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.steps += 1
        obs = np.full(2, np.nan if self.steps >= 40 else 1.0, np.float32)
        return obs, 1.0, False, self.steps % 7 == 0, {}


gym.register("recurl-test/Exploding-v0", entry_point=Exploding)


def test_an_early_stop_says_where_the_run_is(tmp_path, capsys):
    cfg = compose_config(*TINY, "env=gym", "env.id=recurl-test/Exploding-v0", "env.num_envs=1", "agent.minibatches=1",
                         "total_steps=1000")
    assert run(cfg, tmp_path, *setup(cfg)) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("recurl.train: ")]
    assert "stopped at step 32: " in lines[-2] and "NaN or inf in obs" in lines[-2]  # 2 updates of 16 steps before 40
    assert lines[-1].startswith(f"recurl.train: stopped early: {tmp_path}, 32 env steps, final return 7.000 (mean of")
    assert (tmp_path / "train.log").read_text().count("stopped") == 2


def test_a_checkpoint_that_cannot_be_written_stops_the_run_in_one_line(tmp_path, capsys):
    """A full disk, or a folder in the file's place: the run stops saying so, and the last checkpoint is kept."""
    cfg = compose_config(*TINY, "total_steps=128", "checkpoint_every=64")
    (tmp_path / "checkpoints" / "final.pt").mkdir(parents=True)
    assert run(cfg, tmp_path, *setup(cfg)) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("recurl.train: ")]
    latest = tmp_path / "checkpoints" / "latest.pt"
    assert lines[-2] == (
        f"recurl.train: stopped at step 128: cannot write {tmp_path / 'checkpoints' / 'final.pt'}: Is a directory; "
        f"the last checkpoint, {latest}, is kept"
    )
    assert lines[-1].startswith(f"recurl.train: stopped early: {tmp_path}, 128 env steps")
    assert load_checkpoint(latest)["agent"]["global_step"] == 128


@pytest.mark.parametrize(
    "override, message",
    [
        ("+memory.num_heads=4", "memory mingru: unknown option(s) num_heads"),
        ("eval_every=0", "eval_every must be a positive integer, got 0"),
        ("total_steps=-5", "total_steps must be a positive integer, got -5"),
        ("memory=lru memory.r_min=2", "lru: r_min must be in [0, 1), got 2"),
        ("memory=ffm memory.context_size=3", "ffm: 2 * context_size (6) must divide hidden_size 16"),
        ("agent.learning_rate=abc", "agent.learning_rate must be a number, got 'abc'"),
        ("agent.minibatches=abc", "agent.minibatches must be an integer, got 'abc'"),
        ("agent.epochs=1.5", "agent.epochs must be an integer, got 1.5"),
        ("agent.epochs=2.0", "agent.epochs must be an integer, got 2.0"),
        ("agent.epochs=true", "agent.epochs must be an integer, got True"),
        ("agent.normalize_advantages=no", "agent.normalize_advantages must be true or false, got 'no'"),
        ("agent.max_grad_norm=abc", "agent.max_grad_norm must be a number or null, got 'abc'"),
        ("agent.max_grad_norm=0", "agent.max_grad_norm must be positive (null: no clipping), got 0"),  # no learning
        ("agent=dqn agent.max_grad_norm=0", "agent.max_grad_norm must be positive (null: no clipping), got 0"),
        (  # 4 envs x 256 steps, 240 in sequences of 40: 24 sequences; a batch of 10^5 once filled 23 GB and was killed
            "agent=dqn agent.buffer_capacity=1024 agent.batch_size=100000",
            "agent.batch_size=100000 is more than the 24 sequences the replay holds",
        ),
        ("video=no", "video must be true or false, got 'no'"),  # the string 'no' is true: it recorded videos
        ("seed=4294967296", "seed must be an integer from 0 to 2**32 - 1 (numpy's seed range), got 4294967296"),
        ("seed=true", "seed must be an integer from 0 to 2**32 - 1"),
        ("agent=dqn agent.gamma=abc", "agent.gamma must be a number, got 'abc'"),
        ("agent=dqn agent.value_rescaling=1", "agent.value_rescaling must be true or false, got 1"),
        ("env.max_episode_steps=abc", "env.max_episode_steps must be a positive integer, got 'abc'"),
        ("env=minigrid env.id=MiniGrid-WFC-MazeSimple-v0", "'MiniGrid-WFC-MazeSimple-v0' cannot run: minigrid's"),
        (
            "agent.rollout_steps=1 agent.minibatches=4",  # 4 envs: one step per minibatch, advantages' std is NaN
            "agent.rollout_steps=1 with env.num_envs=4 and agent.minibatches=4 leaves a minibatch of a single step",
        ),
    ],
)
def test_values_found_once_the_config_is_composed_are_named(override, message):
    """What the command line cannot show (a backbone's option, a value out of range or of the wrong type) is refused
    by ``prepare`` with a ValueError, which ``hydra_main`` prints as one line and exit code 2 (the end-to-end test
    above)."""
    from recurl.training import check_run_options, prepare

    overrides = override.split()
    with pytest.raises(ValueError, match=re.escape(message)):
        cfg = compose_config(*SMALL, *overrides)
        check_run_options(cfg)
        prepare(cfg, overrides, Path("unused-run-folder"))


@pytest.mark.parametrize("agent", ["ppo", "dqn"])
def test_max_grad_norm_null_trains_in_both_agents(agent):
    """README: ``agent.max_grad_norm=null`` means no clipping; an integer is accepted where a number is expected."""
    learn_at_once = ["agent.learning_starts=1", "agent.sequence_length=4", "agent.burn_in=0", "agent.n_step=1"]
    options = learn_at_once if agent == "dqn" else ["agent.rollout_steps=8", "agent.minibatches=2"]
    cfg = compose_config(*SMALL, f"agent={agent}", "agent.max_grad_norm=null", "agent.learning_rate=0", *options)
    envs, trained = setup(cfg)
    metrics, _ = trained.iterate()
    envs.close()
    assert all(math.isfinite(value) for value in metrics.values())
