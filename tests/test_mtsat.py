"""Tests of reconst/mtsat.py: Helms' equations (small-angle and exact), B1, MTR, inputs, the CLI, BIDS MTS files,
qMRLab's in-vivo slice, and the phantom's two-pool MT model."""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy.integrate import quad, trapezoid
from scipy.linalg import expm

from napari_myelin.io.bids import find_subject, mts_roles
from napari_myelin.io.volume import load_volume
from napari_myelin.reconst.mtsat import fit_mtsat, mtsat_signal
from napari_myelin.utils.errors import InputError

FA = np.array([6.0, 6.0, 20.0])
TR = np.array([0.028, 0.028, 0.018])  # qMRLab's example protocol (MTw, PDw, T1w)
QMRLAB = Path(__file__).parent / "data" / "real" / "qmrlab"


def _bloch(a, t1, delta, flip_deg, tr, b=1.0):
    """Spoiled SPGR signal after 2^60 repetitions of the sequence, by doubling the per-TR map of Mz.

    One repetition: the MT pulse keeps ``1 - delta`` of Mz, the excitation reads ``sin(b a) Mz`` and keeps
    ``cos(b a)`` of it, relaxation over TR gives ``E1 Mz + (1 - E1)`` (M0 = 1); the affine map
    ``Mz -> c Mz + d`` is composed with itself 60 times from equilibrium. Independent of the closed forms.
    """
    alpha = np.deg2rad(flip_deg) * np.asarray(b, dtype=float)
    e1 = np.exp(-tr / np.asarray(t1, dtype=float))
    c = (1.0 - delta) * np.cos(alpha) * e1
    d = 1.0 - e1 + 0.0 * c
    for _ in range(60):
        c, d = c * c, c * d + d
    mz = c * 1.0 + d
    return a * np.sin(alpha) * (1.0 - delta) * mz


def _trio(a, t1, delta, b=1.0, fa=FA, tr=TR):
    return [_bloch(a, t1, delta if i == 0 else 0.0, fa[i], tr[i], b) for i in range(3)]


def _one_sentence(exc) -> str:
    text = str(exc.value)
    assert text.endswith(".") and "\n" not in text, text
    return text


def _helms_small_angle(mtw, pdw, t1w, fa, tr, b1=None, f=0.4, mechanistic=False):
    """qmrust ``models/mt_sat/fit.rs::mtsat`` transcribed (qMRLab ``MTSAT_exec``): MTsat (%), R1 (1/s), A."""
    a_mt, a_pd, a_t1 = np.deg2rad(fa)
    b = 1.0 if b1 is None else b1
    if mechanistic and b1 is not None:
        a_mt = a_mt * b
    r1 = 0.5 * b * b * ((a_t1 / tr[2]) * t1w - (a_pd / tr[1]) * pdw) / (pdw / a_pd - t1w / a_t1)
    a = (1.0 / b) * (tr[1] * a_t1 / a_pd - tr[2] * a_pd / a_t1) * (pdw * t1w) / (tr[1] * a_t1 * t1w - tr[2] * a_pd * pdw)
    mtsat = 100.0 * (tr[0] * (a_mt * (a / mtw) - 1.0) * r1 - a_mt * a_mt / 2.0)
    if b1 is not None and not mechanistic:
        mtsat = mtsat * (1.0 - f) / (1.0 - f * b)
    return mtsat, r1, a


