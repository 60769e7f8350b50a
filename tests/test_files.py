"""Pins eager_eval/common/files.py: the atomic writer's mode, the output check, the directory lock."""

from __future__ import annotations

import os

import pytest

from eager_eval.common.files import (
    LOCK_NAME,
    OutputDirError,
    OutputInUseError,
    OutputLock,
    atomic_write,
    check_output_dir,
)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_write_gives_the_mode_open_would(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write(tmp_path / "a.json", "{}\n")
        with open(tmp_path / "b.json", "w") as fh:
            fh.write("{}\n")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == (tmp_path / "b.json").stat().st_mode & 0o777
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "no temporary left"


def test_check_output_dir_names_the_file_in_the_way(tmp_path):
    (tmp_path / "f").write_text("")
    check_output_dir(tmp_path / "new" / "deeper")  # absent parents are fine
    check_output_dir(tmp_path)
    with pytest.raises(OutputDirError, match="f is a file; it must be a directory"):
        check_output_dir(tmp_path / "f")
    with pytest.raises(OutputDirError, match=r"lies under .*f, which is a file"):
        check_output_dir(tmp_path / "f" / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"], "the check writes nothing"


def test_the_lock_refuses_a_second_holder_and_names_the_first(tmp_path):
    out = tmp_path / "run"
    with OutputLock(out):
        assert (out / LOCK_NAME).read_text().strip() == str(os.getpid())
        with pytest.raises(OutputInUseError) as err:
            OutputLock(out).__enter__()
        assert err.value.pid == os.getpid() and err.value.directory == out
        assert str(out) in str(err.value) and f"pid {os.getpid()}" in str(err.value)
    with OutputLock(out):  # released: the next run goes ahead
        pass


def test_the_lock_leaves_the_parent_as_it_was_after_a_failed_start(tmp_path):
    """Directories it made stay only if something was written into them."""
    with OutputLock(tmp_path / "a" / "b"):
        pass
    assert list(tmp_path.iterdir()) == []
    with OutputLock(tmp_path / "kept"):
        (tmp_path / "kept" / "results.json").write_text("{}")
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["results.json"]
    existing = tmp_path / "existing"
    existing.mkdir()
    with OutputLock(existing):
        pass
    assert existing.is_dir() and list(existing.iterdir()) == []


def test_a_stale_lock_file_does_not_block(tmp_path):
    """A killed run leaves its lock file (with its pid); the kernel dropped the lock itself."""
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).write_text("999999\n")
    with OutputLock(out):
        assert (out / LOCK_NAME).read_text().strip() == str(os.getpid())
    assert not (out / LOCK_NAME).exists()


def test_the_lock_says_why_a_directory_cannot_be_made(tmp_path):
    with pytest.raises(OutputDirError, match="cannot create output directory /sys/eager-eval-x"):
        OutputLock("/sys/eager-eval-x").__enter__()
