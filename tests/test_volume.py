"""Volume I/O: loading with sidecars, echo series, atomic saving, bad input."""

from __future__ import annotations

import gzip
import json
import os

import numpy as np
import pytest

from napari_myelin.utils.errors import InputError
from napari_myelin.io.volume import (
    load_echo_series,
    load_volume,
    obliquity_deg,
    orientation_codes,
    read_bval_bvec,
    save_map,
)

from .conftest import oblique_affine


def test_load_keeps_data_affine_and_sidecar(write_nifti):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(5, 6, 7, 3)).astype(np.float32)
    aff = oblique_affine()
    p = write_nifti("sub-01_T2w.nii.gz", data, aff, {"EchoTime": [0.01, 0.02, 0.03], "MagneticFieldStrength": 3})
    vol = load_volume(p)
    np.testing.assert_array_equal(vol.data, data)
    np.testing.assert_allclose(vol.affine, aff, atol=1e-6)
    np.testing.assert_allclose(vol.echo_times, [0.01, 0.02, 0.03])
    np.testing.assert_allclose(vol.zooms, [1.2, 0.9, 2.5], rtol=1e-6)
    assert orientation_codes(vol.affine) == "LPS"
    assert obliquity_deg(vol.affine) == pytest.approx(12.0, abs=1e-4)


def test_bval_bvec_read_beside_dwi(write_nifti, tmp_path):
    p = write_nifti("dwi.nii.gz", np.ones((2, 2, 2, 4), np.float32))
    (tmp_path / "dwi.bval").write_text("0 1000 1000 2000\n")
    (tmp_path / "dwi.bvec").write_text("0 1 0 0\n0 0 1 0\n0 0 0 1\n")
    vol = load_volume(p)
    np.testing.assert_array_equal(vol.bvals, [0, 1000, 1000, 2000])
    np.testing.assert_array_equal(vol.bvecs[3], [0, 0, 1])


def test_bval_count_mismatch_is_one_sentence(write_nifti, tmp_path):
    p = write_nifti("dwi.nii.gz", np.ones((2, 2, 2, 3), np.float32))
    (tmp_path / "dwi.bval").write_text("0 1000 1000 2000\n")
    (tmp_path / "dwi.bvec").write_text("0 1 0 0\n0 0 1 0\n0 0 0 1\n")
    with pytest.raises(InputError, match=r"dwi.nii.gz: has 3 volumes but dwi.bval lists 4 b-values"):
        load_volume(p)
    bval, bvec = tmp_path / "b.bval", tmp_path / "b.bvec"
    bval.write_text("0 1000\n")
    bvec.write_text("0 1 0\n0 0 1\n0 0 0\n")
    with pytest.raises(InputError, match="has 2 b-values but .* has 3 directions"):
        read_bval_bvec(bval, bvec)


def test_echo_per_file_series_assembles_with_echo_times(write_nifti):
    rng = np.random.default_rng(1)
    echoes = [rng.random((4, 4, 3)).astype(np.float32) for _ in range(3)]
    paths = []
    for i, (e, te) in enumerate(zip(echoes, [0.005, 0.010, 0.015]), start=1):
        paths.append(write_nifti(f"anat/sub-01_echo-{i}_MESE.nii.gz", e, np.diag([2, 2, 3, 1.0]), {"EchoTime": te}))
    # given one file, the others are found; echo 10 would sort after echo 2 (numeric, not lexical)
    vol = load_echo_series(paths[1])
    assert vol.shape == (4, 4, 3, 3)
    np.testing.assert_allclose(vol.echo_times, [0.005, 0.010, 0.015])
    for i in range(3):
        np.testing.assert_array_equal(vol.data[..., i], echoes[i])


def test_save_map_writes_atomic_sidecar_and_refuses_inputs(write_nifti, tmp_path):
    ref = load_volume(write_nifti("in.nii.gz", np.zeros((3, 3, 3), np.float32), oblique_affine()))
    out = save_map(np.full((3, 3, 3), 0.1), tmp_path / "out" / "mwf", ref, units="fraction",
                   description="myelin water fraction", method="test", parameters={"n_t2": 40})
    assert out.name == "mwf.nii.gz"
    side = json.loads((tmp_path / "out" / "mwf.json").read_text())
    assert side["Units"] == "fraction" and side["Parameters"]["n_t2"] == 40
    assert side["Sources"][0]["Path"].endswith("in.nii.gz") and len(side["Sources"][0]["SHA256"]) == 64
    back = load_volume(out)
    np.testing.assert_allclose(back.data, 0.1, rtol=1e-6)
    np.testing.assert_allclose(back.affine, ref.affine, atol=1e-6)
    assert not list((tmp_path / "out").glob("*.part"))
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    before = (tmp_path / "in.nii.gz").read_bytes()
    with pytest.raises(InputError, match="is one of the inputs"):
        save_map(np.ones((3, 3, 3)), tmp_path / "in.nii.gz", ref, units="", description="")
    assert (tmp_path / "in.nii.gz").read_bytes() == before


def _missing(d, w):
    return d / "missing.nii.gz"


def _not_nifti(d, w):
    (d / "notes.txt").write_text("x")
    return d / "notes.txt"


def _truncated(d, w):
    full = w("full.nii.gz", np.random.default_rng(0).random((20, 20, 20)).astype(np.float32))
    (d / "cut.nii.gz").write_bytes(full.read_bytes()[:2000])
    return d / "cut.nii.gz"


def _nan_only(d, w):
    return w("nan.nii.gz", np.full((3, 3, 3), np.nan, np.float32))


@pytest.mark.parametrize(
    "make, message",
    [
        (_missing, "file not found"),
        (_not_nifti, "not a NIfTI file"),
        (_truncated, "truncated or corrupt"),
        (_nan_only, "every voxel is NaN"),
    ],
)
def test_bad_files_get_one_sentence(tmp_path, write_nifti, make, message):
    path = make(tmp_path, write_nifti)
    with pytest.raises(InputError, match=message) as err:
        load_volume(path)
    assert str(path.name) in str(err.value)


def test_gzip_integrity_detected(tmp_path, write_nifti):
    p = write_nifti("ok.nii.gz", np.ones((8, 8, 8), np.float32))
    raw = gzip.decompress(p.read_bytes())
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(gzip.compress(raw)[:-8])  # drop the gzip trailer (CRC + size)
    with pytest.raises(InputError, match="truncated or corrupt"):
        load_volume(bad)
