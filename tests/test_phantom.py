"""Digital phantom: simulators against independent formulas, the truth, the files, the sample data."""

import json

import numpy as np
import pytest

from napari_myelin.sims import phantom as P
from napari_myelin.reconst.dipole import b0_direction, sphere_field
from napari_myelin.io.volume import load_volume


@pytest.fixture(scope="module")
def clean():
    """Noise-free small phantom with lesions."""
    return P.make_phantom(seed=3, size="small", snr=np.inf, lesions=True)


# ------------------------------------------------------------------ simulators vs closed forms
def test_epg_at_180_deg_is_multi_exponential():
    rng = np.random.default_rng(0)
    n = 50
    f = rng.dirichlet([1, 4, 1], n)
    t2 = np.stack([np.full(n, 0.02), rng.uniform(0.06, 0.1, n), np.full(n, 2.0)], 1)
    t1 = np.stack([np.full(n, 0.5), np.full(n, 1.1), np.full(n, 4.0)], 1)
    sig = P.simulate_mese(f, t2, t1, np.full(n, 180.0), n_echoes=32, echo_spacing=0.01)
    te = 0.01 * np.arange(1, 33)
    expected = (f[:, :, None] * np.exp(-te[None, None, :] / t2[:, :, None])).sum(axis=1)
    np.testing.assert_allclose(sig, expected, rtol=1e-10, atol=1e-12)


def test_epg_below_180_has_stimulated_echoes_and_matches_direct_epg():
    from napari_myelin.reconst.epg import epg_decay_curve

    alpha = np.array([150.0, 163.37, 171.1])
    f = np.tile([0.15, 0.85, 0.0], (3, 1))
    t2 = np.tile([0.02, 0.08, 2.0], (3, 1))
    t1 = np.tile([0.5, 1.0, 4.0], (3, 1))
    sig = P.simulate_mese(f, t2, t1, alpha)
    direct = 0.15 * epg_decay_curve(32, 0.01, 0.02, 0.5, alpha) + 0.85 * epg_decay_curve(
        32, 0.01, 0.08, 1.0, alpha)
    np.testing.assert_allclose(sig, direct, rtol=2e-4)
    te = 0.01 * np.arange(1, 3)
    mono = 0.15 * np.exp(-te / 0.02) + 0.85 * np.exp(-te / 0.08)
    assert sig[0, 1] / sig[0, 0] > 1.05 * mono[1] / mono[0]  # even echo boosted by the stimulated echo
    assert sig[0, 0] < 0.98 * mono[0]


def test_spgr_single_pool_limit_is_the_ernst_equation():
    fa = np.array([3.0, 10.0, 20.0])
    t1, tr, b1 = np.array([0.8, 1.2, 4.0]), 0.015, np.array([0.9, 1.0, 1.1])
    sig = P.simulate_spgr(np.array([1.0, 2.0, 0.0]), 0.0, t1, np.array([0.0, 0.0, 1.5]), fa, tr, b1, t1_csf=4.0)
    m0 = np.array([1.0, 2.0, 1.5])
    a = np.deg2rad(fa)[None] * b1[:, None]
    e1 = np.exp(-tr / t1)[:, None]
    ernst = m0[:, None] * np.sin(a) * (1 - e1) / (1 - e1 * np.cos(a))
    np.testing.assert_allclose(sig, ernst, rtol=1e-10)


