"""``napari-myelin info`` and the CLI's handling of bad input (one sentence, non-zero exit)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from napari_myelin.cli import main

from .conftest import oblique_affine


def test_info_reports_geometry_and_protocol(write_nifti, capsys):
    data = np.linspace(0, 5, 4 * 5 * 6 * 2, dtype=np.float32).reshape(4, 5, 6, 2)
    p = write_nifti("me.nii.gz", data, oblique_affine(), {"EchoTime": [0.01, 0.02], "MagneticFieldStrength": 3})
    assert main(["info", str(p)]) == 0
    out = capsys.readouterr().out
    assert "4 x 5 x 6 x 2" in out
    assert "1.2 x 0.9 x 2.5" in out
    assert "LPS" in out
    assert "12.00" in out
    assert "0 .. 5" in out
    assert "EchoTime" in out and "[0.01, 0.02]" in out
    assert "MagneticFieldStrength" in out


def _bad_cases(tmp_path, write_nifti):
    full = write_nifti("full.nii.gz", np.random.default_rng(0).random((16, 16, 16)).astype(np.float32))
    (tmp_path / "cut.nii.gz").write_bytes(full.read_bytes()[:1500])
    (tmp_path / "text.nii.gz").write_text("hello")
    (tmp_path / "notes.txt").write_text("hello")
    nan = write_nifti("nan.nii.gz", np.full((3, 3, 3), np.nan, np.float32))
    dwi = write_nifti("dwi.nii.gz", np.ones((2, 2, 2, 3), np.float32))
    (tmp_path / "dwi.bval").write_text("0 1000\n")
    (tmp_path / "dwi.bvec").write_text("1 0\n0 1\n0 0\n")
    return [
        (tmp_path / "missing.nii.gz", "file not found"),
        (tmp_path / "notes.txt", "not a NIfTI file"),
        (tmp_path / "cut.nii.gz", "truncated or corrupt"),
        (tmp_path / "text.nii.gz", "truncated or corrupt"),
        (nan, "every voxel is NaN"),
        (dwi, "has 3 volumes but dwi.bval lists 2 b-values"),
    ]


def test_bad_input_one_sentence_exit_2_no_output(tmp_path, write_nifti, capsys):
    for path, message in _bad_cases(tmp_path, write_nifti):
        before = sorted(p.name for p in tmp_path.iterdir())
        assert main(["info", str(path)]) == 2, path
        err = capsys.readouterr().err
        assert message in err and path.name in err
        assert "Traceback" not in err
        assert err.count("\n") == 1  # one line
        assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_console_script_help_and_exit_code(tmp_path):
    help_run = subprocess.run([sys.executable, "-m", "napari_myelin", "--help"], capture_output=True, text=True)
    assert help_run.returncode == 0 and "info" in help_run.stdout
    bad = subprocess.run([sys.executable, "-m", "napari_myelin", "info", str(tmp_path / "nope.nii")],
                         capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().endswith("file not found; check the path.")


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage: napari-myelin" in capsys.readouterr().out


def test_missing_argument_is_a_usage_error():
    with pytest.raises(SystemExit) as exc:
        main(["info"])
    assert exc.value.code == 2
