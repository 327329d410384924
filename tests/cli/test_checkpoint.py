"""recurl.checkpoint: a checkpoint is replaced whole or not at all, and is as readable as the run's other files."""

import os

import pytest
import torch

from recurl.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def test_a_checkpoint_gets_the_permissions_of_any_file_written_beside_it(tmp_path):
    old = os.umask(0o022)
    try:
        save_checkpoint(tmp_path / "latest.pt", {"step": 1})
        (tmp_path / "metrics.csv").write_text("step\n")
    finally:
        os.umask(old)
    mode = (tmp_path / "latest.pt").stat().st_mode & 0o777
    assert mode == (tmp_path / "metrics.csv").stat().st_mode & 0o777 == 0o644


class Unsaveable:
    def __reduce__(self):
        raise RuntimeError("cannot be saved")


def test_a_failed_write_keeps_the_previous_checkpoint_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "latest.pt"
    save_checkpoint(path, {"step": 1})
    with pytest.raises(RuntimeError, match="cannot be saved"):
        save_checkpoint(path, {"step": 2, "model": Unsaveable()})
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]


def test_a_foreign_file_is_refused_by_name(tmp_path):
    path = tmp_path / "latest.pt"
    torch.save([1, 2], path)
    with pytest.raises(CheckpointError, match="has format None; this recurl reads format 1"):
        load_checkpoint(path)


def test_a_file_rewritten_whole_is_untouched_when_the_writing_fails(tmp_path):
    """``replacing`` (checkpoints, metrics.csv cut back, eval.csv, resumed.yaml): the old file stays whole, and no
    temporary file is left, when the writer raises; otherwise the new content replaces it."""
    from recurl.atomic_file import replacing

    path = tmp_path / "metrics.csv"
    path.write_text("old\n")
    with pytest.raises(RuntimeError, match="disk full"):
        with replacing(path) as f:
            f.write("half")
            raise RuntimeError("disk full")
    assert path.read_text() == "old\n" and list(tmp_path.iterdir()) == [path]
    with replacing(path) as f:
        f.write("new\n")
    assert path.read_text() == "new\n" and list(tmp_path.iterdir()) == [path]
