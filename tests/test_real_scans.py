"""The estimators on real scans they did not generate (tests/data/real, MIT; see its NOTICE.md).

* qMRLab's in-vivo variable-flip-angle slice (qMRLab/qmrust ``docs/playground/data/vfa_t1.*``) with
  the T1 and M0 that qMRLab's fit gives at 8 published probe voxels.
* ROMEO.jl's 3-echo GRE brain crop (korbinian90/ROMEO.jl ``test/data/small``) through the QSM
  pipeline: no residual phase wraps in the field, a field consistent with the measured phase, and
  a susceptibility map with values; the phase as stored (+-pi/855, not radians) is refused.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from napari_myelin.cli import main
from napari_myelin.io.volume import load_volume
from napari_myelin.reconst.qpm import fit_vfa
from napari_myelin.reconst.qsm import fit_qsm, phase_sign_result, phase_to_radians
from napari_myelin.utils.errors import InputError

REAL = Path(__file__).parent / "data" / "real"
QMRLAB = REAL / "qmrlab"
ROMEO = REAL / "romeo"

# git blob ids of the upstream files (tests/data/real/NOTICE.md); for ROMEO, of the decompressed .nii
UPSTREAM_BLOBS = {
    QMRLAB / "vfa_t1.nii.gz": "6475f551c06d06d24ac4402848bd3f6c4c992657",
    QMRLAB / "vfa_t1_B1map.nii.gz": "878be0c57fe97243b14379d342887c2fe8ee63a8",
    QMRLAB / "vfa_t1_mask.nii.gz": "08cb278e70aac36e9432bc148ff29c5a90eda8d8",
    QMRLAB / "vfa_t1.json": "14af4ca58941b85507994fdffeecf28607703e30",
    ROMEO / "Mag.nii.gz": "bdc99ced049d90fed82dc373636c39db9828f990",
    ROMEO / "Phase.nii.gz": "01719bb014fb8453ced4f28394f5e2c1bba16715",
}

#: Agreement required with qMRLab at each probe voxel (relative).
VFA_RTOL = 0.005


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _recipe(text: str) -> dict:
    """The ``flip_angles`` list and ``repetition_time`` of qMRLab's YAML recipe (``config``).

    A reader for exactly the two keys the recipe holds (block list of numbers, scalar), so the test
    needs no YAML library.
    """
    out: dict = {}
    key = None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line:
            continue
        if line.startswith("- ") and key is not None:
            out[key].append(float(line[2:]))
            continue
        name, _, value = line.partition(":")
        key = None
        if name in ("flip_angles", "repetition_time"):
            if value.strip():
                out[name] = float(value)
            else:
                key = name
                out[name] = []
    return out


def _vfa_inputs():
    """Signals (x, y, angle), B1, mask, flip angles (deg), TR (s) and probes, all from the shipped files."""
    vol = load_volume(QMRLAB / "vfa_t1.nii.gz")
    meta = vol.metadata  # vfa_t1.json is the sidecar of vfa_t1.nii.gz
    b1 = load_volume(QMRLAB / meta["files"]["aux"]["B1map"]).data[:, :, 0]
    mask = load_volume(QMRLAB / meta["files"]["mask"]).data[:, :, 0] > 0
    recipe = _recipe(meta["config"])
    return vol.data[:, :, 0, :], b1, mask, recipe["flip_angles"], recipe["repetition_time"], meta["probes"]


# --------------------------------------------------------------------------- provenance and loading
def test_real_scans_are_the_upstream_bytes():
    """Every shipped file is byte-identical to the upstream file named in NOTICE.md."""
    for path, blob in UPSTREAM_BLOBS.items():
        data = path.read_bytes()
        if path.parent == ROMEO:
            data = gzip.decompress(data)
        assert _git_blob_id(data) == blob, path.name


def test_real_scans_load_with_the_shipped_protocol():
    meta = json.loads((QMRLAB / "vfa_t1.json").read_text())
    vol = load_volume(QMRLAB / meta["files"]["data"])
    assert vol.data.shape == (128, 128, 1, 2) == tuple(meta["dims"])
    assert vol.metadata == meta  # the loader reads vfa_t1.json as the sidecar
    assert load_volume(QMRLAB / meta["files"]["aux"]["B1map"]).data.shape == (128, 128, 1)
    mask = load_volume(QMRLAB / meta["files"]["mask"]).data
    assert mask.shape == (128, 128, 1) and int((mask > 0).sum()) == 4668
    recipe = _recipe(meta["config"])
    assert recipe == {"flip_angles": [3.0, 20.0], "repetition_time": 0.015}
    assert [v["FlipAngle"] for v in meta["volume_ids"]] == recipe["flip_angles"]  # volume order on disk
    assert len(meta["probes"]) == 8

    mag, ph = load_volume(ROMEO / "Mag.nii.gz"), load_volume(ROMEO / "Phase.nii.gz")
    assert mag.data.shape == ph.data.shape == (51, 51, 41, 3)
    np.testing.assert_allclose(np.sqrt((ph.affine[:3, :3] ** 2).sum(0)), [0.46875, 0.46875, 1.0])
    protocol = json.loads((ROMEO / "protocol.json").read_text())
    assert protocol["EchoTime"] == [0.002, 0.004, 0.006]
    # not radians: the stored phase spans [-pi/855, pi/855] (see protocol.json, PhaseScaling)
    np.testing.assert_allclose(np.pi / np.abs(ph.data).max(), 855.0, rtol=1e-6)


# --------------------------------------------------------------------------- VFA T1 vs qMRLab
def test_real_vfa_t1_matches_qmrlab_probes():
    """T1 and M0 within 0.5 % of qMRLab at every published probe voxel.

    As qMRLab: flip angles and TR from the shipped recipe, the shipped B1 map (the probes were fitted
    with it: ``files.aux.B1map``), probe ``(x, y)`` = first and second array axes. Two flip angles
    determine the two unknowns exactly, so the linear fit (qMRLab's) and the Levenberg-Marquardt
    refinement (our default) must both reproduce it. ``m0`` is the raw fitted amplitude, qMRLab's M0
    (``pd`` is ``m0`` normalised to CSF and has no qMRLab counterpart).
    """
    sig, b1, mask, fa, tr, probes = _vfa_inputs()
    for nonlinear in (True, False):
        maps = fit_vfa(sig, fa, tr, b1=b1, mask=mask, nonlinear=nonlinear)
        for p in probes:
            x, y, e = p["x"], p["y"], p["expected"]
            assert mask[x, y]
            assert maps["t1"][x, y] == pytest.approx(e["T1"], rel=VFA_RTOL), (nonlinear, x, y)
            assert maps["m0"][x, y] == pytest.approx(e["M0"], rel=VFA_RTOL), (nonlinear, x, y)


def test_real_vfa_t1_probes_need_the_b1_map():
    """Without the B1 map (B1 = 1) every probe's T1 is off by more than 30 % (the B1 there is 1.20):
    the agreement above depends on using the B1 map as qMRLab did, not on a lenient tolerance."""
    sig, b1, mask, fa, tr, probes = _vfa_inputs()
    maps = fit_vfa(sig, fa, tr, mask=mask)
    for p in probes:
        x, y = p["x"], p["y"]
        assert b1[x, y] > 1.15
        assert maps["t1"][x, y] / p["expected"]["T1"] - 1 > 0.3


# --------------------------------------------------------------------------- QSM on ROMEO's GRE
def _romeo_radians(raw: np.ndarray) -> np.ndarray:
    """Phase in radians as ROMEO reads it (MriResearchTools.readphase): [min, max] -> [-pi, pi]."""
    lo, hi = float(raw.min()), float(raw.max())
    return -np.pi + (raw - lo) * (2 * np.pi / (hi - lo))


@pytest.fixture(scope="module")
def romeo_qsm():
    mag, ph = load_volume(ROMEO / "Mag.nii.gz"), load_volume(ROMEO / "Phase.nii.gz")
    protocol = json.loads((ROMEO / "protocol.json").read_text())
    te = np.asarray(protocol["EchoTime"])
    phase = _romeo_radians(ph.data)
    maps = fit_qsm(mag.data, phase, te, field_strength=protocol["MagneticFieldStrength"], affine=ph.affine)
    return maps, phase, te


def _neighbour_pairs(x: np.ndarray, mask: np.ndarray):
    """``|x(v + e_a) - x(v)|`` over the face-neighbour pairs with both voxels in ``mask``, all 3 axes."""
    out = []
    for ax in range(3):
        n = mask.shape[ax]
        both = np.take(mask, range(n - 1), axis=ax) & np.take(mask, range(1, n), axis=ax)
        out.append(np.abs(np.diff(x, axis=ax))[both])
    return np.concatenate(out)


def test_real_romeo_gre_qsm_runs_and_keeps_values(romeo_qsm):
    """Default pipeline (brain mask, Laplacian unwrapping, PDF, TV): a mask with a reasonable fraction
    of this all-brain crop (about half), finite chi inside with a spread of tissue values, 0 outside."""
    maps, _, _ = romeo_qsm
    mask = maps["mask"].astype(bool)
    chi = maps["chi"]
    assert chi.shape == mask.shape == (51, 51, 41)
    assert 0.3 < mask.mean() < 0.9
    assert np.isfinite(chi[mask]).all()
    assert (chi[mask] == 0).mean() < 1e-3
    assert 0.05 < chi[mask].std() < 1.0  # ppm at the assumed 7 T
    assert not chi[~mask].any()


def test_real_romeo_gre_field_has_no_residual_wraps(romeo_qsm):
    """No 2 pi jumps left in the echo-combined field.

    Criterion: the field (Hz) as phase at the last echo, ``phi_3 = 2 pi f TE_3``, changes by less
    than pi between face neighbours inside the mask, for at least 99.9 % of pairs. Why it is
    meaningful: the unwrapping's failure mode (a 2 pi error in the spatially unwrapped echo
    difference) moves ``f`` by ``1 / dTE`` = 500 Hz, i.e. ``phi_3`` by 6 pi, and a 2 pi error in the
    last echo alone moves ``f`` by about 250 Hz (3 pi in ``phi_3``), while a genuine field gradient
    would need more than 83 Hz per voxel to reach pi — this brain crop has at most about 54 Hz.
    The measured wrapped phase of echo 3 has such jumps in more than 0.5 % of the same pairs, so
    there were wraps to remove. Since the echoes are equally spaced, ``phi_3`` does not depend on
    the echo-time scale assumed (ROMEO's test values 2, 4, 6 ms).
    """
    maps, phase, te = romeo_qsm
    mask = maps["mask"].astype(bool)
    unwrapped = _neighbour_pairs(2 * np.pi * maps["field"].astype(np.float64) * te[-1], mask)
    wrapped = _neighbour_pairs(phase[..., -1], mask)
    assert unwrapped.size > 100_000
    assert (wrapped > np.pi).mean() > 0.005
    assert (unwrapped > np.pi).mean() <= 1e-3


def test_real_romeo_gre_field_reproduces_the_measured_phase(romeo_qsm):
    """The field reproduces the measured echo-to-echo phase evolution modulo 2 pi: the wrapped
    residual ``W(2 pi f (TE_n - TE_1) - (phi_n - phi_1))`` is below pi/2 in 99.9 % of mask voxels
    for n = 2, 3 (a field off by a wrap would leave a residual near pi)."""
    maps, phase, te = romeo_qsm
    mask = maps["mask"].astype(bool)
    f = maps["field"].astype(np.float64)
    for n in (1, 2):
        resid = np.angle(np.exp(1j * (2 * np.pi * f * (te[n] - te[0]) - (phase[..., n] - phase[..., 0]))))
        assert (np.abs(resid[mask]) < np.pi / 2).mean() >= 0.999, n


def test_real_romeo_raw_phase_is_refused(tmp_path, capsys):
    """The shipped file as stored (+-pi/855 behind a NaN scl_slope) is not taken for radians: one sentence
    naming the file and the range found, from the Python entry point and from the CLI (exit 2, nothing
    written). The rescaled phase above runs."""
    raw = load_volume(ROMEO / "Phase.nii.gz").data
    with pytest.raises(InputError, match=r"^Phase\.nii\.gz: values -0\.003674\.\.0\.003674 are neither radians"):
        phase_to_radians(raw, name="Phase.nii.gz")
    with pytest.raises(InputError, match=r"^phase: values -0\.003674\.\.0\.003674 are neither radians"):
        fit_qsm(load_volume(ROMEO / "Mag.nii.gz").data, raw, [0.002, 0.004, 0.006], field_strength=7.0)
    out = tmp_path / "qsm"
    argv = ["qsm", str(ROMEO / "Mag.nii.gz"), str(ROMEO / "Phase.nii.gz"), "--te", "0.002", "0.004", "0.006",
            "--b0", "7", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"napari-myelin qsm: error: {ROMEO / 'Phase.nii.gz'}: values -0.003674..0.003674 are ")
    assert err.count("\n") == 1 and "rescale it to radians" in err
    assert not out.exists()


def test_real_romeo_phase_sign_is_inconclusive(romeo_qsm):
    """On this crop (echo times assumed, R2* noisy at 2-6 ms) the high-R2* voxels are as often above as
    below their neighbourhood: the sign check says it cannot tell rather than warn."""
    maps, _, _ = romeo_qsm
    check = maps.parameters["PhaseSignCheck"]
    assert phase_sign_result(check) == "inconclusive"
    assert check["Voxels"] > 1000 and 0.4 < check["ParamagneticVoxels"] / check["Voxels"] < 0.6
