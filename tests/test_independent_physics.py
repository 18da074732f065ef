"""The independent simulator's physics against closed forms and a reference implementation (issue 16).

Each test pits one building block of ``napari_myelin.sims.independent`` against an analytic solution
(or, for the EPG, DECAES's semantics as implemented by ``reconst.epg``, which the simulator itself
must not import): pure exponentials at 180 deg, Bloch-McConnell matrix exponentials, the Ernst
equation, the powder average of a stick, the cumulants of Gaussian mixtures, the field of a sphere.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import expm
from scipy.special import erf

from napari_myelin.reconst.epg import epg_decay_curve
from napari_myelin.sims.independent import dwi, gre, mese, pulses, spgr
from napari_myelin.sims.independent.constants import CHI_MYELIN_ANISO, CHI_MYELIN_ISO, MYELIN_EXCHANGE_SHIFT
from napari_myelin.sims.independent.epg import Pools, cpmg_echoes, spgr_pulse_train, two_site_exchange
from napari_myelin.sims.independent.tissue import lognormal_nodes

ESP, N_ECHOES = 0.010, 32
T_ECHO = ESP * np.arange(1, N_ECHOES + 1)


def test_independent_epg_180_is_pure_exponential_and_tr_saturation_is_analytic():
    t2, t1, tr = np.array([0.02, 0.08, 1.5]), 1.1, 1.2
    pools = Pools(np.ones((3, 1)), np.full((3, 1), 1 / t1), 1 / t2[:, None])
    full = cpmg_echoes(pools, 90.0, 180.0, ESP, N_ECHOES)
    np.testing.assert_allclose(np.abs(full), np.exp(-T_ECHO / t2[:, None]), rtol=0, atol=1e-14)
    # finite TR: ideal 90/180 pulses never turn Z into echoes; Z at the end of the train follows
    # recovery over each half echo spacing and inversion by each 180, from Z = 0 after the 90.
    e_half, z = np.exp(-ESP / 2 / t1), 0.0
    for _ in range(N_ECHOES):
        z = -(1 - (1 - z) * e_half)
        z = 1 - (1 - z) * e_half
    m_ss = 1 - (1 - z) * np.exp(-(tr - N_ECHOES * ESP) / t1)
    steady = cpmg_echoes(pools, 90.0, 180.0, ESP, N_ECHOES, tr=tr)
    np.testing.assert_allclose(steady.real, m_ss * np.exp(-T_ECHO / t2[:, None]), rtol=1e-12, atol=1e-15)
    assert 0.5 < m_ss < 0.6  # TR 1.2 s at T1 1.1 s saturates noticeably


@pytest.mark.parametrize("alpha", [150.0, 120.0, 60.0])
def test_independent_epg_matches_reference_epg(alpha):
    """DECAES's train (90 x alpha/180 excitation, alpha refocusing, no recovery) from reconst.epg."""
    reference = epg_decay_curve(N_ECHOES, ESP, 0.05, 1e12, alpha, 180.0)
    pools = Pools(np.ones(1), np.array([1e-12]), np.array([20.0]))
    ours = cpmg_echoes(pools, 90.0 * alpha / 180.0, alpha, ESP, N_ECHOES)
    np.testing.assert_allclose(np.abs(ours), reference, rtol=0, atol=1e-13)


def test_independent_epg_exchange_matches_bloch_mcconnell():
    f, tau, r2 = 0.15, 0.1, np.array([1 / 0.015, 1 / 0.08])
    k = two_site_exchange(f, tau)
    pools = Pools(np.array([f, 1 - f]), np.array([1 / 0.4, 1 / 1.1]), r2, k)
    x = k - np.diag(k.sum(axis=0))
    analytic = np.array([expm((x - np.diag(r2)) * t) @ [f, 1 - f] for t in T_ECHO]).sum(axis=1)
    np.testing.assert_allclose(np.abs(cpmg_echoes(pools, 90.0, 180.0, ESP, N_ECHOES)), analytic, atol=1e-13)
    assert k[1, 0] * f == pytest.approx(k[0, 1] * (1 - f))  # detailed balance
    # without exchange the two sites decay separately
    free = Pools(np.array([f, 1 - f]), np.array([1 / 0.4, 1 / 1.1]), r2, np.zeros((2, 2)))
    separate = f * np.exp(-T_ECHO * r2[0]) + (1 - f) * np.exp(-T_ECHO * r2[1])
    np.testing.assert_allclose(np.abs(cpmg_echoes(free, 90.0, 180.0, ESP, N_ECHOES)), separate, atol=1e-13)


