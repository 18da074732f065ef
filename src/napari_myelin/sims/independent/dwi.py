r"""Multi-shell diffusion: dispersed sticks and zeppelins, hindered and free water; truth by cumulants.

Compartments
------------
Each tissue class of a voxel (:mod:`.tissue`) contributes, with its signal weight
``f pd (1 - mwf) <exp(-TE/T2_IE)> (1 - exp(-TR/T1))`` (myelin water, T2 ~ 14 ms, is invisible at
TE = 80 ms: ``exp(-80/14) < 0.5 %``):

* WM (NAWM, lesion): an intra-axonal **stick** (``D_par = D_a``, ``D_perp = 0``, fraction ``f_ax``)
  and an extra-axonal **zeppelin** (``D_par = D_e``, ``D_perp = D_e (1 - f_ax)``, tortuosity, Szafer et
  al. 1995), both Watson-dispersed about the tract direction with concentration ``kappa``,
  ``ODI = (2/pi) arctan(1/kappa)`` (Zhang et al. 2012). Lesions lose axons and coherence and gain
  diffusivity with their severity ``s``: ``f_ax (1 - s/2)``, ``kappa (1 - s/2)``, ``D_e (1 + s/4)``
  (lower FA, higher MD in lesions, Werring et al. 1999; the factors are an assumption).
* GM: neurite stick and extra-neurite zeppelin with the cortical parameters, dispersed about the
  normal to the brain surface.
* CSF: free water, isotropic ``D = 3.0 um^2/ms`` (Holz et al. 2000).

Signal of a dispersed zeppelin (Funk-Hecke, as in NODDI's series solution): with
``beta = b (D_par - D_perp)`` and the Legendre coefficients of the kernel and of the Watson density,

.. math::

    S(b, \mathbf g) = e^{-b D_\perp} \sum_{l\ \mathrm{even}} h_l(\beta)\, c_l(\kappa)\,
        P_l(\boldsymbol\mu\cdot\mathbf g), \quad
    h_l = (2l+1)\int_0^1 e^{-\beta t^2} P_l(t)\,dt, \quad
    c_l = \frac{\int_0^1 e^{\kappa t^2} P_l(t)\,dt}{\int_0^1 e^{\kappa t^2}\,dt}

(64-node Gauss-Legendre integrals, ``l <= 30``). ``kappa = 0`` gives the powder average
``exp(-b D_perp) sqrt(pi/(4 beta)) erf(sqrt(beta))``; ``kappa -> inf`` the undispersed
``exp(-b D_perp - beta (mu.g)^2)``.

Truth DKI (cumulant expansion of the mixture)
---------------------------------------------
Every orientation ``u`` of every compartment ``c`` is a Gaussian component with
``D_c(u; n) = D_perp + Delta (u.n)^2``. For the whole mixture (weights ``f_c``, Watson averages
``< >``) the cumulant expansion ``ln S = -b D(n) + b^2 D(n)^2 K(n) / 6 + O(b^3)`` has (Jensen &
Helpern 2010)::

    D(n)   = sum_c f_c (D_perp + Delta E2_c(n))
    V(n)   = sum_c f_c (D_perp^2 + 2 D_perp Delta E2_c + Delta^2 E4_c) - D(n)^2     (variance of D)
    K(n)   = 3 V(n) / D(n)^2,       W(n) = 3 V(n) / MD^2
    E2_c   = <(u.n)^2> = 1/3 + (2/3) c_2 P_2(mu.n)
    E4_c   = <(u.n)^4> = 1/5 + (4/7) c_2 P_2(mu.n) + (8/35) c_4 P_4(mu.n)

(``t^2 = (P_0 + 2 P_2)/3``, ``t^4 = P_0/5 + 4 P_2/7 + 8 P_4/35`` and the addition theorem), and the
diffusion tensor ``D = sum_c f_c [D_perp I + Delta ((1 - c_2)/3 I + c_2 mu mu^T)]``. Truth maps: FA,
MD, AD = ``lambda_1``, RD = ``(lambda_2 + lambda_3)/2``; AK = ``K(e_1)``; RK = mean of ``K`` over 36
directions perpendicular to ``e_1``; MK = mean of ``K(n)`` over the sphere and MKT = mean of
``W(n)`` (:data:`SPHERE_POINTS` Fibonacci directions on the hemisphere). These are the limits ``b -> 0``: a DKI fit of the signal up to
b = 3000 s/mm^2 differs from them by the **truncation bias** of the expansion (higher cumulants).

References
----------
Zhang H et al. NeuroImage 61:1000-1016 (2012).  Jensen JH, Helpern JA. NMR Biomed 23:698-710 (2010).
Szafer A et al. Magn Reson Med 33:697-712 (1995).  Holz M et al. Phys Chem Chem Phys 2:4740 (2000).
Werring DJ et al. Diffusion tensor imaging of lesions and normal-appearing white matter in multiple
sclerosis. Neurology 52:1626-1632 (1999).  Jones DK et al. Optimal strategies for measuring diffusion
in anisotropic systems by magnetic resonance imaging. Magn Reson Med 42:515-525 (1999) (electrostatic
repulsion of gradient directions).
"""

