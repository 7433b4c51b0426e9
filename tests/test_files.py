"""Atomic writes: outputs get the permissions of a plain write under the user's umask, or nothing at all.
JSON reads: a broken file is one error naming it, with the line or the key."""
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


@pytest.mark.parametrize("text, message", [
    ('{"threshold": ', r"calibrate.json:1: not valid JSON \(Expecting value, column 15\)"),
    ('{\n  "threshold": 0.5,\n}', r"calibrate.json:3: not valid JSON"),
    ('{"criterion": "eer"}', r"calibrate.json: no 'threshold' key"),
    ('[0.5]', r"calibrate.json: no 'threshold' key"),
    ('{"threshold": "0.5"}', r"calibrate.json: 'threshold' is '0.5', not a finite number"),
    ('{"threshold": NaN}', r"calibrate.json: 'threshold' is nan, not a finite number"),
    ('{"threshold": true}', r"calibrate.json: 'threshold' is True, not a finite number"),
])
def test_a_broken_calibration_file_is_one_error_naming_it(tmp_path, text, message):
    (tmp_path / "calibrate.json").write_text(text)
    with pytest.raises(ValueError, match=message):
        files.read_calibration(tmp_path / "calibrate.json")


def test_a_calibration_file_reads_whole(tmp_path):
    (tmp_path / "calibrate.json").write_text('{"threshold": 1, "criterion": "eer"}')
    assert files.read_calibration(tmp_path / "calibrate.json") == {"threshold": 1, "criterion": "eer"}
    (tmp_path / "latin1.json").write_bytes(b'{"name": "Jos\xe9"}')
    with pytest.raises(ValueError, match="latin1.json: not a UTF-8 text file"):
        files.read_json(tmp_path / "latin1.json")