def test_independent_slice_profile_flat_equals_ideal_epg_and_pulses_are_exact_at_centre():
    pools = Pools(np.ones((2, 1, 1)), np.full((2, 1, 1), 1 / 1.0), np.array([[[1 / 0.02]], [[1 / 0.08]]]))
    flat_exc, flat_ref = np.full(8, 81.0), np.full(8, 150.0)
    weights = np.full(8, 1 / 8)
    integrated = mese.slice_integrated_echoes(pools, flat_exc, flat_ref, weights, tr=1.2)
    ideal = cpmg_echoes(Pools(np.ones((2, 1)), np.full((2, 1), 1.0), np.array([[50.0], [12.5]])), 81.0, 150.0,
                        ESP, N_ECHOES, tr=1.2).real
    np.testing.assert_allclose(integrated, ideal, rtol=1e-12)
    # the Bloch simulation is exact on resonance (all steps about x): the nominal angle times B1
    assert pulses.excitation_angle(90.0, 4.0, 0.9, 0.0) == pytest.approx(81.0, abs=1e-9)
    assert pulses.refocusing_angle(180.0, 3.0, 0.9, 0.0) == pytest.approx(162.0, abs=1e-9)
    # small tip: the profile is the Fourier transform of the envelope (Pauly et al. 1991)
    z, n = np.linspace(0.0, 1.5, 7), 256
    t = (np.arange(n) + 0.5) / n - 0.5
    ft = 10.0 * np.abs(pulses.hann_sinc(4.0, n) @ np.exp(-2j * np.pi * 4.0 * np.outer(t, z)))
    np.testing.assert_allclose(pulses.excitation_angle(10.0, 4.0, 1.0, z), ft, atol=0.01)


def test_independent_mese_table_interpolation_within_stated_accuracy():
    """WM voxels (log-normal myelin and IE pools) from the table against direct EPG: < 0.5 % of echo 1."""
    rng = np.random.default_rng(20160)
    worst = 0.0
    for _ in range(8):
        nm, wm = lognormal_nodes(rng.uniform(0.011, 0.017), rng.uniform(0.15, 0.3))
        ni, wi = lognormal_nodes(rng.uniform(0.064, 0.082), rng.uniform(0.08, 0.16))
        mwf, t1, b1 = rng.uniform(0.05, 0.2), rng.uniform(0.8, 1.0), rng.uniform(0.8, 1.2)
        t2, w = np.r_[nm, ni], np.r_[mwf * wm, (1 - mwf) * wi]
        pools = Pools(np.ones((10, 1, 1)), np.full((10, 1, 1), 1 / t1), 1 / t2[:, None, None])
        direct = w @ mese.slice_integrated_echoes(pools, *mese.slice_angles(np.array([b1]), 64))
        corr = mese.decay_table()(np.stack([np.log(t2), np.full(10, np.log(t1)), np.full(10, b1)], -1))
        table = w @ np.exp(-T_ECHO / t2[:, None] + corr)
        worst = max(worst, np.max(np.abs(table - direct)) / direct[0])
    assert worst < 0.005  # stated with mese.T2_GRID: 0.4 %


