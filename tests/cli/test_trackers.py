"""The trackers users already run: W&B and MLflow (offline), and the config as TensorBoard hparams. Each test reads
back what the run logged: the resolved config and the metrics rows of metrics.csv, at their env steps."""

import csv
import json
import math
import re
import subprocess
import sys

import pytest

from conftest import compose_config
from recurl import trackers
from recurl.training import train

#: Two updates on CartPole, where some episodes end in each (a row's episode_return is NaN when none did).
TINY = [
    "total_steps=128", "agent.rollout_steps=16", "agent.minibatches=2", "memory.hidden_size=16", "env.num_envs=4",
    "torch_threads=1", "env=gym", "env.id=CartPole-v1",
]


def logged(rows, key):
    """(step, value) of each row where ``key`` is a number: what a tracker must have received."""
    return [(int(r["step"]), float(r[key])) for r in rows if not math.isnan(float(r[key]))]


def metrics(run_dir):
    with (run_dir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def test_mlflow_gets_the_config_and_every_row(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # MLflow 3 keeps its file store for old runs only
    run_dir = tmp_path / "my-run"
    cfg = compose_config(*TINY, "logger=mlflow", f"logger.tracking_uri={uri}", "logger.experiment_name=tests")
    assert train(cfg, run_dir) == 0
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert run.info.run_name == "my-run" and run.info.status == "FINISHED"
    assert run.data.params["agent.name"] == "ppo" and run.data.params["memory.hidden_size"] == "16"
    assert run.data.params["total_steps"] == "128"
    rows = metrics(run_dir)
    for key in ("policy_loss", "episode_return"):
        history = client.get_metric_history(run.info.run_id, key)
        assert [(m.step, m.value) for m in history] == logged(rows, key)
    assert logged(rows, "episode_return")


def test_a_resumed_run_logs_to_the_tracker_chosen_beside_resume(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    run_dir, uri = tmp_path / "run", f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert train(compose_config(*TINY, "total_steps=64"), run_dir) == 0
    resumed = subprocess.run(
        [sys.executable, "-m", "recurl.train", f"resume={run_dir}", "total_steps=128", "logger=mlflow",
         f"logger.tracking_uri={uri}"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert resumed.returncode == 0, resumed.stderr
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("recurl").experiment_id])
    assert run.info.run_name == "run" and run.data.params["total_steps"] == "128"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "policy_loss")] == [128]


def test_a_resume_refused_for_its_tracker_leaves_the_runs_rows_as_they_were(tmp_path):
    """The rows a crash logged past the checkpoint are dropped only once the resume is sure to run."""
    pytest.importorskip("mlflow")
    run_dir, early = tmp_path / "run", tmp_path / "early"
    assert train(compose_config(*TINY, "total_steps=128"), run_dir) == 0
    assert train(compose_config(*TINY, "total_steps=64"), early) == 0
    checkpoint = run_dir / "checkpoints" / "latest.pt"  # as if it crashed after logging step 128, checkpointed at 64
    checkpoint.write_bytes((early / "checkpoints" / "latest.pt").read_bytes())
    rows = (run_dir / "metrics.csv").read_text()
    refused = subprocess.run(
        [sys.executable, "-m", "recurl.train", f"resume={run_dir}", "logger=mlflow", "logger.tracking_uri=nope://x"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert refused.returncode == 2 and "logger=mlflow could not start a run" in refused.stderr
    assert (run_dir / "metrics.csv").read_text() == rows and not (run_dir / ".hydra" / "resumed.yaml").exists()


BLOCK = 32768  # the .wandb file is a LevelDB-style log: 32 KiB blocks of chunks with 7-byte headers


def wandb_records(path):
    """The protobuf records of an offline W&B run file (wandb has no public reader for it)."""
    from wandb.proto.wandb_internal_pb2 import Record

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            record = Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


def test_wandb_offline_gets_the_config_and_every_row(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dir = tmp_path / "my-run"
    assert train(compose_config(*TINY, "logger=wandb", "logger.project=tests"), run_dir) == 0
    wandb.teardown()  # W&B's service writes the offline run file out when it stops (at exit, for the CLI)
    (run_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    config, history, names = {}, [], []
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            names.append(record.run.display_name)
            config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
        elif kind == "history":
            history.append({item.key or ".".join(item.nested_key): json.loads(item.value_json)
                            for item in record.history.item})
    assert names == ["my-run"]
    assert config["agent"]["name"] == "ppo" and config["memory"]["hidden_size"] == 16 and config["total_steps"] == 128
    rows = metrics(run_dir)
    for key in ("policy_loss", "episode_return"):
        assert [(h["_step"], h[key]) for h in history if key in h] == logged(rows, key)
    assert logged(rows, "episode_return")


def test_tensorboard_gets_the_config_as_hparams_with_the_final_return(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    cfg = compose_config(*TINY, "total_steps=256")
    assert train(cfg, tmp_path) == 0
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    session = HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert session.hparams["agent.learning_rate"].number_value == pytest.approx(0.001)
    assert session.hparams["memory.name"].string_value == "mingru"
    assert session.hparams["env.id"].string_value == "CartPole-v1"
    experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert [info.name.tag for info in experiment.metric_infos] == ["final_return"]
    (final,) = events.Scalars("final_return")
    assert final.step == 256 and math.isfinite(final.value) and final.value > 0  # CartPole: a return of 8 or more


@pytest.mark.parametrize("name", ["wandb", "mlflow"])
def test_a_tracker_that_is_not_installed_is_refused_with_the_pip_command(name, monkeypatch):
    monkeypatch.setattr(trackers, "find_spec", lambda package: None)
    with pytest.raises(ValueError) as error:
        trackers.check_logger(compose_config(f"logger={name}"))
    assert str(error.value) == f"logger={name} needs the {name} package: pip install 'recurl[{name}]'"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["logger=wandb", "+logger.team=x"], "logger wandb: unknown option(s) team; it accepts project, entity, mode"),
        (["logger=wandb", "logger.mode=sometimes"], "logger.mode=sometimes: choose one of online, offline, disabled"),
        (["+logger.project=x"], "logger none: unknown option(s) project; it takes none"),
        (["logger.name=wandb"], "logger.name=wandb: choose the logger with logger=wandb, which brings its options"),
        (["logger.name=mlflow"], "logger.name=mlflow: choose the logger with logger=mlflow"),
        (["logger=mlflow", "logger.experiment_name=null"], "logger.experiment_name=None: give a name"),
        (["logger=wandb", "logger.entity={a: 1}"], "logger.entity={'a': 1}: give a string or null"),
    ],
)
def test_logger_options_are_checked(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        trackers.check_logger(compose_config(*overrides))
