"""Diffusion kurtosis: parity with dipy 1.12.1, closed forms, protocol checks, CLI and phantom truth."""

from __future__ import annotations

import json
import re
import threading

import nibabel as nib
import numpy as np
import pytest

from napari_myelin.reconst import dki
from napari_myelin.reconst.dki import check_protocol, fit_dki
from napari_myelin.utils.errors import InputError
from napari_myelin.utils.progress import Cancelled

TOL_DTI = 1e-6  # FA absolute, MD/AD/RD relative
TOL_KURT = 1e-4  # MK/AK/RK/KFA/MKT absolute


def multishell_table(n_dirs: int = 30, shells=(1000.0, 2000.0), n_b0: int = 3):
    """b-values (s/mm^2) and unit b-vectors: ``n_b0`` b=0 plus ``n_dirs`` directions per shell."""
    from dipy.core.sphere import disperse_charges, HemiSphere

    rng = np.random.default_rng(1)
    theta, phi = np.arccos(rng.uniform(-1, 1, n_dirs)), rng.uniform(0, 2 * np.pi, n_dirs)
    hemi, _ = disperse_charges(HemiSphere(theta=theta, phi=phi), 500)
    dirs = hemi.vertices
    bvals = np.r_[np.zeros(n_b0), np.repeat(shells, n_dirs)]
    bvecs = np.r_[np.zeros((n_b0, 3)), np.tile(dirs, (len(shells), 1))]
    return bvals, bvecs


def simulated_dwi(shape=(5, 4, 3), snr=None, seed=0, bvals=None, bvecs=None):
    """A small multi-shell DWI simulated with dipy's ``multi_tensor_dki``.

    Voxels draw one or two tensor compartments (restricted-like and hindered-like, crossing at random
    angles) and, for a few, nearly isotropic free water (the eigenvalue-singularity branches).
    Returns ``(dwi, bvals, bvecs)``.
    """
    from dipy.core.gradients import gradient_table
    from dipy.sims.voxel import multi_tensor_dki

    if bvals is None:
        bvals, bvecs = multishell_table()
    gtab = gradient_table(bvals, bvecs=bvecs)
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    out = np.empty((n, bvals.size))
    for v in range(n):
        kind = v % 4
        if kind == 3:  # free water: all eigenvalues equal
            mevals = np.array([[3e-3, 3e-3, 3e-3], [3e-3, 3e-3, 3e-3]])
        else:
            ax, r1, r2 = rng.uniform(1.4e-3, 2.0e-3), rng.uniform(0.1e-3, 0.4e-3), rng.uniform(0.5e-3, 0.9e-3)
            mevals = np.array([[ax, r1, r1], [ax, r2, r2]])
        angles = [(rng.uniform(0, 180), rng.uniform(0, 360)), (rng.uniform(0, 180), rng.uniform(0, 360))]
        frac = [50.0, 50.0] if kind == 1 else [70.0, 30.0]
        s, _, _ = multi_tensor_dki(gtab, mevals, S0=1000.0, angles=angles, fractions=frac, snr=None)
        out[v] = s
    if snr is not None:
        sigma = 1000.0 / snr
        out = np.sqrt((out + rng.normal(0, sigma, out.shape)) ** 2 + rng.normal(0, sigma, out.shape) ** 2)
    return out.reshape(shape + (bvals.size,)), bvals, bvecs


def dipy_reference(data, bvals, bvecs, mask, method="WLS"):
    from dipy.core.gradients import gradient_table
    from dipy.reconst.dki import DiffusionKurtosisModel

    fit = DiffusionKurtosisModel(gradient_table(bvals, bvecs=bvecs), fit_method=method).fit(data, mask=mask)
    return {
        "fa": fit.fa, "md": fit.md, "ad": fit.ad, "rd": fit.rd, "mk": fit.mk(), "ak": fit.ak(), "rk": fit.rk(),
        "kfa": fit.kfa, "mkt": fit.mkt(), "evecs": fit.evecs,
    }


def assert_parity(maps, ref, mask):
    np.testing.assert_allclose(maps["fa"][mask], ref["fa"][mask], rtol=0, atol=TOL_DTI)
    for key in ("md", "ad", "rd"):
        np.testing.assert_allclose(maps[key][mask], ref[key][mask], rtol=TOL_DTI, atol=1e-12)
    for key in ("mk", "ak", "rk", "kfa", "mkt"):
        np.testing.assert_allclose(maps[key][mask], ref[key][mask], rtol=0, atol=TOL_KURT)