# --------------------------------------------------------------------------- equations
@pytest.mark.parametrize("tr", [TR, np.array([0.025, 0.025, 0.025])])
@pytest.mark.parametrize("with_b1", [False, True])
def test_exact_equations_recover_t1_amplitude_and_saturation(tr, with_b1):
    """Exact mode on signals of the sequence run to steady state: T1, A and delta come back to 1e-9,
    with unequal or equal TRs; with a B1 map and no empirical factor every angle is B1-scaled."""
    rng = np.random.default_rng(1)
    n = 300
    a, t1, delta = rng.uniform(300, 3000, n), rng.uniform(0.3, 4.0, n), rng.uniform(0.0, 0.06, n)
    b = rng.uniform(0.75, 1.25, n) if with_b1 else 1.0
    maps = fit_mtsat(*_trio(a, t1, delta, b, tr=tr), flip_angles=FA, repetition_times=tr, exact=True,
                     b1=b if with_b1 else None, b1_correction=0.0)
    np.testing.assert_allclose(maps["t1"], t1, rtol=1e-9)
    np.testing.assert_allclose(maps["a"], a, rtol=1e-9)
    np.testing.assert_allclose(maps["mtsat"], 100 * delta, rtol=1e-9, atol=1e-9)
    assert maps.units == {"mtsat": "p.u.", "mtr": "%", "t1": "s", "a": "a.u."}
    assert maps.parameters["equations"] == "exact" and maps.parameters["n_invalid"] == 0
    # the forward model of the module is the same steady state
    np.testing.assert_allclose(mtsat_signal(a, t1, delta, FA[0], tr[0], b), _bloch(a, t1, delta, FA[0], tr[0], b),
                               rtol=1e-12)


def test_small_angle_equations_are_exact_on_their_own_model():
    """Helms' closed forms invert the small-angle signal S = A a R1 TR / (R1 TR + a^2/2 + delta) exactly
    (qmrust's forward_then_mtsat round trip), also with every angle B1-scaled and no empirical factor."""
    a, t1, sat = np.array([1000.0, 500.0, 2000.0]), np.array([0.9, 1.2, 0.6]), np.array([1.5, 3.0, 0.8])
    for b in (1.0, 1.2):
        alpha = np.deg2rad(FA) * b
        sig = [a * alpha[i] * (TR[i] / t1) / (TR[i] / t1 + alpha[i] ** 2 / 2 + (sat / 100 if i == 0 else 0))
               for i in range(3)]
        maps = fit_mtsat(*sig, flip_angles=FA, repetition_times=TR, b1=np.full(3, b), b1_correction=0.0)
        np.testing.assert_allclose(maps["t1"], t1, rtol=1e-12)
        np.testing.assert_allclose(maps["a"], a, rtol=1e-12)
        np.testing.assert_allclose(maps["mtsat"], sat, rtol=1e-12)


def test_small_angle_error_is_second_order():
    """On exact steady-state signals the small-angle equations err by O(a^2, R1 TR, delta): scaling angles
    by k and TR, delta by k^2 divides the relative errors of T1, A and MTsat by 4 per halving of k; at the
    qMRLab protocol they are about 1-2 % (T1), under 1 % (A) and 2-4 % (MTsat) for T1 = 0.6-4 s."""
    t1, a, d0 = np.array([0.6, 1.0, 2.0, 4.0]), 1000.0, 0.02
    errs = []
    for k in (1.0, 0.5, 0.25):
        fa, tr, d = FA * k, TR * k * k, d0 * k * k
        maps = fit_mtsat(*_trio(a, t1, d, fa=fa, tr=tr), flip_angles=fa, repetition_times=tr)
        errs.append(np.array([maps["t1"] / t1 - 1, maps["a"] / a - 1, maps["mtsat"] / (100 * d) - 1]))
    assert np.all(errs[0] > 0)  # the approximation overestimates all three here
    for coarse, fine in zip(errs[:-1], errs[1:]):
        ratio = coarse / fine
        assert np.all((ratio > 3.9) & (ratio < 4.2)), ratio
    assert np.abs(errs[0][0]).max() < 0.02 and np.abs(errs[0][1]).max() < 0.01 and np.abs(errs[0][2]).max() < 0.05
    exact = fit_mtsat(*_trio(a, t1, d0), flip_angles=FA, repetition_times=TR, exact=True)
    np.testing.assert_allclose(exact["t1"], t1, rtol=1e-10)


