"""The statistics of normative scoring: predictive z, false-discovery rate, shrinkage covariance, distance.

Predictive z
------------
For a normal linear model fitted to :math:`n` controls with :math:`p` design columns (estimates
:math:`\\hat\\beta`, residual variance :math:`s^2`, :math:`G = X^\\top X`), the value of a new healthy
subject with covariates :math:`x_0` follows a Student law (the frequentist prediction interval, and the
Bayesian posterior predictive under the reference prior :math:`p(\\beta, \\sigma^2) \\propto \\sigma^{-2}`):

.. math::

    t = \\frac{y - x_0^\\top \\hat\\beta}{s \\sqrt{1 + x_0^\\top G^{-1} x_0}} \\sim t_{n-p}.

The :math:`1 + x_0^\\top G^{-1} x_0` term is the model's own estimation error (with :math:`p = 1`,
:math:`1 + 1/n`). :func:`predictive_z` turns :math:`t` into the normal deviate with the same tail
probability, :math:`z = \\Phi^{-1}(F_{t,\\nu}(t))`, and the two-sided :math:`P = 2 F_{t,\\nu}(-|t|)`; so
:math:`|z| > 1.96` exactly when :math:`P < 0.05`, whatever :math:`\\nu`.

Multiple comparisons
--------------------
:func:`bh_qvalues`: Benjamini-Hochberg adjusted p-values (q-values) within each group (a subject's tracts
of one map): :math:`q_{(i)} = \\min_{j \\ge i} \\min(1, m P_{(j)} / j)`; flagging :math:`q \\le \\alpha`
controls the false-discovery rate at :math:`\\alpha` (for independent or positively dependent tests), and
the probability of any flag at :math:`\\alpha` when no tract is abnormal.

Multivariate distance
---------------------
Per tract, the vector :math:`z` of predictive z over its :math:`k` maps has, in healthy subjects, a
correlation :math:`\\Sigma` estimated from the controls' leave-one-out z with the Ledoit-Wolf shrinkage
estimator (:func:`ledoit_wolf`, well conditioned even with :math:`k` close to :math:`n`):
:math:`\\hat\\Sigma = (1 - \\delta) S + \\delta \\mu I`, :math:`\\mu = \\operatorname{tr} S / k`. The
distance is :math:`D^2 = z^\\top \\hat\\Sigma^{-1} z`. Its null law, which depends on the estimation of
:math:`\\hat\\Sigma` from :math:`n` controls and on the shrinkage, is calibrated by simulation
(:func:`distance_null`): :math:`B` replicates of :math:`n` control vectors and one new vector drawn from
:math:`N(0, \\hat\\Sigma)`, the covariance re-estimated each time; :math:`P_D = (1 + \\#\\{D^{2*} \\ge
D^2\\}) / (B + 1)`, then Benjamini-Hochberg across the subject's tracts.

References
----------
Gelman A. et al., "Bayesian Data Analysis", 3rd ed., CRC (2013), section 14.2 (predictive of the linear
model). Crawford J.R., Howell D.C., "Comparing an individual's test score against norms derived from small
samples", Clin Neuropsychol 12:482 (1998). Benjamini Y., Hochberg Y., J R Stat Soc B 57:289 (1995).
Benjamini Y., Yekutieli D., Ann Stat 29:1165 (2001). Ledoit O., Wolf M., "A well-conditioned estimator for
large-dimensional covariance matrices", J Multivar Anal 88:365 (2004).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special

#: Monte Carlo replicates of the null distribution of the multivariate distance.
NULL_REPLICATES = 4000
#: Seed of those replicates (any seed gives the same p-values up to the Monte Carlo error, ~1/sqrt(B)).
NULL_SEED = 20240518


def predictive_z(t, df):
    """Normal-equivalent deviate and two-sided p-value of Student ``t`` with ``df`` degrees of freedom.

    Parameters
    ----------
    t, df : array_like
        Predictive t and its degrees of freedom (broadcast); NaN gives NaN.

    Returns
    -------
    z, p : ndarray
        :math:`z = \\Phi^{-1}(F_{t,\\nu}(t))` (computed from the smaller tail, so it is exact far out) and
        :math:`P = 2 F_{t,\\nu}(-|t|)`.
    """
    t = np.asarray(t, dtype=float)
    df = np.asarray(df, dtype=float)
    tail = special.stdtr(df, -np.abs(t))
    z = -np.sign(t) * special.ndtri(tail)
    return z, np.minimum(2.0 * tail, 1.0)


def bh_qvalues(p, groups=None) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values within each group (NaN p-values are left out and stay NaN).

    Parameters
    ----------
    p : array_like
        p-values.
    groups : array_like, optional
        Group of each p-value (e.g. ``subject|map``); default one group.
    """
    p = np.asarray(p, dtype=float)
    frame = pd.DataFrame({"p": p, "g": np.zeros(p.size, int) if groups is None else np.asarray(groups)})
    ok = frame["p"].notna()
    q = np.full(p.size, np.nan)
    if ok.any():
        part = frame[ok].sort_values(["g", "p"], kind="stable")
        rank = part.groupby("g").cumcount().to_numpy() + 1
        m = part.groupby("g")["p"].transform("size").to_numpy()
        raw = pd.Series(np.minimum(part["p"].to_numpy() * m / rank, 1.0), index=part.index)
        # running minimum from the largest p-value down, within each group
        adjusted = raw.iloc[::-1].groupby(part["g"].iloc[::-1]).cummin().iloc[::-1]
        q[adjusted.index.to_numpy()] = adjusted.to_numpy()
    return q