def test_sphere_field_on_an_oblique_grid_equals_the_analytic_dipole_field():
    aff, shape = P.acquisition_grid((2.0, 2.0, 2.5), (96, 96, 90), rotation_deg=(15.0, 0, 10.0))
    faff, fshape = P.fine_grid(aff, shape, 2)
    fine_world = P._world_coords(faff, fshape).T.reshape(fshape + (3,))
    centre = aff[:3, :3] @ ((np.array(shape) - 1) / 2) + aff[:3, 3]
    radius, chi = 9.0, 0.4
    chi_fine = (np.linalg.norm(fine_world - centre, axis=-1) <= radius).astype(np.float32) * chi
    field = P.simulate_field(chi_fine, faff, 2)
    world = P._world_coords(aff, shape).T.reshape(shape + (3,)) - centre
    expected = sphere_field(world, radius, chi, (0.0, 0.0, 1.0))  # B0 = world z
    r = np.linalg.norm(world, axis=-1)
    shell = (r > radius + 4) & (r < radius + 14)
    err = np.abs(field - expected)[shell]
    assert np.abs(expected[shell]).max() > 0.02
    assert err.max() < 0.1 * np.abs(expected[shell]).max()
    assert np.corrcoef(field[shell], expected[shell])[0, 1] > 0.995
    assert np.abs(b0_direction(aff) - [0, 0, 1]).max() > 0.1  # the kernel really was tilted


def test_mixture_kurtosis_equals_dipy_multi_tensor():
    from dipy.core.gradients import gradient_table
    from dipy.sims.voxel import multi_tensor_dki

    bvals, bvecs = P.gradient_scheme()
    gtab = gradient_table(bvals, bvecs=bvecs)
    mevals = np.array([[1.9e-3, 0.2e-3, 0.2e-3], [1.2e-3, 0.6e-3, 0.6e-3], [3e-3, 3e-3, 3e-3]])
    angles = [(60.0, 30.0), (60.0, 30.0), (0.0, 0.0)]
    _, dt_ref, kt_ref = multi_tensor_dki(gtab, mevals, S0=1.0, angles=angles, fractions=(40, 40, 20), snr=None)
    th, ph = np.deg2rad(60.0), np.deg2rad(30.0)
    e = np.array([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)])
    tens = [mevals[0, 1] * np.eye(3) + (mevals[0, 0] - mevals[0, 1]) * np.outer(e, e),
            mevals[1, 1] * np.eye(3) + (mevals[1, 0] - mevals[1, 1]) * np.outer(e, e), 3e-3 * np.eye(3)]
    dt, kt = P.mixture_dki(np.array([[0.4, 0.4, 0.2]]), np.array(tens)[None])
    np.testing.assert_allclose(kt[0], kt_ref, rtol=1e-6, atol=1e-9)
    lower = dt[0][[0, 1, 1, 2, 2, 2], [0, 0, 1, 0, 1, 2]]  # dipy's lower-triangular order
    np.testing.assert_allclose(lower, dt_ref, rtol=1e-9, atol=1e-15)


# ------------------------------------------------------------------ the phantom
def test_contract_grids_and_units(clean):
    acq, truth = clean.acq, clean.truth
    assert {"mese", "dwi", "gre_mag", "gre_phase", "spgr", "b1"} <= set(acq)
    assert acq["mese"].data.ndim == 4 and len(acq["mese"].metadata["EchoTime"]) == acq["mese"].shape[3] == 32
    assert acq["dwi"].bvals.size == acq["dwi"].shape[3] and acq["dwi"].bvecs.shape == (acq["dwi"].bvals.size, 3)
    for b in (1000, 2000):
        assert (acq["dwi"].bvals == b).sum() >= 30
    assert len(acq["gre_phase"].metadata["EchoTime"]) == acq["gre_phase"].shape[3] >= 4
    assert acq["gre_phase"].metadata["MagneticFieldStrength"] == 3.0
    assert np.abs(acq["gre_phase"].data).max() <= np.pi + 1e-6
    assert acq["spgr"].metadata["FlipAngle"] == [3.0, 10.0, 20.0]
    for key, names in {"mese": {"mwf", "labels", "wm", "mask"}, "dwi": {"fa", "md", "mk", "ak", "rk", "labels", "mask"},
                       "gre": {"chi", "local_field", "mask", "labels"}, "spgr": {"t1", "pd", "mwf", "labels", "wm", "mask"}}.items():
        assert names <= set(truth[key])
    grid = {k: (acq[k].shape[:3], tuple(np.round(acq[k].affine.ravel(), 3))) for k in ("mese", "dwi", "gre_mag", "spgr", "b1")}
    assert len(set(grid.values())) == 5  # every acquisition on its own grid
    assert truth["mese"]["mwf"].shape == acq["mese"].shape[:3]
    assert truth["gre"]["chi"].metadata["Units"] == "ppm"
    assert set(clean.lut.columns) >= {"index", "name", "abbreviation", "hemisphere"}