def test_b1_correction_as_qmrlab_and_weiskopf():
    """With a B1 map: R1 x B1^2 and A / B1 (actual angles), MTw angle nominal, MTsat x (1 - f)/(1 - f B1),
    exactly as qMRLab/qmrust; f = 0 is qmrust's model-based path; B1 = 1 (or 100 %) changes nothing."""
    rng = np.random.default_rng(4)
    n = 50
    a, t1, delta, b = rng.uniform(500, 2000, n), rng.uniform(0.5, 3, n), rng.uniform(0.005, 0.05, n), rng.uniform(0.8, 1.2, n)
    sig = _trio(a, t1, delta, b)
    for f in (0.4, 0.25):
        maps = fit_mtsat(*sig, flip_angles=FA, repetition_times=TR, b1=b, b1_correction=f)
        ref_sat, ref_r1, ref_a = _helms_small_angle(*sig, FA, TR, b1=b, f=f)
        np.testing.assert_allclose(maps["mtsat"], ref_sat, rtol=1e-12)
        np.testing.assert_allclose(maps["t1"], 1 / ref_r1, rtol=1e-12)
        np.testing.assert_allclose(maps["a"], ref_a, rtol=1e-12)
    plain = fit_mtsat(*sig, flip_angles=FA, repetition_times=TR, b1=b, b1_correction=0.0)
    np.testing.assert_allclose(plain["mtsat"], _helms_small_angle(*sig, FA, TR, b1=b, mechanistic=True)[0], rtol=1e-12)
    corrected = fit_mtsat(*sig, flip_angles=FA, repetition_times=TR, b1=b)
    np.testing.assert_allclose(corrected["t1"], plain["t1"], rtol=1e-14)  # R1 does not depend on the factor
    none = fit_mtsat(*sig, flip_angles=FA, repetition_times=TR)
    ones = fit_mtsat(*sig, flip_angles=FA, repetition_times=TR, b1=np.ones(n))
    with pytest.warns(UserWarning, match="percent"):
        percent = fit_mtsat(*sig, flip_angles=FA, repetition_times=TR, b1=np.full(n, 100.0))
    for key in ("mtsat", "t1", "a", "mtr"):
        np.testing.assert_allclose(ones[key], none[key], rtol=1e-14)
        np.testing.assert_allclose(percent[key], none[key], rtol=1e-14)
    # without the map, T1 carries the b^2 bias of the flip angles (small-angle: exactly 1/b^2 of R1)
    np.testing.assert_allclose(none["t1"] / corrected["t1"], b ** 2, rtol=1e-12)
    # exact mode: R1 and A from the actual angles, whatever the empirical factor
    exact = fit_mtsat(*sig, flip_angles=FA, repetition_times=TR, b1=b, exact=True)
    np.testing.assert_allclose(exact["t1"], t1, rtol=1e-9)
    np.testing.assert_allclose(exact["a"], a, rtol=1e-9)


def test_mtr_formula_and_invalid_voxels():
    mt, pd, t1w = np.array([150.0, 90.0, 121.0, 50.0]), np.array([200.0, 182.0, 165.0, 60.0]), np.array([120.0, 114.0, 97.0, 200.0])
    maps = fit_mtsat(mt, pd, t1w, flip_angles=FA, repetition_times=TR)
    np.testing.assert_allclose(maps["mtr"], 100 * (pd - mt) / pd, rtol=1e-14)
    assert maps["mtr"][0] == pytest.approx(25.0, rel=1e-14)
    assert maps["mtr"][1] == pytest.approx(50.54945054945055, rel=1e-14)  # qMRLab's probe (64, 64)
    # voxel 3: T1w brighter than PDw x 20/6 allows -> no positive R1: 0 in every map but MTR, counted
    assert maps["t1"][3] == maps["a"][3] == maps["mtsat"][3] == 0.0 and maps.parameters["n_invalid"] == 1
    assert maps["mtr"][3] == pytest.approx(100 * 10 / 60)


