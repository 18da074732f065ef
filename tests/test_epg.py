"""EPG decay curves: closed forms (pure CPMG, first two echoes with a stimulated echo) and DECAES semantics."""

import numpy as np

from napari_myelin.reconst.epg import epg_decay_curve


def test_180_deg_is_multi_exponential():
    te = 0.01
    t2 = np.array([0.01, 0.02, 0.08, 0.5, 2.0])
    dc = epg_decay_curve(32, te, t2[:, None], 1.0, 180.0)
    n = np.arange(1, 33)
    assert dc.shape == (5, 1, 32)
    np.testing.assert_allclose(dc[:, 0], np.exp(-n * te / t2[:, None]), rtol=1e-12, atol=1e-15)


def test_stimulated_echo_hand_checked():
    # Refocusing angle a (control angle 180): excitation a/2, all refocusing pulses a. By hand,
    # echo 1 = m0 s^2 E2^2 and echo 2 = m0 (s^4 E2^4 + sin(a)^2/2 E2^2 E1^2), with m0 = sin(a/2),
    # s = sin(a/2), E2 = exp(-TE/2/T2), E1 = exp(-TE/2/T1); the E1 term is the stimulated echo.
    te, t2, t1 = 0.01, 0.05, 1.0
    for a in (90.0, 120.0, 150.0):
        ar = np.deg2rad(a)
        m0 = s = np.sin(ar / 2)
        e2, e1 = np.exp(-te / 2 / t2), np.exp(-te / 2 / t1)
        expected = [m0 * s**2 * e2**2, m0 * (s**4 * e2**4 + np.sin(ar) ** 2 / 2 * e2**2 * e1**2)]
        dc = epg_decay_curve(8, te, t2, t1, a)
        np.testing.assert_allclose(dc[:2], expected, rtol=1e-12)
    # with a 90 deg refocusing train, the stimulated echo makes echo 2 larger than a pure T2 decay
    dc = epg_decay_curve(8, te, t2, t1, 90.0)
    assert dc[1] > dc[0] * np.exp(-te / t2)


def test_broadcasting_and_t1_default():
    t2 = np.array([0.02, 0.1])[:, None]
    alpha = np.array([120.0, 150.0, 180.0])[None, :]
    dc = epg_decay_curve(16, 0.01, t2, refocusing_angle_deg=alpha)
    assert dc.shape == (2, 3, 16)
    for i in range(2):
        for j in range(3):
            one = epg_decay_curve(16, 0.01, float(t2[i, 0]), 1.0, float(alpha[0, j]), 180.0)
            np.testing.assert_array_equal(dc[i, j], one)


def test_alpha_derivative_matches_finite_differences():
    from napari_myelin.reconst.epg import epg_decay_curve_and_derivative

    t2 = np.array([0.01, 0.05, 0.3])[:, None]
    alpha = np.array([95.0, 150.0, 170.0])[None, :]
    curve, deriv = epg_decay_curve_and_derivative(24, 0.01, t2, 1.0, alpha)
    np.testing.assert_allclose(curve, epg_decay_curve(24, 0.01, t2, 1.0, alpha), rtol=1e-13, atol=1e-16)
    h = 1e-5
    fd = (epg_decay_curve(24, 0.01, t2, 1.0, alpha + h) - epg_decay_curve(24, 0.01, t2, 1.0, alpha - h)) / (2 * h)
    np.testing.assert_allclose(deriv, fd, atol=1e-8)