def test_truth_values_are_realistic(clean):
    t = clean.truth["mese"]
    healthy = t["mask"].data & ~t["lesion"].data & ~t["nawm_demyelination"].data
    wm = healthy & (t["wm"].data > 0.95)
    assert 0.08 < t["mwf"].data[wm].mean() < 0.18
    mwf_by_tract = {}
    lut = clean.lut.set_index("index")
    for idx in np.unique(t["labels"].data[wm]):
        if idx and (t["labels"].data[wm] == idx).sum() >= 5:
            mwf_by_tract[lut.loc[idx, "abbreviation"]] = t["mwf"].data[wm][t["labels"].data[wm] == idx].mean()
    assert min(mwf_by_tract.values()) > 0.04 and max(mwf_by_tract.values()) < 0.22
    assert len(mwf_by_tract) >= 10
    lesion = t["lesion"].data
    assert lesion.sum() > 0 and t["mwf"].data[lesion].mean() < 0.5 * t["mwf"].data[wm].mean()
    d = clean.truth["dwi"]
    dwm = d["mask"].data & (d["wm"].data > 0.95) & ~d["lesion"].data
    assert 0.5 < d["fa"].data[dwm].mean() < 0.85
    assert 0.5e-3 < d["md"].data[dwm].mean() < 1.0e-3
    g = clean.truth["gre"]
    gwm = g["mask"].data & (g["wm"].data > 0.95) & ~g["lesion"].data
    assert -0.04 < g["chi"].data[gwm].mean() < -0.015 and g["chi"].data.max() > 0.08
    s = clean.truth["spgr"]
    swm = s["mask"].data & (s["wm"].data > 0.95) & ~s["lesion"].data
    assert 0.7 < s["t1"].data[swm].mean() < 1.1
    b1 = clean.truth["mese"]["refocusing_angle"].data[t["mask"].data]
    assert b1.min() >= 150 - 1e-3 and b1.max() <= 180 + 1e-3


def test_dwi_voxels_equal_dipys_dki_signal(clean):
    from dipy.core.gradients import gradient_table
    from dipy.reconst.dki import axial_kurtosis, dki_prediction, mean_kurtosis, radial_kurtosis

    dwi, truth = clean.acq["dwi"], clean.truth["dwi"]
    params = truth["dki_params"].data.astype(np.float64)
    idx = np.argwhere(truth["mask"].data)[:: 997][:12]
    gtab = gradient_table(dwi.bvals, bvecs=dwi.bvecs)
    for i, j, k in idx:
        sig = dwi.data[i, j, k].astype(np.float64)
        s0 = sig[dwi.bvals == 0].mean()
        ref = dki_prediction(params[i, j, k], gtab, S0=s0)
        np.testing.assert_allclose(sig, ref, rtol=2e-4)
        for name, fn in (("mk", mean_kurtosis), ("ak", axial_kurtosis), ("rk", radial_kurtosis)):
            assert abs(truth[name].data[i, j, k] - fn(params[i, j, k][None])[0]) < 5e-3


def test_gre_phase_follows_the_total_field(clean):
    ph = clean.acq["gre_phase"]
    te = np.asarray(ph.metadata["EchoTime"])
    total = clean.truth["gre"]["total_field"].data
    mask = clean.truth["gre"]["mask"].data
    hz_per_ppm = 42.577478518 * 3.0
    dphi = np.angle(np.exp(1j * (ph.data[..., 1] - ph.data[..., 0])))
    expected = np.angle(np.exp(1j * 2 * np.pi * hz_per_ppm * total * (te[1] - te[0])))
    assert np.abs(np.angle(np.exp(1j * (dphi - expected))))[mask].max() < 1e-3
    assert np.abs(clean.truth["gre"]["background_field"].data[mask]).max() > 0.2  # background present
    assert (np.abs(ph.data[..., -1][mask]) > 3).any()  # wrapped