def test_independent_dwi_series_matches_sphere_quadrature():
    """Watson kappa = 0: powder average sqrt(pi/4beta) erf(sqrt(beta)); kappa = 5: direct integration of
    exp(kappa (mu.u)^2) exp(-b D(u; g)) over the sphere (Gauss-Legendre in cos x uniform azimuth)."""
    cos = np.linspace(-1.0, 1.0, 9)[None]
    beta = 2000 * 1e-3 * 2.2
    powder = dwi.dispersed_signal(2000.0, np.array([2.2]), np.array([0.0]), np.array([0.0]), cos)
    np.testing.assert_allclose(powder, np.sqrt(np.pi / (4 * beta)) * erf(np.sqrt(beta)), rtol=1e-12)
    t, w = np.polynomial.legendre.leggauss(300)
    phi = np.linspace(0.0, 2 * np.pi, 600, endpoint=False)
    u = np.stack([np.sqrt(1 - t ** 2)[:, None] * np.cos(phi), np.sqrt(1 - t ** 2)[:, None] * np.sin(phi),
                  np.repeat(t[:, None], phi.size, 1)], -1)  # mu = z
    weight = np.broadcast_to(w[:, None] * np.exp(5.0 * (t[:, None] ** 2 - 1)), u.shape[:2])
    for psi in (0.0, 0.7, 1.5):
        g = np.array([np.sin(psi), 0.0, np.cos(psi)])
        direct = (weight * np.exp(-3.0 * 0.4 - 3.0 * 2.0 * (u @ g) ** 2)).sum() / weight.sum()
        series = dwi.dispersed_signal(3000.0, np.array([2.4]), np.array([0.4]), np.array([5.0]), np.array([[np.cos(psi)]]))
        assert series[0, 0] == pytest.approx(direct, rel=1e-9)


def _mixture():
    """NAWM-like stick + zeppelin (kappa 8) and free water along z."""
    frac = np.array([[0.45, 0.40, 0.15]])
    d_par, d_perp = np.array([[2.2, 1.8, 3.0]]), np.array([[0.0, 0.8, 3.0]])
    kappa, mu = np.array([[8.0, 8.0, 0.0]]), np.tile([0.0, 0.0, 1.0], (1, 3, 1))
    return frac, d_par, d_perp, kappa, mu, np.array([0, 0, 1])


def test_independent_dwi_low_b_limit_is_the_cumulant_truth():
    """ln S(b) near b = 0 along and across the fibre: slope -D(n), curvature D(n)^2 K(n)/3 (Jensen 2010)."""
    frac, d_par, d_perp, kappa, mu, groups = _mixture()
    truth = dwi.cumulant_truth(frac, d_par, d_perp, kappa, mu, groups)
    b = np.linspace(0.0, 60.0, 13)
    for direction, d_true, k_true in (([0, 0, 1.0], truth["ad"], truth["ak"]), ([1.0, 0, 0], truth["rd"], truth["rk"])):
        sig = np.array([dwi.mixture_signal(frac, d_par, d_perp, kappa, mu, np.array([bb]), np.array([direction]),
                                           groups)[0, 0] for bb in b])
        c3, c2, c1, _ = np.polyfit(b, np.log(sig), 3)
        assert -c1 == pytest.approx(d_true[0] * 1e3 * 1e-3, rel=1e-5)  # mm^2/s
        assert 2 * c2 / c1 ** 2 * 3 == pytest.approx(k_true[0], rel=2e-3)
    # the analytic ADC of a Watson-dispersed zeppelin: D_perp + Delta <(u.n)^2>, <(u.z)^2> = c, a 1D integral
    t = np.linspace(0, 1, 200001)
    c_par = np.trapezoid(t ** 2 * np.exp(8.0 * t ** 2), t) / np.trapezoid(np.exp(8.0 * t ** 2), t)
    ad = 0.45 * 2.2 * c_par + 0.40 * (0.8 + 1.0 * c_par) + 0.15 * 3.0
    assert truth["ad"][0] == pytest.approx(ad * 1e-3, rel=1e-8)


def test_independent_dki_truth_of_gaussian_compartments():
    one = dwi.cumulant_truth(np.ones((1, 1)), np.full((1, 1), 1.5), np.full((1, 1), 1.5), np.zeros((1, 1)),
                             np.array([[[0.0, 0.0, 1.0]]]))
    assert one["mk"][0] == one["ak"][0] == one["rk"][0] == one["mkt"][0] == 0.0
    assert one["fa"][0] == pytest.approx(0.0, abs=1e-12) and one["md"][0] == pytest.approx(1.5e-3)
    # two isotropic compartments: K = 3 Var(D) / mean(D)^2 in every direction
    f, d = np.array([0.7, 0.3]), np.array([0.8, 3.0])
    two = dwi.cumulant_truth(f[None], d[None], d[None], np.zeros((1, 2)), np.tile([0.0, 0.0, 1.0], (1, 2, 1)))
    mean = f @ d
    k = 3 * (f @ d ** 2 - mean ** 2) / mean ** 2
    for name in ("mk", "ak", "rk", "mkt"):
        assert two[name][0] == pytest.approx(k, rel=1e-12)


