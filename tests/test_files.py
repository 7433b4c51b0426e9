"""Atomic writes: outputs get the permissions of a plain write under the user's umask, or nothing at all."""
import os
import stat

import pytest

from pipeline import files


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_outputs_follow_the_umask(tmp_path, umask, file_mode, dir_mode):
    old = os.umask(umask)
    try:
        files.write_text(tmp_path / "out.txt", "x")
        with files.atomic_dir(tmp_path / "folder") as d:
            (d / "a").write_text("a")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.txt").stat().st_mode) == file_mode
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == dir_mode


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    files.write_text(tmp_path / "out.txt", "old")
    with pytest.raises(RuntimeError):
        with files.atomic_path(tmp_path / "out.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert (tmp_path / "out.txt").read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]