def test_bad_inputs_are_one_sentence():
    s = _trio(1000.0, np.full((3, 4, 2), 1.0), 0.02)
    with pytest.raises(InputError, match="needs three volumes.*PD-weighted volume was not given"):
        fit_mtsat(s[0], None, s[2], flip_angles=FA, repetition_times=TR)
    for fa, match in ((None, "no flip angles were given"), ([6, 20], "2 flip angles were given"),
                      ([6, 6, 120], "not all within")):
        with pytest.raises(InputError, match=match) as exc:
            fit_mtsat(*s, flip_angles=fa, repetition_times=TR)
        _one_sentence(exc)
    for tr, match in ((None, "no repetition times were given"), ([28, 28, 18], "seconds, not ms"),
                      ([0.028, 0.028], "2 repetition times")):
        with pytest.raises(InputError, match=match) as exc:
            fit_mtsat(*s, flip_angles=FA, repetition_times=tr)
        _one_sentence(exc)
    cases = [
        ((s[0], s[1][:2], s[2]), {}, "PD-weighted volume has shape"),
        ((s[0], -s[1], s[2]), {}, "PD-weighted volume has negative values"),
        ((s[0] * 0, s[1], s[2]), {}, "no voxel has a positive signal"),
        ((np.where(np.arange(2) == 0, 0.0, s[0]), s[1], s[2]), {"mask": np.ones((3, 4, 2))}, "zero or non-finite signal in the MT-weighted"),
        (s, {"mask": np.ones((3, 4))}, "mask: shape"),
        (s, {"b1": np.ones((3, 3, 2))}, "B1 map: shape .* MT-weighted grid"),
        (s, {"b1_correction": 1.0}, "outside \\[0, 1\\)"),
    ]
    for vols, kwargs, match in cases:
        with pytest.raises(InputError, match=match) as exc:
            fit_mtsat(*vols, flip_angles=FA, repetition_times=TR, **kwargs)
        _one_sentence(exc)
    with pytest.raises(InputError, match="share flip angle") as exc:
        fit_mtsat(*s, flip_angles=[6, 6, 6], repetition_times=[0.028] * 3)
    _one_sentence(exc)


# --------------------------------------------------------------------------- files: BIDS, command line
def _write_trio(folder: Path, sig, affine, sidecar=True, names=None):
    names = names or ("sub-01_flip-1_mt-on_MTS", "sub-01_flip-1_mt-off_MTS", "sub-01_flip-2_mt-off_MTS")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (name, data) in enumerate(zip(names, sig)):
        path = folder / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(np.asarray(data, np.float32), affine), str(path))
        if sidecar:
            side = {"FlipAngle": float(FA[i]), "RepetitionTimeExcitation": float(TR[i]), "MTState": i == 0}
            (folder / f"{name}.json").write_text(json.dumps(side))
        paths.append(path)
    return paths


def _cli(*argv):
    from napari_myelin.cli import main

    return main([str(a) for a in argv])


def _synthetic_volume(shape=(10, 8, 6)):
    x = np.linspace(0, 1, int(np.prod(shape))).reshape(shape)
    return 800 + 400 * x, 0.7 + 1.5 * x, 0.01 + 0.03 * x, 0.85 + 0.3 * x


def test_bids_trio_is_recognised_in_role_order(tmp_path):
    amp, t1, delta, _ = _synthetic_volume()
    paths = _write_trio(tmp_path / "sub-01" / "anat", _trio(amp, t1, delta), np.eye(4))
    assert mts_roles([paths[2], paths[0], paths[1]]) == paths
    assert mts_roles(["a.nii.gz", "b.nii.gz", "c.nii.gz"]) == [Path("a.nii.gz"), Path("b.nii.gz"), Path("c.nii.gz")]
    files = find_subject(tmp_path / "sub-01")
    assert files.mts == paths and files.present()["mts"] and files.all_files() == paths
    with pytest.raises(InputError, match="one mt-on and two mt-off") as exc:
        mts_roles([paths[0], paths[0], paths[1]])
    _one_sentence(exc)
    with pytest.raises(InputError, match="do not make one BIDS trio"):
        mts_roles([paths[0], paths[1], tmp_path / "other.nii.gz"])
    paths[2].unlink()
    with pytest.raises(InputError, match="needs exactly three"):
        find_subject(tmp_path / "sub-01")