def test_independent_bloch_mcconnell_spgr_without_exchange_is_two_ernst_equations():
    f, r1, tr = 0.15, np.array([1 / 0.35, 1 / 1.2]), 0.016
    angles = np.array([3.0, 8.0, 13.0, 18.0])
    e1 = np.exp(-tr * r1)
    ernst = np.array([f, 1 - f]) * (1 - e1) / (1 - np.cos(np.deg2rad(angles))[:, None] * e1)
    np.testing.assert_allclose(spgr.steady_state(np.array([f, 1 - f]), r1, None, angles, tr), ernst, rtol=1e-13)
    # with exchange, time-stepping the pulse train with perfect spoiling reaches the closed form
    k = two_site_exchange(f, 0.25)
    closed = spgr.steady_state(np.array([f, 1 - f]), r1, k, angles, tr)
    train = spgr_pulse_train(Pools(np.array([f, 1 - f]), r1, np.array([1 / 0.015, 1 / 0.07]), k), angles, tr, 1500,
                             ideal=True, n_states=2)
    np.testing.assert_allclose(train, np.sin(np.deg2rad(angles))[:, None] * closed, atol=1e-11)


def test_independent_dipole_field_of_a_sphere():
    """chi = 1 ppm sphere: 0 inside, chi/3 (a/r)^3 (3 cos^2 - 1) outside (Lorentz sphere)."""
    n, a = 96, 8.0
    x = np.arange(n) - n / 2
    xx, yy, zz = np.meshgrid(x, x, x, indexing="ij")
    r = np.sqrt(xx ** 2 + yy ** 2 + zz ** 2)
    chi = np.clip(a + 0.5 - r, 0.0, 1.0)  # one voxel of partial volume at the surface
    field = gre.dipole_field(chi, (1.0, 1.0, 1.0), (0.0, 0.0, 1.0))
    outside = (r > 1.6 * a) & (r < 3.5 * a)
    cos2 = np.divide(zz ** 2, r ** 2, out=np.zeros_like(r), where=r > 0)
    analytic = (1 / 3) * (a / np.maximum(r, 1e-9)) ** 3 * (3 * cos2 - 1)
    assert np.max(np.abs(field - analytic)[outside]) < 0.01 * (2 / 3)  # 1 % of the peak surface field
    assert np.max(np.abs(field[r < a - 2])) < 0.01


def test_independent_hollow_cylinder_offsets():
    """Wharton & Bowtell 2012: axons shift by (3/4) chi_A sin^2 ln(1/g), myelin by its eq. [2] averaged."""
    g = 0.8
    axon, myelin = gre.hcfm_offsets(np.array([1.0, 0.0]), g)
    assert axon[0] == 0.0 and axon[1] == pytest.approx(0.75 * CHI_MYELIN_ANISO * np.log(1 / g))
    assert axon[1] == pytest.approx(-0.016736, abs=1e-6)
    assert myelin[0] == pytest.approx(CHI_MYELIN_ISO / 3 - CHI_MYELIN_ANISO / 6 + MYELIN_EXCHANGE_SHIFT)
    # <ln(r_o/r)> over the annulus r_i = g r_o .. r_o, by quadrature
    r = np.linspace(g, 1.0, 200001)
    mean_log = np.trapezoid(np.log(1 / r) * r, r) / np.trapezoid(r, r)
    expected = -CHI_MYELIN_ISO / 6 + CHI_MYELIN_ANISO * (-5 / 12 + 0.75 * mean_log) + MYELIN_EXCHANGE_SHIFT
    assert myelin[1] == pytest.approx(expected, rel=1e-8)