@pytest.fixture(scope="module")
def small_101d():
    """dipy's bundled ``small_101D`` (shipped inside dipy, no download), b <= 2100 volumes."""
    from dipy.data import get_fnames

    fdata, fbval, fbvec = get_fnames(name="small_101D")
    data = nib.load(fdata).get_fdata()
    bvals = np.loadtxt(fbval)
    bvecs = np.loadtxt(fbvec).T
    keep = bvals <= 2100
    return data[..., keep], bvals[keep], bvecs[keep]


@pytest.mark.parametrize("method", ["WLS", "OLS"])
def test_parity_with_dipy_on_small_101d(small_101d, method):
    data, bvals, bvecs = small_101d
    mask = np.ones(data.shape[:3], bool)
    maps = fit_dki(data, bvals, bvecs, mask=mask, method=method)
    ref = dipy_reference(data, bvals, bvecs, mask, method)
    assert mask.sum() == 600
    assert_parity(maps, ref, mask)
    # principal direction (up to sign) for the colour FA
    dots = np.abs((maps["v1"] * ref["evecs"][..., 0]).sum(-1))
    assert np.quantile(dots[mask], 0.05) > 1 - 1e-6
    np.testing.assert_allclose(maps["fa_rgb"], np.abs(maps["v1"]) * maps["fa"][..., None], atol=1e-12)


def test_parity_with_dipy_on_simulated_noisy_multishell():
    data, bvals, bvecs = simulated_dwi(shape=(6, 5, 4), snr=30, seed=3)
    mask = np.ones(data.shape[:3], bool)
    mask[0, 0, 0] = False
    maps = fit_dki(data, bvals, bvecs, mask=mask, method="WLS", chunk_size=37)
    ref = dipy_reference(data, bvals, bvecs, mask)
    assert_parity(maps, ref, mask)
    assert maps["fa"][0, 0, 0] == 0 and maps["mk"][0, 0, 0] == 0 and not maps["mask"][0, 0, 0]
    # isotropic voxels exercise the equal-eigenvalue branches of F1/F2/G1/G2
    assert maps["fa"][mask].min() < 0.1


def test_noiseless_single_fibre_recovers_truth_and_mk_is_the_spherical_mean():
    """Closed forms: one tensor compartment has K = 0 in every direction; a two-compartment voxel's MK
    equals the numerical spherical mean of its directional kurtosis (Tabesh 2011 definition)."""
    from dipy.core.gradients import gradient_table
    from dipy.sims.voxel import multi_tensor_dki

    bvals, bvecs = multishell_table()
    gtab = gradient_table(bvals, bvecs=bvecs)
    evals_one = np.array([[1.7e-3, 0.3e-3, 0.3e-3]] * 2)
    s1, dt1, kt1 = multi_tensor_dki(gtab, evals_one, S0=100, angles=[(30, 40)] * 2, fractions=[50, 50], snr=None)
    mevals = np.array([[1.8e-3, 0.2e-3, 0.2e-3], [1.2e-3, 0.8e-3, 0.8e-3]])
    s2, dt2, kt2 = multi_tensor_dki(gtab, mevals, S0=100, angles=[(20, 10), (20, 10)], fractions=[60, 40], snr=None)
    maps = fit_dki(np.stack([s1, s2]).reshape(2, 1, 1, -1), bvals, bvecs, mask=np.ones((2, 1, 1), bool))
    l1, l2, l3 = 1.7e-3, 0.3e-3, 0.3e-3
    fa_true = np.sqrt(0.5 * ((l1 - l2) ** 2 + (l2 - l3) ** 2 + (l3 - l1) ** 2) / (l1**2 + l2**2 + l3**2))
    np.testing.assert_allclose(maps["fa"][0, 0, 0], fa_true, atol=1e-9)
    np.testing.assert_allclose(maps["md"][0, 0, 0], (l1 + l2 + l3) / 3, rtol=1e-9)
    for key in ("mk", "ak", "rk", "mkt"):
        assert abs(maps[key][0, 0, 0]) < 1e-8
    # numerical spherical mean of K(n) = MD^2 / ADC(n)^2 * W(n) on a dense sphere
    rng = np.random.default_rng(0)
    n = rng.normal(size=(200000, 3))
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    dtm = np.zeros((3, 3))
    dtm[np.tril_indices(3)] = dt2
    dtm = dtm + np.tril(dtm, -1).T
    adc = np.einsum("ni,ij,nj->n", n, dtm, n)
    w = dki.full_kurtosis_tensor(kt2)
    wn = np.einsum("ijkl,ni,nj,nk,nl->n", w, n, n, n, n)
    md = np.trace(dtm) / 3
    mk_numeric = np.mean(md**2 / adc**2 * wn)
    np.testing.assert_allclose(maps["mk"][1, 0, 0], mk_numeric, rtol=5e-3)
    # AK: directional kurtosis along the principal eigenvector (20 deg, 10 deg)
    e1 = np.array([np.sin(np.radians(20)) * np.cos(np.radians(10)),
                   np.sin(np.radians(20)) * np.sin(np.radians(10)), np.cos(np.radians(20))])
    ak_true = md**2 / (e1 @ dtm @ e1) ** 2 * np.einsum("ijkl,i,j,k,l->", w, e1, e1, e1, e1)
    np.testing.assert_allclose(maps["ak"][1, 0, 0], ak_true, rtol=1e-6)