def test_cli_mtsat_writes_the_maps_from_a_bids_trio(tmp_path, capsys):
    amp, t1, delta, b = _synthetic_volume()
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    sig = _trio(amp, t1, delta, b)
    paths = _write_trio(tmp_path / "in", sig, aff)
    # B1 on a coarse grid whose voxel centres are those of the fine grid's 2x2x2 blocks; b is linear in space
    b1_aff = np.diag([4.0, 4.0, 4.0, 1.0])
    b1_aff[:3, 3] = 1.0
    b1_path = tmp_path / "b1.nii.gz"
    nib.save(nib.Nifti1Image(b.reshape(5, 2, 4, 2, 3, 2).mean(axis=(1, 3, 5)).astype(np.float32), b1_aff), str(b1_path))
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="resampled"):
        assert _cli("mtsat", paths[2], paths[0], paths[1], "--b1", b1_path, "--exact", "--b1-correction", "0",
                    "--out", out) == 0
    assert "wrote 4 maps" in capsys.readouterr().out
    for name, units in (("mtsat", "p.u."), ("mtr", "%"), ("t1", "s"), ("a", "a.u.")):
        side = json.loads((out / f"{name}.json").read_text())
        assert side["Units"] == units and len(side["Sources"]) == 4
    inner = (slice(1, -1),) * 3  # away from the B1 map's edge (nearest-edge extrapolation there)
    t1_out = nib.load(out / "t1.nii.gz").get_fdata()
    np.testing.assert_allclose(t1_out[inner], t1[inner], rtol=1e-5)
    np.testing.assert_allclose(nib.load(out / "mtsat.nii.gz").get_fdata()[inner], 100 * delta[inner], rtol=1e-4)
    # positional non-BIDS files with the protocol on the command line: the arrays' fit
    plain = _write_trio(tmp_path / "plain", sig, aff, sidecar=False, names=("mt", "pd", "t1"))
    assert _cli("mtsat", *plain, "--flip-angles", *FA, "--tr", *TR, "--out", tmp_path / "o2") == 0
    ref = fit_mtsat(*(np.asarray(s, np.float32) for s in sig), flip_angles=FA, repetition_times=TR)
    for name in ("mtsat", "mtr", "t1", "a"):
        np.testing.assert_allclose(nib.load(tmp_path / "o2" / f"{name}.nii.gz").get_fdata(), ref[name], rtol=1e-6)


def test_cli_bad_inputs_exit_2_and_write_nothing(tmp_path, capsys):
    amp, t1, delta, _ = _synthetic_volume()
    sig = _trio(amp, t1, delta)
    good = _write_trio(tmp_path / "good", sig, np.eye(4))
    no_fa = _write_trio(tmp_path / "nofa", sig, np.eye(4), names=("a", "b", "c"))
    side = json.loads((tmp_path / "nofa" / "b.json").read_text())
    del side["FlipAngle"]
    (tmp_path / "nofa" / "b.json").write_text(json.dumps(side))
    no_tr = _write_trio(tmp_path / "notr", sig, np.eye(4), sidecar=False, names=("a", "b", "c"))
    shifted = _write_trio(tmp_path / "shift", sig, np.diag([1.0, 1.0, 2.0, 1.0]))
    negative = _write_trio(tmp_path / "neg", [sig[0], -sig[1], sig[2]], np.eye(4), names=("n1", "n2", "n3"))
    zeros = _write_trio(tmp_path / "zero", [sig[0] * 0, sig[1], sig[2]], np.eye(4), names=("z1", "z2", "z3"))
    mask = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(np.ones(sig[0].shape, np.uint8), np.eye(4)), str(mask))
    cases = [
        ((good[0], good[1]), "2 file\\(s\\) were given"),
        ((*no_fa,), "b.nii.gz: its JSON sidecar has no FlipAngle"),
        ((*no_tr, "--flip-angles", *FA), "has no RepetitionTimeExcitation or RepetitionTime"),
        ((good[0], good[1], shifted[2]), "its grid differs"),
        ((*negative,), "negative values"),
        ((*zeros, "--mask", mask), "zero or non-finite signal in the MT-weighted"),
        ((*good, "--tr", 28, 28, 18), "not ms"),
    ]
    for i, (argv, match) in enumerate(cases):
        out = tmp_path / f"out{i}"
        assert _cli("mtsat", *argv, "--out", out) == 2, match
        line = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar, if the fit started
        assert line.startswith("napari-myelin mtsat: error: ") and line.endswith("."), line
        assert re.search(match, line), line
        assert not out.exists()  # nothing written, not even the folder


