"""Tests of reconst/qpm/: forward models, VFA fit, myelin maps and the MWF calibration."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import expm

from napari_myelin.io.resample import b1_on_grid
from napari_myelin.reconst import qpm

FA = np.array([3.0, 10.0, 20.0])
TR = 0.015


# --------------------------------------------------------------------------- forward models
def test_two_pool_without_myelin_is_ernst():
    t1 = np.array([0.6, 0.9, 1.4])
    s2 = qpm.spgr_two_pool_signal(0.7, 0.0, FA, TR, t1_ie=t1[:, None], b1=np.array([0.9, 1.0, 1.2]))
    s1 = qpm.spgr_signal(0.7, t1[:, None], FA, TR, b1=np.array([0.9, 1.0, 1.2]))
    assert s2.shape == (3, 3, 3)
    np.testing.assert_allclose(s2, s1, rtol=1e-12)


def test_ernst_closed_form():
    s = qpm.spgr_signal(2.0, 1.0, [90.0], 1e3)  # full recovery: S = M0
    np.testing.assert_allclose(s, [2.0], rtol=1e-12)
    e1 = np.exp(-TR / 0.8)
    a = np.deg2rad(10.0 * 1.1)
    ref = 0.9 * np.sin(a) * (1 - e1) / (1 - e1 * np.cos(a))
    np.testing.assert_allclose(qpm.spgr_signal(0.9, 0.8, [10.0], TR, b1=1.1), [ref], rtol=1e-12)


@pytest.mark.parametrize("f_m, b1", [(0.05, 1.0), (0.15, 1.1), (0.3, 0.85)])
def test_two_pool_steady_state_fixed_point(f_m, b1):
    m0, t1m, t1ie, tau = 0.8, 0.45, 1.1, 0.15
    s = qpm.spgr_two_pool_signal(m0, f_m, FA, TR, t1_m=t1m, t1_ie=t1ie, tau_m=tau, b1=b1)
    km = 1.0 / tau
    kie = f_m * km / (1 - f_m)
    a_mat = np.array([[-1 / t1m - km, kie], [km, -1 / t1ie - kie]])
    e = expm(a_mat * TR)
    m_eq = m0 * np.array([f_m, 1 - f_m])
    for i, a in enumerate(np.deg2rad(FA * b1)):
        # run the pulse sequence to steady state and compare with the closed form
        m = m_eq.copy()
        for _ in range(3000):
            m = e @ (np.cos(a) * m - m_eq) + m_eq
        assert np.allclose(e @ (np.cos(a) * m - m_eq) + m_eq, m, atol=1e-14)  # fixed point reached
        np.testing.assert_allclose(s[i], np.sin(a) * m.sum(), rtol=1e-10)


def test_two_pool_broadcasts_over_voxels():
    f = np.linspace(0, 0.3, 7).reshape(7, 1, 1)
    m0 = np.full((1, 4, 5), 0.6)
    s = qpm.spgr_two_pool_signal(m0, f, FA, TR)
    assert s.shape == (7, 4, 5, 3)
    np.testing.assert_allclose(s[3, 2, 1], qpm.spgr_two_pool_signal(0.6, f[3, 0, 0], FA, TR), rtol=1e-12)
    # more myelin water (short T1) -> more signal at high flip angles (partial saturation)
    assert np.all(np.diff(s[:, 0, 0, -1]) > 0)


# --------------------------------------------------------------------------- a small synthetic brain
def synthetic(shape=(24, 24, 8), snr=None, seed=0, model="two-pool"):
    """Blocks of 'tracts' (labels 1-6, MWF 0.06-0.24 with a gradient inside), GM, CSF; smooth B1 0.85-1.15.

    ``model="two-pool"``: WM/GM signals from the two-pool model with f_m = MWF (truth ``mwf``);
    ``model="ernst"``: single-pool signals with the known T1 (truth ``t1``). Noise: Gaussian of SD
    (mean WM signal)/snr, magnitude taken (Rician).
    """
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    labels = np.zeros(shape, int)
    mwf = np.zeros(shape)
    t1 = np.full(shape, 4.0)  # CSF
    pd = np.ones(shape)
    ix = np.minimum(((x + 1) / 2 * 3).astype(int), 2)
    iy = (y > 0).astype(int)
    wm = (np.abs(x) < 0.75) & (np.abs(y) < 0.75)
    labels[wm] = 1 + ix[wm] + 3 * iy[wm]
    mwf[wm] = 0.06 + 0.03 * (labels[wm] - 1) + 0.03 * z[wm]
    gm = ~wm & (np.abs(x) < 0.9) & (np.abs(y) < 0.9)
    mwf[gm] = 0.03
    t1[wm] = 0.7 + 0.5 * (0.25 - mwf[wm])  # single-pool T1 (Ernst model) 0.7-0.8 s
    t1[gm] = 1.4
    pd[wm], pd[gm] = 0.7, 0.82
    b1 = 1.0 + 0.15 * (0.6 * x + 0.4 * y)
    fa, tr = np.array([3.0, 10.0, 20.0]), 0.015
    if model == "two-pool":
        s = qpm.spgr_two_pool_signal(pd, mwf, fa, tr, b1=b1)
        csf = ~(wm | gm)
        s[csf] = qpm.spgr_signal(pd[csf], t1[csf], fa, tr, b1=b1[csf])
    else:
        s = qpm.spgr_signal(pd, t1, fa, tr, b1=b1)
    if snr:
        sd = s[wm].mean() / snr
        s = np.abs(s + rng.normal(0, sd, s.shape) + 1j * rng.normal(0, sd, s.shape))
    return dict(signals=s, fa=fa, tr=tr, b1=b1, labels=labels, wm=wm, gm=gm, mwf=mwf, t1=t1, pd=pd,
                csf=~(wm | gm))


# --------------------------------------------------------------------------- DESPOT1
@pytest.mark.parametrize("angles", [[4.0, 18.0], [3.0, 10.0, 20.0], [2.0, 5.0, 10.0, 15.0, 25.0]])
@pytest.mark.parametrize("with_b1", [False, True])
def test_fit_vfa_noise_free_exact(angles, with_b1):
    rng = np.random.default_rng(3)
    shape = (12, 10, 6)
    t1 = rng.uniform(0.3, 4.5, shape)
    m0 = rng.uniform(200, 1500, shape)
    b1 = rng.uniform(0.8, 1.2, shape) if with_b1 else None
    s = qpm.spgr_signal(m0, t1, angles, TR, b1=b1)
    res = qpm.fit_vfa(s, angles, TR, b1=b1, mask=np.ones(shape, bool))
    np.testing.assert_allclose(res["t1"], t1, rtol=1e-6)
    np.testing.assert_allclose(res["m0"], m0, rtol=1e-6)
    # linear DESPOT1 alone is exact too for noise-free data
    lin = qpm.fit_vfa(s, angles, TR, b1=b1, mask=np.ones(shape, bool), nonlinear=False)
    np.testing.assert_allclose(lin["t1"], t1, rtol=1e-6)
    assert res.units["t1"] == "s"


def test_pd_normalised_to_csf_and_mtv():
    d = synthetic(model="ernst")
    res = qpm.fit_vfa(d["signals"], d["fa"], d["tr"], b1=d["b1"], mask=np.ones(d["wm"].shape, bool))
    # CSF (T1 = 4 s > 3 s) is the reference: PD_csf = 1 -> WM 0.7, GM 0.82, MTV = 1 - PD
    np.testing.assert_allclose(res["pd"][d["wm"]], 0.7, rtol=1e-6)
    np.testing.assert_allclose(res["pd"][d["gm"]], 0.82, rtol=1e-6)
    np.testing.assert_allclose(res["mtv"][d["wm"]], 0.3, rtol=1e-5)
    assert 10 <= res.parameters["n_reference_voxels"] <= int(d["csf"].sum())
    # an explicit CSF mask gives the same normalisation
    res2 = qpm.fit_vfa(d["signals"], d["fa"], d["tr"], b1=d["b1"], csf_mask=d["csf"], mask=np.ones(d["wm"].shape, bool))
    np.testing.assert_allclose(res2["pd"], res["pd"], rtol=1e-9)
    # without CSF in the field of view: warn, normalise to the 99.5th percentile of M0
    with pytest.warns(UserWarning, match="fewer than 10 voxels"):
        res3 = qpm.fit_vfa(d["signals"][d["wm"]][None], d["fa"], d["tr"], b1=d["b1"][d["wm"]][None])
    np.testing.assert_allclose(np.percentile(res3["pd"][res3["pd"] > 0], 99.5), 1.0, rtol=1e-9)


def test_vfa_snr200_with_and_without_b1():
    d = synthetic(snr=200, model="ernst", shape=(32, 32, 10))
    wm = d["wm"]
    with_b1 = qpm.fit_vfa(d["signals"], d["fa"], d["tr"], b1=d["b1"])
    err = np.abs(with_b1["t1"][wm] / d["t1"][wm] - 1)
    assert np.median(err) < 0.03
    without = qpm.fit_vfa(d["signals"], d["fa"], d["tr"])
    ratio = without["t1"][wm] / d["t1"][wm]
    # uncorrected B1 scales the apparent T1 by about b^2 (small-angle Ernst equation)
    np.testing.assert_allclose(np.median(ratio / d["b1"][wm] ** 2), 1.0, atol=0.03)
    assert np.median(np.abs(ratio - 1)) > 3 * np.median(err)


# --------------------------------------------------------------------------- myelin maps
@pytest.mark.parametrize("with_b1", [False, True])
def test_two_pool_myelin_noise_free_exact(with_b1):
    rng = np.random.default_rng(5)
    shape = (16, 12, 5)
    f = rng.uniform(0.0, 0.35, shape)
    m0 = rng.uniform(0.5, 1.0, shape)
    b1 = rng.uniform(0.8, 1.2, shape) if with_b1 else None
    s = qpm.spgr_two_pool_signal(m0, f, [3.0, 8.0, 14.0, 20.0], TR, b1=b1)
    res = qpm.myelin_map(s, [3.0, 8.0, 14.0, 20.0], TR, b1=b1, mask=np.ones(shape, bool))
    np.testing.assert_allclose(res["qpm_myelin"], f, atol=1e-6)


def test_two_pool_myelin_custom_pool_parameters():
    f = np.linspace(0.02, 0.3, 15)
    pars = dict(t1_m=0.4, t1_ie=1.1, tau_m=0.15)
    s = qpm.spgr_two_pool_signal(1.0, f, FA, TR, **pars)
    res = qpm.myelin_map(s[None], FA, TR, mask=np.ones((1, 15), bool), **pars)
    np.testing.assert_allclose(res["qpm_myelin"][0], f, atol=1e-6)
    assert res.parameters["t1_m_s"] == 0.4


def test_r1_pd_model_closed_form():
    rng = np.random.default_rng(2)
    n = 50
    f = rng.uniform(0.0, 0.3, n)  # myelin-water fraction of the tissue water
    # tissue only (PD below the tissue water content): R1 = f R1_m + (1 - f) R1_ie
    pd = rng.uniform(0.6, 0.7, n)
    r1 = f / qpm.T1_MYELIN + (1 - f) / qpm.T1_IE
    res = qpm.myelin_map(method="r1-pd", t1=1 / r1, pd=pd)
    np.testing.assert_allclose(res["qpm_myelin"], f, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(res["free_water"], 0.0)
    # tissue (water content 0.7) + free water (CSF, PD 1) in fast exchange
    v_fw = rng.uniform(0.0, 0.5, n)
    w_fw, w_t = v_fw, 0.7 * (1 - v_fw)
    pd = w_fw + w_t
    r1 = (w_t * (f / qpm.T1_MYELIN + (1 - f) / qpm.T1_IE) + w_fw / qpm.T1_FREE_WATER) / pd
    res = qpm.myelin_map(method="r1-pd", t1=1 / r1, pd=pd)
    np.testing.assert_allclose(res["free_water"], w_fw / pd, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(res["qpm_myelin"], f * w_t / pd, rtol=1e-9, atol=1e-12)
    custom = qpm.myelin_map(method="r1-pd", t1=1 / (0.2 / 0.4 + 0.8 / 1.2), pd=0.7, t1_m=0.4, t1_ie=1.2, pd_tissue=None)
    np.testing.assert_allclose(custom["qpm_myelin"], 0.2, rtol=1e-9)
    with pytest.raises(qpm.InputError, match="milliseconds"):
        qpm.myelin_map(method="r1-pd", t1=np.full(4, 800.0), pd=np.full(4, 0.7))


def test_two_pool_with_free_water_pool_noise_free():
    rng = np.random.default_rng(8)
    n = 60
    f = rng.uniform(0.0, 0.3, n)
    v_fw = rng.uniform(0.0, 0.6, n)
    w_t, w_fw = 0.7 * (1 - v_fw), v_fw
    pd = w_t + w_fw
    b1 = rng.uniform(0.85, 1.15, n)
    s = 1000 * (qpm.spgr_two_pool_signal(w_t, f, FA, TR, b1=b1) + qpm.spgr_signal(w_fw, qpm.T1_FREE_WATER, FA, TR, b1=b1))
    res = qpm.myelin_map(s[None], FA, TR, b1=b1[None], pd=pd[None], mask=np.ones((1, n), bool))
    np.testing.assert_allclose(res["free_water"][0], w_fw / pd, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(res["qpm_myelin"][0], f * w_t / pd, atol=1e-6)
    # pd_tissue=None: the plain two-pool model, as without PD
    plain = qpm.myelin_map(s[None], FA, TR, b1=b1[None], pd=pd[None], pd_tissue=None, mask=np.ones((1, n), bool))
    assert "free_water" not in plain
    np.testing.assert_array_equal(plain["qpm_myelin"],
                                  qpm.myelin_map(s[None], FA, TR, b1=b1[None], mask=np.ones((1, n), bool))["qpm_myelin"])
    assert np.all(plain["qpm_myelin"][0][v_fw > 0.1] < f[v_fw > 0.1])  # free water reads as missing myelin


def _spearman(a, b):
    from scipy.stats import spearmanr

    return spearmanr(a, b)[0]


@pytest.fixture(scope="module")
def noisy():
    d = synthetic(snr=200, shape=(32, 32, 10), seed=1)
    d["maps"] = qpm.qpm(d["signals"], d["fa"], d["tr"], b1=d["b1"])
    return d


def test_myelin_map_tracks_mwf_at_snr200(noisy):
    wm = noisy["wm"]
    rho = _spearman(noisy["maps"]["qpm_myelin"][wm], noisy["mwf"][wm])
    assert rho >= 0.8
    assert np.median(np.abs(noisy["maps"]["qpm_myelin"][wm] - noisy["mwf"][wm])) < 0.02
    r1pd = qpm.myelin_map(method="r1-pd", t1=noisy["maps"]["t1"], pd=noisy["maps"]["pd"])
    assert _spearman(r1pd["qpm_myelin"][wm], noisy["mwf"][wm]) >= 0.8


# --------------------------------------------------------------------------- calibration
def test_calibration_recovers_quadratic_and_round_trips(tmp_path):
    rng = np.random.default_rng(4)
    q = rng.uniform(0.0, 0.3, (10, 10, 10))
    coef = (1.5, 40.0, 120.0)
    mwf = (coef[0] + coef[1] * q + coef[2] * q**2) / 100.0  # fraction
    res = qpm.fit_mwf_calibration(mwf, q)
    cal = res.calibration
    np.testing.assert_allclose(cal.coefficients, coef, rtol=1e-8)
    assert cal.r2 == pytest.approx(1.0, abs=1e-12)
    assert cal.residual_sd < 1e-8
    np.testing.assert_allclose(res["mwf_qpm"], 100 * mwf, rtol=1e-9)
    path = cal.save(tmp_path / "cal.json")
    again = qpm.MwfCalibration.load(path)
    np.testing.assert_allclose(again.apply(q), 100 * mwf, rtol=1e-9)
    # applied through myelin_map
    mm = qpm.myelin_map(method="r1-pd", t1=np.full((2, 2, 2), 0.8), pd=np.full((2, 2, 2), 0.7), calibration=path)
    np.testing.assert_allclose(mm["mwf_qpm"], again.apply(mm["qpm_myelin"]), rtol=1e-12)
    # noisy points: R^2 and residual SD as defined
    noisy_mwf = 100 * mwf + rng.normal(0, 1.0, q.shape)
    res = qpm.fit_mwf_calibration(noisy_mwf, q, np.ones(q.shape, bool), mwf_units="percent")
    fit = res.calibration.apply(q)
    ss = ((noisy_mwf - fit) ** 2).sum()
    assert res.calibration.r2 == pytest.approx(1 - ss / ((noisy_mwf - noisy_mwf.mean()) ** 2).sum(), rel=1e-9)
    assert res.calibration.residual_sd == pytest.approx(np.sqrt(ss / (q.size - 3)), rel=1e-9)
    assert res.calibration.residual_sd == pytest.approx(1.0, abs=0.1)


def test_calibration_on_tract_means(noisy):
    wm, labels, mwf = noisy["wm"], noisy["labels"], noisy["mwf"]
    res = qpm.fit_mwf_calibration(mwf, noisy["maps"]["qpm_myelin"], wm, labels=labels)
    assert res.calibration.basis == "tract means" and res.calibration.n == 6
    vox = qpm.fit_mwf_calibration(mwf, noisy["maps"]["qpm_myelin"], wm)
    for r in (res, vox):
        for lab in range(1, 7):
            sel = labels == lab
            assert abs(r["mwf_qpm"][sel].mean() - 100 * mwf[sel].mean()) < 3.0


# --------------------------------------------------------------------------- bad input
def test_bad_inputs_are_one_sentence():
    s = qpm.spgr_signal(np.ones((4, 4, 4)), 1.0, FA, TR)
    with pytest.raises(qpm.InputError, match="has 3 volumes but 2 flip angles"):
        qpm.fit_vfa(s, [3.0, 10.0], TR)
    with pytest.raises(qpm.InputError, match="at least 2 different"):
        qpm.fit_vfa(s[..., :1], [3.0], TR)
    with pytest.raises(qpm.InputError, match="at least 2 different"):
        qpm.fit_vfa(s[..., :2], [10.0, 10.0], TR)
    with pytest.raises(qpm.InputError, match="repetition time is missing"):
        qpm.fit_vfa(s, FA, None)
    with pytest.raises(qpm.InputError, match="not ms"):
        qpm.fit_vfa(s, FA, 15.0)
    with pytest.raises(qpm.InputError, match="needs at least 3"):
        qpm.myelin_map(s[..., :2], [3.0, 20.0], TR)
    with pytest.raises(qpm.InputError, match="B1 map: shape"):
        qpm.fit_vfa(s, FA, TR, b1=np.ones((3, 3, 3)))
    with pytest.raises(qpm.InputError, match="differs from QPM grid"):
        qpm.fit_mwf_calibration(np.ones((3, 3, 3)), np.ones((4, 4, 4)))
    with pytest.raises(qpm.InputError, match="only 2 voxels"):
        qpm.fit_mwf_calibration(np.array([0.1, 0.2]), np.array([0.1, 0.2]))


def test_b1_on_another_grid_is_resampled_with_a_warning():
    from napari_myelin.io.volume import Volume

    spgr_aff = np.diag([2.0, 2.0, 2.0, 1.0])
    spgr_aff[:3, 3] = [-20, -20, -8]
    spgr = Volume(np.zeros((20, 20, 8, 3)), spgr_aff)
    b1_aff = np.diag([4.0, 4.0, 4.0, 1.0])
    b1_aff[:3, 3] = [-22, -22, -12]
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in (14, 14, 8)], indexing="ij"), -1)
    world = ijk @ b1_aff[:3, :3].T + b1_aff[:3, 3]
    field = lambda w: 1.0 + 0.004 * w[..., 0] - 0.003 * w[..., 1] + 0.002 * w[..., 2]  # noqa: E731
    b1 = Volume(field(world), b1_aff)
    with pytest.warns(UserWarning, match="resampled to the SPGR grid"):
        out = b1_on_grid(b1, spgr)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in (20, 20, 8)], indexing="ij"), -1)
    np.testing.assert_allclose(out, field(ijk @ spgr_aff[:3, :3].T + spgr_aff[:3, 3]), rtol=1e-9)
    far = Volume(np.ones((4, 4, 4)), np.diag([1.0, 1, 1, 1]) + np.array([[0, 0, 0, 1e4]] * 3 + [[0, 0, 0, 0]]))
    with pytest.raises(qpm.InputError, match="does not overlap"), pytest.warns(UserWarning):
        b1_on_grid(far, spgr)


# --------------------------------------------------------------------------- command line
def _cli(*argv):
    from napari_myelin.cli import main

    return main([str(a) for a in argv])


def test_cli_qpm_and_calibrate(tmp_path, write_nifti, capsys):
    import json

    import nibabel as nib

    d = synthetic(shape=(20, 20, 6), seed=2)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    spgr = write_nifti("sub_VFA.nii.gz", d["signals"].astype(np.float32), aff,
                       {"FlipAngle": d["fa"].tolist(), "RepetitionTime": d["tr"]})
    # B1 at half resolution (another grid): resampled with a warning
    b1_aff = np.diag([4.0, 4.0, 4.0, 1.0])
    b1_aff[:3, 3] = 1.0  # voxel centres of the fine grid's 2x2x2 blocks
    b1_coarse = d["b1"].reshape(10, 2, 10, 2, 3, 2).mean(axis=(1, 3, 5))
    b1 = write_nifti("sub_B1.nii.gz", b1_coarse.astype(np.float32), b1_aff)
    out = tmp_path / "qpm"
    with pytest.warns(UserWarning, match="resampled to the SPGR grid"):
        assert _cli("qpm", spgr, "--b1", b1, "--out", out) == 0
    for name in ("t1", "m0", "pd", "mtv", "qpm_myelin"):
        assert (out / f"{name}.nii.gz").exists() and (out / f"{name}.json").exists()
    assert json.loads((out / "t1.json").read_text())["Units"] == "s"
    qmap = nib.load(out / "qpm_myelin.nii.gz").get_fdata()
    wm = d["wm"]
    # B1 is linear in space, so the resampled map is exact inside: the myelin map is recovered
    inner = wm.copy()
    inner[[0, -1]] = inner[:, [0, -1]] = False
    np.testing.assert_allclose(qmap[inner], d["mwf"][inner], atol=2e-3)
    # calibrate against the true MWF over WM, then apply through 'qpm --calibration'
    mwf = write_nifti("mwf.nii.gz", d["mwf"].astype(np.float32), aff)
    wm_path = write_nifti("wm.nii.gz", np.where(wm, 0.8, 0.3).astype(np.float32), aff)  # a WM probability map
    np.testing.assert_array_equal(qpm.mask_from_map(np.where(wm, 0.8, 0.3)), wm)
    np.testing.assert_array_equal(qpm.mask_from_map(wm.astype(np.uint8) * 7), wm)
    cal_dir = tmp_path / "cal"
    assert _cli("calibrate", "--mwf", mwf, "--qpm", out / "qpm_myelin.nii.gz", "--mask", wm_path, "--out", cal_dir) == 0
    printed = capsys.readouterr().out
    assert "R^2" in printed
    cal = json.loads((cal_dir / "calibration.json").read_text())
    assert cal["r2"] > 0.99 and len(cal["coefficients"]) == 3
    mwf_qpm = nib.load(cal_dir / "mwf_qpm.nii.gz").get_fdata()
    assert np.abs(mwf_qpm[wm] - 100 * d["mwf"][wm]).mean() < 0.5
    out2 = tmp_path / "qpm2"
    with pytest.warns(UserWarning):
        assert _cli("qpm", spgr, "--b1", b1, "--out", out2, "--calibration", cal_dir / "calibration.json") == 0
    np.testing.assert_allclose(nib.load(out2 / "mwf_qpm.nii.gz").get_fdata()[wm], mwf_qpm[wm], atol=1e-3)
    assert _cli("calibrate", "--qpm", out / "qpm_myelin.nii.gz", "--apply", cal_dir / "calibration.json",
                "--out", tmp_path / "applied") == 0
    np.testing.assert_allclose(nib.load(tmp_path / "applied" / "mwf_qpm.nii.gz").get_fdata(), mwf_qpm, atol=1e-4)
    # r1-pd from T1 and PD maps
    assert _cli("qpm", "--t1", out / "t1.nii.gz", "--pd", out / "pd.nii.gz", "--method", "r1-pd",
                "--out", tmp_path / "r1pd") == 0
    t1 = nib.load(out / "t1.nii.gz").get_fdata()
    pd = nib.load(out / "pd.nii.gz").get_fdata()
    phi = np.clip((pd[wm] - 0.7) / 0.3, 0, pd[wm]) / pd[wm]
    f = ((1 / t1[wm] - phi / qpm.T1_FREE_WATER) / (1 - phi) - 1 / qpm.T1_IE) / (1 / qpm.T1_MYELIN - 1 / qpm.T1_IE)
    np.testing.assert_allclose(nib.load(tmp_path / "r1pd" / "qpm_myelin.nii.gz").get_fdata()[wm],
                               np.clip(f * (1 - phi), 0, 1), atol=1e-5)


def test_cli_bad_inputs(tmp_path, write_nifti, capsys):
    d = synthetic(shape=(8, 8, 4), model="ernst")
    s = d["signals"].astype(np.float32)
    spgr = write_nifti("vfa.nii.gz", s, None, {"FlipAngle": [3, 10, 20]})
    assert _cli("qpm", spgr, "--out", tmp_path / "o") == 2
    assert "repetition time is missing" in capsys.readouterr().err
    assert _cli("qpm", spgr, "--tr", "0.015", "--flip-angles", "3", "10", "--out", tmp_path / "o") == 2
    assert "has 3 volumes but 2 flip angles" in capsys.readouterr().err
    one = write_nifti("one.nii.gz", s[..., :1], None, {"FlipAngle": [3], "RepetitionTime": 0.015})
    assert _cli("qpm", one, "--out", tmp_path / "o") == 2
    assert "at least 2 different flip angles" in capsys.readouterr().err
    two = write_nifti("two.nii.gz", s[..., :2], None, {"FlipAngle": [3, 10], "RepetitionTime": 0.015})
    assert _cli("qpm", two, "--out", tmp_path / "o") == 2
    assert "needs at least 3" in capsys.readouterr().err
    assert _cli("qpm", two, "--method", "r1-pd", "--out", tmp_path / "o2") == 0  # 2 angles are enough for r1-pd
    assert (tmp_path / "o2" / "free_water.nii.gz").exists()
    assert _cli("qpm", two, "--method", "r1-pd", "--no-free-water", "--out", tmp_path / "o3") == 0
    assert (tmp_path / "o3" / "qpm_myelin.nii.gz").exists() and not (tmp_path / "o3" / "free_water.nii.gz").exists()
    far = write_nifti("b1far.nii.gz", np.ones((4, 4, 4), np.float32), np.diag([1.0, 1, 1, 1]) + np.eye(4, k=3) * 0
                      + np.array([[0, 0, 0, 1e4]] * 3 + [[0, 0, 0, 0]]))
    with pytest.warns(UserWarning):
        assert _cli("qpm", spgr, "--tr", "0.015", "--b1", far, "--out", tmp_path / "o") == 2
    assert "does not overlap" in capsys.readouterr().err
    assert not any((tmp_path / "o").glob("*.nii.gz"))  # nothing half written


# --------------------------------------------------------------------------- the shared digital phantom
@pytest.fixture(scope="module")
def phantom_fit():
    import warnings

    from napari_myelin.sims.phantom import make_phantom

    ph = make_phantom(seed=0, size="small", snr=200.0)
    spgr, truth = ph.acq["spgr"], ph.truth["spgr"]
    fa, tr = qpm.spgr_protocol(spgr.metadata, spgr.shape[3])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b1 = b1_on_grid(ph.acq["b1"], spgr)  # the B1 map comes on its own coarse grid
    mask = truth["mask"].data > 0
    return {
        "truth": truth, "mask": mask, "wm": (truth["wm"].data >= 0.5) & mask,
        "b1": qpm.qpm(spgr.data, fa, tr, b1=b1, mask=mask),
        "no_b1": qpm.fit_vfa(spgr.data, fa, tr, mask=mask),
        "true_b1": truth["b1"].data,
    }


def test_phantom_t1_with_and_without_b1(phantom_fit):
    wm, truth = phantom_fit["wm"], phantom_fit["truth"]
    t1 = truth["t1"].data[wm]
    err = phantom_fit["b1"]["t1"][wm] / t1 - 1
    assert np.median(np.abs(err)) < 0.03
    # without B1 correction: the bias follows T1_app = b^2 T1 (the phantom's B1 is 0.84-1.0)
    ratio = phantom_fit["no_b1"]["t1"][wm] / t1
    assert np.median(ratio) < 0.97
    np.testing.assert_allclose(np.median(ratio / phantom_fit["true_b1"][wm] ** 2), 1.0, atol=0.03)
    # PD normalised to CSF within 10 % in WM (CSF partial volume biases the reference slightly)
    pd = phantom_fit["b1"]["pd"][wm] / truth["pd"].data[wm]
    assert abs(np.median(pd) - 1) < 0.1


def test_phantom_myelin_map_and_calibration(phantom_fit):
    wm, truth = phantom_fit["wm"], phantom_fit["truth"]
    mwf, labels = truth["mwf"].data, truth["labels"].data
    maps = phantom_fit["b1"]
    assert _spearman(maps["qpm_myelin"][wm], mwf[wm]) >= 0.8
    r1pd = qpm.myelin_map(method="r1-pd", t1=maps["t1"], pd=maps["pd"], mask=phantom_fit["mask"])
    assert _spearman(r1pd["qpm_myelin"][wm], mwf[wm]) >= 0.8
    for q in (maps["qpm_myelin"], r1pd["qpm_myelin"]):
        cal = qpm.fit_mwf_calibration(mwf, q, wm)
        assert cal.calibration.r2 > 0.6
        tracts = [i for i in np.unique(labels[wm]) if i > 0 and (wm & (labels == i)).sum() >= 10]
        assert len(tracts) >= 20
        for i in tracts:
            sel = wm & (labels == i)
            assert abs(cal["mwf_qpm"][sel].mean() - 100 * mwf[sel].mean()) < 3.0