def ledoit_wolf(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ledoit-Wolf shrinkage covariance of samples ``x`` (``(..., n, k)``, stacks allowed).

    Returns
    -------
    covariance : ndarray, shape (..., k, k)
        :math:`(1 - \\delta) S + \\delta \\mu I` with :math:`S` the covariance of the centred samples
        (divided by :math:`n`), :math:`\\mu = \\operatorname{tr} S / k` and the estimated optimal
        shrinkage :math:`\\delta = \\min(\\beta, d) / d`, :math:`d = \\lVert S - \\mu I \\rVert_F^2 / k`,
        :math:`\\beta = \\frac{1}{k n^2} \\sum_i \\lVert x_i x_i^\\top - S \\rVert_F^2` (the formulas of
        Ledoit & Wolf 2004, as scikit-learn's ``ledoit_wolf``).
    shrinkage : ndarray, shape (...)
        :math:`\\delta`.
    """
    x = np.asarray(x, dtype=float)
    n, k = x.shape[-2:]
    xc = x - x.mean(axis=-2, keepdims=True)
    s = np.einsum("...ij,...ik->...jk", xc, xc) / n
    mu = np.trace(s, axis1=-2, axis2=-1) / k
    eye = np.eye(k)
    d = ((s - mu[..., None, None] * eye) ** 2).sum(axis=(-2, -1)) / k
    x2 = xc ** 2
    beta_sum = np.einsum("...ij,...ik->...jk", x2, x2).sum(axis=(-2, -1)) / n - (s ** 2).sum(axis=(-2, -1))
    beta = np.minimum(beta_sum / (k * n), d)
    delta = np.divide(beta, d, out=np.zeros_like(d), where=d > 0)
    cov = (1 - delta)[..., None, None] * s + (delta * mu)[..., None, None] * eye
    return cov, delta


def mahalanobis_sq(z: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """:math:`z^\\top \\Sigma^{-1} z` for stacks of vectors ``(..., k)`` and matrices ``(..., k, k)``."""
    return np.einsum("...i,...i->...", z, np.linalg.solve(cov, z[..., None])[..., 0])


def distance_null(cov: np.ndarray, n: int, replicates: int = NULL_REPLICATES, seed=NULL_SEED) -> np.ndarray:
    """Simulated null distribution of :math:`D^2` for a covariance ``cov`` estimated from ``n`` controls.

    Each replicate draws ``n`` control vectors and one new vector from :math:`N(0, \\Sigma)`, re-estimates
    the covariance with :func:`ledoit_wolf` and returns the new vector's :math:`D^2`; sorted.
    """
    cov = np.asarray(cov, dtype=float)
    k = cov.shape[0]
    rng = np.random.default_rng(seed)
    chol = np.linalg.cholesky(cov + 1e-12 * np.eye(k))
    draws = rng.standard_normal((replicates, n + 1, k)) @ chol.T
    estimated, _ = ledoit_wolf(draws[:, :n])
    return np.sort(mahalanobis_sq(draws[:, n], estimated))


def null_p_value(d2: float, null: np.ndarray) -> float:
    """:math:`(1 + \\#\\{D^{2*} \\ge D^2\\}) / (B + 1)` for a sorted null sample."""
    if not np.isfinite(d2):
        return float("nan")
    above = null.size - np.searchsorted(null, d2, side="left")
    return float((1 + above) / (null.size + 1))