from __future__ import annotations

import numpy as np

from napari_myelin.sims.independent.constants import DWI_B0S, DWI_DIRECTIONS, DWI_SHELLS

L_MAX = 20
_T, _W = np.polynomial.legendre.leggauss(64)
_T, _W = 0.5 * (_T + 1.0), 0.5 * _W  # nodes and weights on [0, 1]


def legendre_even(x: np.ndarray, l_max: int = L_MAX) -> np.ndarray:
    """``P_l(x)`` for ``l = 0, 2, ..., l_max``: shape ``(l_max/2 + 1,) + x.shape`` (Bonnet recurrence)."""
    x = np.asarray(x, float)
    out = np.empty((l_max // 2 + 1,) + x.shape)
    p_prev, p = np.ones_like(x), x
    out[0] = p_prev
    for ell in range(1, l_max):
        p_prev, p = p, ((2 * ell + 1) * x * p - ell * p_prev) / (ell + 1)
        if (ell + 1) % 2 == 0:
            out[(ell + 1) // 2] = p
    return out


def watson_coefficients(kappa, l_max: int = L_MAX) -> np.ndarray:
    """``c_l = <P_l(u.mu)>`` of a Watson distribution, shape ``kappa.shape + (l_max/2 + 1,)``."""
    k = np.asarray(kappa, float)[..., None]
    w = _W * np.exp(k * (_T * _T - 1.0))  # scaled by exp(-kappa): no overflow
    return (w @ legendre_even(_T, l_max).T) / w.sum(axis=-1, keepdims=True)


def kernel_coefficients(beta, l_max: int = L_MAX) -> np.ndarray:
    """``h_l = (2l+1) int_0^1 exp(-beta t^2) P_l(t) dt``, shape ``beta.shape + (l_max/2 + 1,)``."""
    ell = np.arange(0, l_max + 1, 2)
    return (2 * ell + 1) * ((_W * np.exp(-np.asarray(beta, float)[..., None] * _T * _T)) @ legendre_even(_T, l_max).T)


def dispersed_signal(b: float, d_par, d_perp, kappa, cos_mu_g, l_max: int = L_MAX) -> np.ndarray:
    """Signal of Watson-dispersed zeppelins at one b-value (module docstring).

    Parameters
    ----------
    b : float
        b-value (s/mm^2).
    d_par, d_perp, kappa : array_like, shape S
        Diffusivities (um^2/ms) and Watson concentration.
    cos_mu_g : ndarray, shape S + (M,)
        Cosine between the dispersion axis and each gradient direction.
    l_max : int
        Highest (even) Legendre order of the series.
    """
    bd = b * 1e-3  # um^2/ms -> mm^2/s
    coef = kernel_coefficients(bd * (np.asarray(d_par, float) - np.asarray(d_perp, float)), l_max)
    coef = coef * watson_coefficients(kappa, l_max) * np.exp(-bd * np.asarray(d_perp, float))[..., None]
    return np.einsum("...l,l...m->...m", coef, legendre_even(cos_mu_g, l_max))


#: Directions of the sphere averages of the truth (MK, MKT), an equal-area Fibonacci set on the
#: hemisphere (K is even): 500 points are within 2e-3 (MK) and 5e-4 (MKT) of an 8000-point average
#: for arbitrary mixtures of dispersed compartments.
SPHERE_POINTS = 500


def _fibonacci(n: int) -> np.ndarray:
    """``n`` near-uniform unit vectors on the upper hemisphere (equal-area Fibonacci lattice)."""
    i = np.arange(n) + 0.5
    z = 1.0 - i / n
    phi = np.pi * (3.0 - np.sqrt(5.0)) * i
    r = np.sqrt(1.0 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


_SPHERE = _fibonacci(SPHERE_POINTS)


def cumulant_truth(frac, d_par, d_perp, kappa, mu, groups=None) -> dict:
    """Truth DKI metrics of compartment mixtures (module docstring).

    Parameters
    ----------
    frac, d_par, d_perp, kappa : ndarray, shape (N, C)
        Signal fractions (rows summing to 1), diffusivities (um^2/ms), Watson concentrations.
    mu : ndarray, shape (N, C, 3)
        Unit dispersion axes.
    groups : ndarray (C,), optional
        Compartments sharing their axis and concentration (as in :func:`mixture_signal`).

    Returns
    -------
    dict of ndarray (N,)
        ``fa``, ``md``, ``ad``, ``rd`` (mm^2/s), ``mk``, ``ak``, ``rk``, ``mkt``.
    """
    frac, d_par, d_perp = (np.asarray(a, float) for a in (frac, d_par, d_perp))
    groups = np.arange(frac.shape[1]) if groups is None else np.asarray(groups)
    labels = np.unique(groups)
    first = np.array([np.flatnonzero(groups == g)[0] for g in labels])
    c = watson_coefficients(np.asarray(kappa, float)[:, first], 4)
    delta = d_par - d_perp
    one_hot = (groups[:, None] == labels[None, :]).astype(float)  # (C, G)
    moments = {"a": (frac * delta) @ one_hot, "b": (frac * delta ** 2) @ one_hot,
               "c": (2 * frac * d_perp * delta) @ one_hot, "c2": c[..., 1], "c4": c[..., 2],
               "axes": np.asarray(mu, float)[:, first], "d0": (frac * d_perp).sum(1), "m0": (frac * d_perp ** 2).sum(1)}
    dt = (moments["d0"] + (moments["a"] * (1 - moments["c2"]) / 3).sum(1))[:, None, None] * np.eye(3) + np.einsum(
        "ng,ngi,ngj->nij", moments["a"] * moments["c2"], moments["axes"], moments["axes"])
    evals, evecs = np.linalg.eigh(dt)
    evals, e1 = evals[:, ::-1], evecs[:, :, -1]
    md = evals.mean(axis=1)
    fa = np.sqrt(1.5 * ((evals - md[:, None]) ** 2).sum(1) / np.maximum((evals ** 2).sum(1), 1e-30))
    mk, mkt = np.empty_like(md), np.empty_like(md)
    for s in range(0, md.size, 1000):  # chunks keep the (N, G, directions) arrays small
        sub = {k: v[s:s + 1000] for k, v in moments.items()}
        k_sph, var_sph = _directional(sub, _SPHERE)
        mk[s:s + 1000] = k_sph.mean(1)
        mkt[s:s + 1000] = 3 * var_sph.mean(1) / np.maximum(md[s:s + 1000] ** 2, 1e-30)
    return {
        "fa": fa, "md": md * 1e-3, "ad": evals[:, 0] * 1e-3, "rd": evals[:, 1:].mean(1) * 1e-3, "mk": mk, "mkt": mkt,
        "ak": _directional(moments, e1[:, None, :])[0][:, 0],
        "rk": _directional(moments, _perpendicular_ring(e1, 36))[0].mean(1),
    }


def _directional(m: dict, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kurtosis ``K(n)`` and variance ``V(n)`` (N, M) along ``dirs`` ((M, 3) or (N, M, 3)) from the group moments."""
    axes = m["axes"]
    cos = np.einsum("ngi,nmi->ngm", axes, dirs) if dirs.ndim == 3 else np.einsum("ngi,mi->ngm", axes, dirs)
    cos2 = cos * cos
    p2, p4 = 1.5 * cos2 - 0.5, (35 * cos2 * cos2 - 30 * cos2 + 3) / 8
    c2, c4 = m["c2"][..., None], m["c4"][..., None]
    e2 = 1 / 3 + (2 / 3) * c2 * p2
    e4 = 1 / 5 + (4 / 7) * c2 * p2 + (8 / 35) * c4 * p4
    dn = m["d0"][:, None] + (m["a"][..., None] * e2).sum(1)
    var = m["m0"][:, None] + (m["c"][..., None] * e2 + m["b"][..., None] * e4).sum(1) - dn * dn
    return 3 * var / np.maximum(dn * dn, 1e-30), var


def _perpendicular_ring(e1: np.ndarray, n: int) -> np.ndarray:
    """``n`` unit vectors (N, n, 3) evenly spaced on the circle perpendicular to each ``e1``."""
    helper = np.where(np.abs(e1[:, :1]) < 0.9, np.array([[1.0, 0, 0]]), np.array([[0, 1.0, 0]]))
    a = np.cross(e1, helper)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b = np.cross(e1, a)
    phi = np.pi * np.arange(n) / n  # half circle: K is even
    return np.cos(phi)[None, :, None] * a[:, None, :] + np.sin(phi)[None, :, None] * b[:, None, :]


def _repulsion(n: int, seed: int, iterations: int = 400) -> np.ndarray:
    """``n`` unit directions spread by electrostatic repulsion of the points and their antipodes."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    for _ in range(iterations):
        force = np.zeros_like(x)
        for sign in (1.0, -1.0):
            d = x[:, None, :] - sign * x[None, :, :]
            r3 = np.linalg.norm(d, axis=-1) ** 3
            if sign > 0:
                np.fill_diagonal(r3, np.inf)
            force += (d / r3[..., None]).sum(axis=1)
        x += 0.01 * force / np.abs(force).max()
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x * np.where(x[:, 2:] < 0, -1.0, 1.0)


def gradient_scheme() -> tuple[np.ndarray, np.ndarray]:
    """b-values (s/mm^2) and unit directions (scanner frame): ``DWI_B0S`` b=0 spread through the series,
    ``DWI_DIRECTIONS`` repulsion-optimised directions per shell (a different set per shell)."""
    bvals, dirs = [], []
    for i, b in enumerate(DWI_SHELLS):
        dirs.append(_repulsion(DWI_DIRECTIONS, seed=100 + i))
        bvals.append(np.full(DWI_DIRECTIONS, b))
    bvals, dirs = np.concatenate(bvals), np.concatenate(dirs)
    slots = np.linspace(0, bvals.size, DWI_B0S, endpoint=False).astype(int)
    return np.insert(bvals, slots, 0.0), np.insert(dirs, slots, 0.0, axis=0)


def mixture_signal(frac, d_par, d_perp, kappa, mu, bvals, bvecs, groups=None, chunk: int = 4000) -> np.ndarray:
    """Normalised signal (N, M) of compartment mixtures (arrays as :func:`cumulant_truth`).

    ``groups`` (C,) labels compartments that share their axis and concentration (e.g. the stick and
    zeppelin of one tissue class): their series are summed before one Legendre expansion per group.
    Compartments with ``D_par = D_perp`` everywhere are isotropic: ``exp(-b D)``.
    """
    groups = np.arange(frac.shape[1]) if groups is None else np.asarray(groups)
    iso = np.all(d_par == d_perp, axis=0)
    out = np.zeros((frac.shape[0], bvals.size))
    for s in range(0, frac.shape[0], chunk):
        sl = slice(s, s + chunk)
        for b in np.unique(bvals):
            sel = np.flatnonzero(bvals == b)
            bd = b * 1e-3
            acc = (frac[sl][:, iso] * np.exp(-bd * d_par[sl][:, iso])).sum(1)[:, None] * np.ones(sel.size)
            for g in np.unique(groups[~iso]):
                members = np.flatnonzero((groups == g) & ~iso)
                coef = (frac[sl][:, members, None] * np.exp(-bd * d_perp[sl][:, members, None])
                        * kernel_coefficients(bd * (d_par[sl][:, members] - d_perp[sl][:, members]))).sum(1)
                coef *= watson_coefficients(kappa[sl][:, members[0]])
                acc += np.einsum("nl,lnm->nm", coef, legendre_even(mu[sl][:, members[0]] @ bvecs[sel].T))
            out[s:s + chunk, sel] = acc
    return out