# --------------------------------------------------------------------------- qMRLab's in-vivo slice
def _recipe_roles(config: str) -> dict:
    """``{role: (flip_angle deg, repetition_time s)}`` of qMRLab's recipe lines ``mtw: { flip_angle: 6, ... }``."""
    out = {}
    for role, fa, tr in re.findall(r"^(mtw|pdw|t1w):\s*\{\s*flip_angle:\s*([\d.]+),\s*repetition_time:\s*([\d.]+)\s*\}",
                                   config, flags=re.M):
        out[role] = (float(fa), float(tr))
    return out


def test_real_qmrlab_mtsat_files_are_upstream_bytes():
    blobs = {"mt_sat.nii.gz": "12f0a78ebd1e74e0190864b0bf3a2bdc250789c0",
             "mt_sat.json": "bacc0d72e3a810ee94323478ab6a1063ea539690"}
    for name, blob in blobs.items():
        data = (QMRLAB / name).read_bytes()
        assert hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() == blob, name


def test_real_qmrlab_mtsat_probes():
    """MTsat, T1 and MTR within 0.5 % of qMRLab at every published probe voxel.

    As qMRLab: flip angles and TRs of the recipe (``config``), volumes in ``volume_ids`` order, no B1 map
    (the dataset has none: ``files.aux`` is empty), default small-angle equations, probe ``(x, y)`` =
    first and second array axes.
    """
    vol = load_volume(QMRLAB / "mt_sat.nii.gz")
    meta = vol.metadata  # mt_sat.json is the sidecar of mt_sat.nii.gz
    assert meta["files"] == {"data": "mt_sat.nii.gz", "mask": None, "aux": {}}
    assert vol.data.shape == (128, 128, 1, 3) == tuple(meta["dims"]) and meta["volume_ids"] == ["MTw", "PDw", "T1w"]
    roles = _recipe_roles(meta["config"])
    assert roles == {"mtw": (6.0, 0.028), "pdw": (6.0, 0.028), "t1w": (20.0, 0.018)}
    fa = [roles[r][0] for r in ("mtw", "pdw", "t1w")]
    tr = [roles[r][1] for r in ("mtw", "pdw", "t1w")]
    maps = fit_mtsat(*(vol.data[:, :, 0, i] for i in range(3)), flip_angles=fa, repetition_times=tr)
    names = {"MTSAT": "mtsat", "T1": "t1", "MTR": "mtr"}
    published = {o["name"] for o in meta["outputs"]}
    assert published == set(names) and len(meta["probes"]) == 8
    for p in meta["probes"]:
        x, y = p["x"], p["y"]
        assert set(p["expected"]) == published
        for key, value in p["expected"].items():
            assert maps[names[key]][x, y] == pytest.approx(value, rel=0.005), (key, x, y)


