import csv
import math
import os

import pytest
import torch
import yaml

from recurl.config_files import compose_config  # noqa: F401  (the tests import it from here)

if not torch.cuda.is_available():
    # Triton kernels run on the CPU in Triton's interpreter; it must be chosen before triton is first imported.
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def one_thread():
    """Every test on one torch thread: its tensors are tiny, and a second intra-op thread only adds contention. On a
    loaded 2-core machine, PPO's update ratio test with the LSTM took 14 s on torch's default two threads and 0.1 s
    on one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


#: metrics.csv's columns as a PPO run writes them (for ``write_run``).
RUN_COLUMNS = ["step", "episode_return", "episode_length", "episodes", "sps", "wall_time", "policy_loss"]


def write_run(
    folder, returns, *, steps=None, memory="mingru", seed=0, env_id="popgym-RepeatPreviousEasy-v0", eval_returns=None,
    **extra,
):
    """A run folder as recurl.train writes it: .hydra/config.yaml and metrics.csv (wall time = step / 100), with an
    ``eval_return`` column when ``eval_returns`` are given (NaN in rows without an evaluation)."""
    steps = steps if steps is not None else [100 * (i + 1) for i in range(len(returns))]
    config = {
        "agent": {"name": "ppo", "learning_rate": 0.001},
        "memory": {"name": memory, "hidden_size": 64, "num_layers": 2},
        "env": {"suite": "popgym", "id": env_id, "num_envs": 4, "vectorization": "sync", "max_episode_steps": None},
        "seed": seed, "total_steps": 2000, "device": "cpu", "torch_threads": 1, "checkpoint_every": 20,
        "existing": "refuse",
    }
    for key, value in extra.items():  # memory__hidden_size=128 sets memory.hidden_size
        *group, name = key.split("__")
        (config[group[0]] if group else config)[name] = value
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    with (folder / "metrics.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(RUN_COLUMNS + ["eval_return"] * (eval_returns is not None))
        for i, (step, ret) in enumerate(zip(steps, returns)):
            evaluation = [] if eval_returns is None else [eval_returns[i]]
            episodes = 0 if math.isnan(ret) else 2
            writer.writerow([step, ret, 10, episodes, step / (step / 100), step / 100, 0.1, *evaluation])
    return folder