def test_carlson_integrals_match_scipy():
    from scipy.special import elliprd, elliprf

    rng = np.random.default_rng(0)
    x, y = rng.uniform(0.05, 20, 500), rng.uniform(0.05, 20, 500)
    z = np.ones(500)
    # dipy's tolerances (errtol 3e-4 / 1e-4) bound the relative error
    np.testing.assert_allclose(dki.carlson_rf(x, y, z), elliprf(x, y, z), rtol=3e-5)
    np.testing.assert_allclose(dki.carlson_rd(x, y, z), elliprd(x, y, z), rtol=1e-6)


def test_black_voxels_and_display_clipping():
    """A voxel whose signal curves upwards in ln S vs b has negative kurtosis: a black voxel."""
    bvals, bvecs = multishell_table()
    d, k = 1.0e-3, -0.8
    neg = 1000 * np.exp(-bvals * d + bvals**2 * d**2 * k / 6)
    pos = 1000 * np.exp(-bvals * d + bvals**2 * d**2 * 1.0 / 6)
    data = np.stack([neg, pos, pos, pos]).reshape(4, 1, 1, -1)
    mask = np.ones((4, 1, 1), bool)
    maps = fit_dki(data, bvals, bvecs, mask=mask)
    assert maps.parameters["black_voxel_fraction"] == pytest.approx(0.25)
    assert maps["mk"][0, 0, 0] == pytest.approx(-3 / 7)  # dipy's lower limit
    np.testing.assert_allclose(maps["mk"][1:, 0, 0], 1.0, atol=1e-8)
    shown = fit_dki(data, bvals, bvecs, mask=mask, min_kurtosis=0.0, max_kurtosis=0.5)
    assert shown["mk"][0, 0, 0] == 0.0 and shown["mk"][1, 0, 0] == 0.5


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda b, v: (b[:-1], v), "61 b-values but 62 gradient directions"),
        (lambda b, v: (b, v[:, :2]), "expected 3 rows"),
        (lambda b, v: (b * 1e6, v), "looks like s/m^2; divide the b-values by 1e6"),
        (lambda b, v: (b / 1000, v), "looks like ms/um^2; multiply the b-values by 1000"),
        (lambda b, v: (b, v * 1.5), "must be unit vectors (one has length 1.5)"),
        (lambda b, v: (np.where(b > 1500, 1000.0, b), v), "at least two non-zero b-value shells"),
    ],
)
def test_protocol_errors_are_one_clear_sentence(change, message):
    bvals, bvecs = multishell_table()
    bvals, bvecs = bvals[:62], bvecs[:62]
    b, v = change(bvals.copy(), bvecs.copy())
    with pytest.raises(InputError, match=re.escape(message)):
        check_protocol(b, v)


def test_fit_refuses_bad_inputs_with_messages():
    data, bvals, bvecs = simulated_dwi(shape=(2, 2, 2))
    with pytest.raises(InputError, match="lists 63 volumes but the DWI has 62"):
        fit_dki(data[..., :-1], bvals, bvecs)
    with pytest.raises(InputError, match="has 3 dimensions; DKI needs a 4D series"):
        fit_dki(data[..., 0], bvals, bvecs)
    with pytest.raises(InputError, match="differs from the DWI grid"):
        fit_dki(data, bvals, bvecs, mask=np.ones((3, 3, 3)))
    with pytest.raises(InputError, match="the mask is empty"):
        fit_dki(data, bvals, bvecs, mask=np.zeros((2, 2, 2)))
    with pytest.raises(InputError, match="'NLS' is not a DKI fit method"):
        fit_dki(data, bvals, bvecs, method="NLS")
    # bvecs given as FSL's 3 x N rows are accepted
    a = fit_dki(data, bvals, bvecs.T, mask=np.ones((2, 2, 2), bool))
    b = fit_dki(data, bvals, bvecs, mask=np.ones((2, 2, 2), bool))
    np.testing.assert_array_equal(a["mk"], b["mk"])


