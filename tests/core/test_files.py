"""The atomic writer: the target holds old or new contents, never half, and no temporary file is left."""

import os
from pathlib import Path

import pytest

from pplgen.files import write_atomically


def test_a_write_replaces_the_target_and_flushes_file_and_folder(tmp_path, monkeypatch):
    flushed = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda descriptor: flushed.append(descriptor) or real_fsync(descriptor))
    target = tmp_path / "metrics.json"
    target.write_text("old")
    write_atomically(target, lambda temporary: Path(temporary).write_text("new"))
    assert target.read_text() == "new"
    assert len(flushed) == 2  # the file, then the folder's entry
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_failed_write_keeps_the_old_contents_and_leaves_nothing(tmp_path):
    target = tmp_path / "checkpoint.pt"
    target.write_text("old")

    def half_then_fail(temporary):
        Path(temporary).write_text("ha")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, half_then_fail)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_the_temporary_file_keeps_the_suffix_so_writers_pick_the_format(tmp_path):
    seen = []
    write_atomically(tmp_path / "loss.png", lambda temporary: seen.append(temporary) or open(temporary, "w").close())
    assert seen[0].endswith(".png")