def test_deterministic_per_seed_and_noise_at_snr():
    a = P.make_phantom(seed=5, size="small", snr=50.0)
    b = P.make_phantom(seed=5, size="small", snr=50.0)
    for key in a.acq:
        np.testing.assert_array_equal(a.acq[key].data, b.acq[key].data)
    mask = a.truth["spgr"]["mask"].data
    sig = a.acq["spgr"].data.max(axis=-1)  # SNR is defined on the brightest flip angle
    corner = a.acq["spgr"].data[:4, :4, :4, :]  # air: Rician noise only
    sigma = np.sqrt((corner.astype(np.float64) ** 2).mean() / 2)
    assert abs(sig[mask].mean() / sigma - 50.0) < 10.0


def test_cli_writes_bids_like_subject(tmp_path):
    from napari_myelin.cli import main

    out = tmp_path / "ds"
    assert main(["phantom", str(out), "--size", "small", "--seed", "2", "--snr", "100"]) == 0
    mese = load_volume(out / "sub-02" / "anat" / "sub-02_MESE.nii.gz")
    assert len(mese.metadata["EchoTime"]) == mese.shape[3]
    dwi = load_volume(out / "sub-02" / "dwi" / "sub-02_dwi.nii.gz")
    assert dwi.bvals.size == dwi.shape[3]
    for f in ("anat/sub-02_part-phase_MEGRE", "anat/sub-02_part-mag_MEGRE", "anat/sub-02_VFA", "fmap/sub-02_TB1map"):
        assert (out / "sub-02" / f"{f}.nii.gz").exists() and (out / "sub-02" / f"{f}.json").exists()
    mwf = load_volume(out / "derivatives" / "truth" / "sub-02" / "mese" / "mwf.nii.gz")
    assert mwf.metadata["Units"] == "fraction" and mwf.shape == mese.shape[:3]
    np.testing.assert_allclose(mwf.affine, mese.affine, atol=1e-5)
    assert (out / "derivatives" / "truth" / "sub-02" / "mese" / "labels.tsv").exists()
    assert json.loads((out / "dataset_description.json").read_text())["BIDSVersion"]
    with pytest.raises(SystemExit):  # argparse refuses an unknown size
        main(["phantom", str(out), "--size", "huge"])


def test_bad_parameters_are_input_errors():
    from napari_myelin.utils.errors import InputError

    with pytest.raises(InputError):
        P.make_phantom(size="huge")
    with pytest.raises(InputError):
        P.make_phantom(snr=-1)


def test_sample_data_opens_in_napari_with_voxel_scales(make_napari_viewer):
    from napari_myelin._layers import display_geometry
    from napari_myelin._sample_data import _phantom

    viewer = make_napari_viewer()
    viewer.open_sample("napari-myelin", "myelin_phantom_small")
    ph = _phantom("small")
    names = [layer.name for layer in viewer.layers]
    assert "truth MWF (%)" in names and "phantom MESE" in names and "truth tracts" in names
    mese = viewer.layers["phantom MESE"]
    np.testing.assert_allclose(mese.scale[-3:], display_geometry(ph.acq["mese"].affine, ph.acq["mese"].shape)[0])
    np.testing.assert_allclose(sorted(mese.scale[-3:]), sorted(ph.acq["mese"].zooms))
    dwi = viewer.layers["phantom DWI"]
    np.testing.assert_allclose(sorted(dwi.scale[-3:]), sorted(ph.acq["dwi"].zooms))
    mwf = viewer.layers["truth MWF (%)"]
    np.testing.assert_allclose(mwf.scale, mese.scale[-3:])
    assert mwf.metadata["units"] == "%"
    np.testing.assert_allclose(np.nanmax(mwf.data), 100 * ph.truth["mese"]["mwf"].data.max(), rtol=1e-5)
    assert viewer.layers["truth tracts"].data.max() == ph.truth["mese"]["labels"].data.max()