def test_progress_and_cancel():
    data, bvals, bvecs = simulated_dwi(shape=(4, 3, 2))
    seen = []
    fit_dki(data, bvals, bvecs, mask=np.ones((4, 3, 2), bool), chunk_size=5, progress=lambda f, m: seen.append(f))
    assert seen[0] == 0.0 and seen[-1] == 1.0 and np.all(np.diff(seen) >= 0) and len(seen) >= 6
    flag = threading.Event()
    flag.set()
    with pytest.raises(Cancelled):
        fit_dki(data, bvals, bvecs, mask=np.ones((4, 3, 2), bool), cancel=flag)


def test_automatic_mask_is_dipy_median_otsu_on_mean_b0():
    from dipy.segment.mask import median_otsu

    rng = np.random.default_rng(0)
    bvals, bvecs = multishell_table()
    zz, yy, xx = np.mgrid[:16, :16, :8]
    inside = ((zz - 8) ** 2 + (yy - 8) ** 2) / 36 + (xx - 4) ** 2 / 9 < 1
    signal = 1000 * np.exp(-bvals * 0.8e-3)
    data = inside[..., None] * signal + np.abs(rng.normal(0, 10, inside.shape + (bvals.size,)))
    maps = fit_dki(data, bvals, bvecs)
    _, expected = median_otsu(data[..., bvals == 0].mean(-1), median_radius=4, numpass=4)
    np.testing.assert_array_equal(maps["mask"], expected)
    assert maps.parameters["mask"].startswith("automatic")
    assert (maps["md"][inside & expected] > 0).all()


@pytest.mark.parametrize("denoise, degibbs, shape", [(True, False, (6, 6, 5)), (False, True, (6, 5, 1))])
def test_preprocessing_is_dipy_and_recorded(denoise, degibbs, shape):
    from dipy.denoise.gibbs import gibbs_removal
    from dipy.denoise.localpca import mppca

    data, bvals, bvecs = simulated_dwi(shape=shape, snr=20, seed=5)
    mask = np.ones(data.shape[:3], bool)
    maps = fit_dki(data, bvals, bvecs, mask=mask, denoise=denoise, degibbs=degibbs)
    pre = data.astype(float)
    if denoise:
        pre = mppca(pre, patch_radius=2, suppress_warning=True)
    if degibbs:
        pre = gibbs_removal(pre, slice_axis=2, inplace=False, num_processes=1)
    assert np.abs(pre - data).max() > 1.0  # the preprocessing changed the data
    assert_parity(maps, dipy_reference(pre, bvals, bvecs, mask), mask)
    assert maps.parameters["preprocessing"]["mppca_denoising"] is denoise
    assert maps.parameters["preprocessing"]["gibbs_unringing"] is degibbs