def test_real_qmrlab_mtsat_exact_equations_differ_by_the_small_angle_error():
    """The exact equations on the same slice: T1 1.0-1.5 % below qMRLab's small-angle values at every probe (the
    small-angle T1 error at T1 = 1-2.5 s, measured on synthetic signals above), MTsat below too, MTR identical."""
    vol = load_volume(QMRLAB / "mt_sat.nii.gz")
    maps = fit_mtsat(*(vol.data[:, :, 0, i] for i in range(3)), flip_angles=[6, 6, 20], repetition_times=[0.028, 0.028, 0.018],
                     exact=True)
    for p in vol.metadata["probes"]:
        x, y, e = p["x"], p["y"], p["expected"]
        assert -0.015 < maps["t1"][x, y] / e["T1"] - 1 < -0.010
        assert maps["mtsat"][x, y] < e["MTSAT"]
        assert maps["mtr"][x, y] == pytest.approx(e["MTR"], rel=1e-12)


# --------------------------------------------------------------------------- the phantom's MT model
def test_phantom_mt_model_against_the_pulse_sequence_run_to_steady_state():
    """:func:`simulate_mts` (closed-form steady state, closed-form expm) against the two-pool sequence run with
    scipy's expm for 3000 repetitions; the bound-pool saturation against a numerical pulse integral, and the
    line shape's normalisation."""
    from napari_myelin.sims.phantom import bound_saturation, simulate_mts, super_lorentzian
    from napari_myelin.sims.phantom.constants import MT_KR, MT_PULSE, MT_R1B, MTS_FLIPS, MTS_TRS

    m0, t1, bpf, b1 = np.array([1.0, 0.8, 0.9]), np.array([0.9, 1.5, 4.0]), np.array([0.15, 0.06, 0.0]), np.array([1.0, 0.9, 1.1])
    sig = simulate_mts(m0, t1, bpf, b1)
    t = np.linspace(-MT_PULSE["duration_s"] / 2, MT_PULSE["duration_s"] / 2, 20001)
    shape = np.exp(-t ** 2 / (2 * (MT_PULSE["duration_s"] / 6) ** 2))
    w1 = np.deg2rad(MT_PULSE["flip_deg"]) * shape / trapezoid(shape, t)
    g = super_lorentzian(MT_PULSE["offset_hz"])
    # a normalised line shape: the integral over all offsets (Hz) of the super-Lorentzian is 1/(2 pi); the
    # half line from 4.5e-5 Hz to 3.3 MHz in log(offset)
    half = quad(lambda x: super_lorentzian(np.exp(x)) * np.exp(x), -10.0, 15.0, limit=400)[0]
    assert half == pytest.approx(1 / (4 * np.pi), rel=1e-6)
    for v in range(3):
        kf = MT_KR * bpf[v]
        r1f = 1 / t1[v] - kf * MT_R1B / (MT_R1B + MT_KR)
        a = np.array([[-r1f - kf, MT_KR], [kf, -MT_R1B - MT_KR]])
        m_eq = m0[v] * np.array([1.0, bpf[v]])
        np.testing.assert_allclose(bound_saturation(b1[v]), np.exp(-np.pi * g * trapezoid((b1[v] * w1) ** 2, t)),
                                   rtol=1e-7)
        s_b = bound_saturation(b1[v])
        for i, (flip, tr) in enumerate(zip(MTS_FLIPS, MTS_TRS)):
            e = expm(a * tr)
            alpha = np.deg2rad(flip) * b1[v]
            m = m_eq.copy()
            for _ in range(3000):
                m = m * np.array([1.0, s_b if i == 0 else 1.0])
                signal = np.sin(alpha) * m[0]
                m = m * np.array([np.cos(alpha), 1.0])
                m = e @ (m - m_eq) + m_eq
            np.testing.assert_allclose(sig[v, i], signal, rtol=1e-10)
    # the free-pool R1 is chosen so that the MT-off pair shows the phantom's T1 (exact SPGR inversion)
    maps = fit_mtsat(*sig.T, flip_angles=MTS_FLIPS, repetition_times=MTS_TRS, b1=b1, exact=True, b1_correction=0.0)
    np.testing.assert_allclose(maps["t1"], t1, rtol=1e-3)
    assert sig[2, 0] == pytest.approx(sig[2, 1], rel=1e-12)  # no bound pool (CSF): the MT pulse changes nothing