def test_cli_writes_maps_with_sidecars_and_errors(tmp_path, capsys):
    from napari_myelin.cli import main

    data, bvals, bvecs = simulated_dwi(shape=(5, 4, 3), snr=40, seed=2)
    aff = np.diag([2.0, 2.0, 2.5, 1.0])
    nib.save(nib.Nifti1Image(data.astype(np.float32), aff), str(tmp_path / "sub_dwi.nii.gz"))
    np.savetxt(tmp_path / "sub_dwi.bval", bvals[None], fmt="%g")
    np.savetxt(tmp_path / "sub_dwi.bvec", bvecs.T, fmt="%.8f")
    mask = np.ones(data.shape[:3], np.uint8)
    nib.save(nib.Nifti1Image(mask, aff), str(tmp_path / "mask.nii.gz"))
    out = tmp_path / "out"
    rc = main(["dki", str(tmp_path / "sub_dwi.nii.gz"), "--out", str(out), "--mask", str(tmp_path / "mask.nii.gz")])
    assert rc == 0
    for name in ("fa", "md", "ad", "rd", "mk", "ak", "rk", "kfa", "mkt", "mask", "fa_rgb"):
        assert (out / f"{name}.nii.gz").exists() and (out / f"{name}.json").exists()
    rgb = nib.load(str(out / "fa_rgb.nii.gz"))
    assert rgb.shape == data.shape[:3] + (3,)
    side = json.loads((out / "md.json").read_text())
    assert side["Units"] == "mm^2/s" and side["Parameters"]["method"] == "WLS"
    ref = dipy_reference(data.astype(np.float32).astype(float), bvals, bvecs, mask.astype(bool))
    np.testing.assert_allclose(nib.load(str(out / "mk.nii.gz")).get_fdata(), ref["mk"], atol=1e-4)
    np.testing.assert_allclose(nib.load(str(out / "fa.nii.gz")).get_fdata(), ref["fa"], atol=1e-6)
    # bad table: exit 2 with the sentence on stderr, nothing written
    np.savetxt(tmp_path / "bad.bval", (bvals * 1e6)[None], fmt="%g")
    rc = main(["dki", str(tmp_path / "sub_dwi.nii.gz"), "--bval", str(tmp_path / "bad.bval"),
               "--bvec", str(tmp_path / "sub_dwi.bvec"), "--out", str(tmp_path / "out2")])
    assert rc == 2
    assert "looks like s/m^2" in capsys.readouterr().err
    assert not list((tmp_path / "out2").glob("*.nii.gz"))


# ------------------------------------------------------------------------------------------------
# the project's digital phantom (sims/phantom/): dipy parity and truth


@pytest.fixture(scope="module")
def phantom50():
    from napari_myelin.sims.phantom import make_phantom

    return make_phantom(seed=0, size="small", snr=50.0)


def tract_means(maps, truth, mask, min_voxels=50):
    """(label, n, fitted FA, true FA, fitted MK, true MK) for tracts with >= ``min_voxels`` in ``mask``."""
    labels = np.asarray(truth["labels"].data)
    rows = []
    for lab in np.unique(labels[mask]):
        sel = (labels == lab) & mask
        if lab == 0 or sel.sum() < min_voxels:
            continue
        rows.append((int(lab), int(sel.sum()), maps["fa"][sel].mean(), np.asarray(truth["fa"].data)[sel].mean(),
                     maps["mk"][sel].mean(), np.asarray(truth["mk"].data)[sel].mean()))
    return rows


def test_phantom_tract_means_of_fa_and_mk_within_10_percent_at_snr50(phantom50):
    dwi = phantom50.acq["dwi"]
    truth = phantom50.truth["dwi"]
    mask = np.asarray(truth["mask"].data) > 0
    maps = fit_dki(dwi.data, dwi.bvals, dwi.bvecs, mask=mask, affine=dwi.affine)
    rows = tract_means(maps, truth, mask)
    assert len(rows) >= 20
    for lab, n, fa, fa_true, mk, mk_true in rows:
        assert abs(fa / fa_true - 1) < 0.10, (lab, n, fa, fa_true)
        assert abs(mk / mk_true - 1) < 0.10, (lab, n, mk, mk_true)
    # principal direction against the simulated fibre direction, and colour FA in world axes
    true_v1 = np.asarray(truth["dki_params"].data)[mask][:, [3, 6, 9]]
    agree = np.abs((maps["v1"][mask] * true_v1).sum(1) / np.linalg.norm(true_v1, axis=1))
    assert np.median(agree[maps["fa"][mask] > 0.4]) > 0.99
    bcc = int(phantom50.lut.loc[phantom50.lut["abbreviation"] == "BCC", "index"].iloc[0])
    body = (np.asarray(truth["labels"].data) == bcc) & mask  # corpus callosum body: left-right, red
    colour = maps["fa_rgb"][body].mean(0)
    assert colour[0] > 3 * max(colour[1], colour[2])


def test_parity_with_dipy_on_phantom_dwi(phantom50):
    dwi = phantom50.acq["dwi"]
    mask = np.asarray(phantom50.truth["dwi"]["mask"].data) > 0
    voxels = np.asarray(dwi.data)[mask][::15].astype(float)  # ~1400 brain voxels
    data = voxels[:, None, None, :]
    ones = np.ones(data.shape[:3], bool)
    maps = fit_dki(data, dwi.bvals, dwi.bvecs, mask=ones)
    assert_parity(maps, dipy_reference(data, dwi.bvals, dwi.bvecs, ones), ones)