def test_phantom_mts_leaves_every_other_acquisition_unchanged(monkeypatch):
    """The MTS trio draws its noise from its own generator after the others: a phantom made without it has the
    same arrays, bit for bit, for every other acquisition and truth map (seed 3 with lesions)."""
    from napari_myelin.sims.phantom import make_phantom
    from napari_myelin.sims.phantom import subject

    with_mts = make_phantom(seed=3, size="small", lesions=True)
    monkeypatch.setattr(subject, "_mts", lambda scan, grid, rng: ({}, {}))
    without = make_phantom(seed=3, size="small", lesions=True)
    assert set(with_mts.acq) - set(without.acq) == {"mts_mtw", "mts_pdw", "mts_t1w"}
    for key, vol in without.acq.items():
        np.testing.assert_array_equal(with_mts.acq[key].data, vol.data)
        np.testing.assert_array_equal(with_mts.acq[key].affine, vol.affine)
    for modality, maps in without.truth.items():
        if modality == "mts":
            continue
        for key, vol in maps.items():
            np.testing.assert_array_equal(with_mts.truth[modality][key].data, vol.data)
    assert with_mts.parameters == without.parameters


@pytest.fixture(scope="module")
def phantom_mts():
    from napari_myelin.io.resample import b1_on_grid
    from napari_myelin.sims.phantom import make_phantom

    ph = make_phantom(seed=0, size="small", snr=200.0)
    vols = [ph.acq[k] for k in ("mts_mtw", "mts_pdw", "mts_t1w")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b1 = b1_on_grid(ph.acq["b1"], vols[0])  # the measured map, on its own coarse grid
    truth = ph.truth["mts"]
    mask = truth["mask"].data > 0
    data = [np.clip(np.rint(v.data), 0, 32767) for v in vols]  # as write_phantom stores them (int16)
    fa = [v.metadata["FlipAngle"] for v in vols]
    tr = [v.metadata["RepetitionTimeExcitation"] for v in vols]
    fits = {name: fit_mtsat(*data, flip_angles=fa, repetition_times=tr, mask=mask, **kw)
            for name, kw in (("b1", {"b1": b1}), ("b1_exact", {"b1": b1, "exact": True}), ("no_b1", {}))}
    return truth, mask & (truth["wm"].data >= 0.5), fits


def test_phantom_mtsat_mtr_t1_against_truth(phantom_mts):
    """Small phantom, SNR 200, the measured B1 map: WM MTsat within 3 % (median) of the MTsat the tissue has at
    the nominal field, T1 within 2 % (small-angle) and 1.5 % (exact), MTR within 1 point; without the B1 map
    T1 shows the b^2 bias and MTsat a larger error."""
    from scipy.stats import spearmanr

    truth, wm, fits = phantom_mts
    assert wm.sum() > 500
    true_sat, true_t1, true_mtr = (truth[k].data[wm] for k in ("mtsat", "t1", "mtr"))
    assert 1.5 < np.median(true_sat) < 3.0 and 30 < np.median(true_mtr) < 50  # WM at 3 T
    for name, t1_tol in (("b1", 0.02), ("b1_exact", 0.015)):
        m = fits[name]
        assert abs(np.median(m["mtsat"][wm] / true_sat - 1)) < 0.03, name
        assert abs(np.median(m["t1"][wm] / true_t1 - 1)) < t1_tol, name
        assert np.median(np.abs(m["mtr"][wm] - true_mtr)) < 1.0
        assert spearmanr(m["mtsat"][wm], truth["bpf"].data[wm]).statistic > 0.95
    no_b1 = fits["no_b1"]
    ratio = no_b1["t1"][wm] / true_t1
    np.testing.assert_allclose(np.median(ratio / truth["b1"].data[wm] ** 2), 1.0, atol=0.03)
    assert np.median(np.abs(no_b1["mtsat"][wm] / true_sat - 1)) > np.median(np.abs(fits["b1"]["mtsat"][wm] / true_sat - 1))
