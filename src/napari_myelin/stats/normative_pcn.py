"""Optional PCNtoolkit backend of the tract model (``normative build --backend pcn``, extra ``normative-pcn``).

PCNtoolkit (Marquand et al. 2016; ``pcntoolkit`` >= 1.0) is the field's reference implementation of normative
models. With ``backend="pcn"`` each tract x map cell is fitted by its Bayesian linear regression
(``pcntoolkit.BLR``: linear basis, homoskedastic Gaussian noise, hyperparameters by type-II maximum likelihood,
covariates and responses standardised by PCNtoolkit), through its documented API only
(``NormData.from_dataframe``, ``NormativeModel.fit``, ``NormativeModel.compute_zscores``).

The fitted model is then stored in this package's own format, so that scoring needs no PCNtoolkit: BLR's
posterior predictive for covariates :math:`x_0` is Gaussian with mean :math:`x_0^\\top\\beta` and variance
:math:`x_0^\\top A x_0` (noise variance plus the posterior variance of the mean, quadratic in the coded
covariates, whose first entry is 1). Both are read back from PCNtoolkit's z-scores: for a covariate row
:math:`x_k`, ``z`` at responses 0 and 1 gives :math:`\\sigma_k = 1 / (z_1 - z_0)` and :math:`\\mu_k = -z_0
\\sigma_k`; over the probe rows :math:`0, \\pm e_j, e_j + e_l` (in the design's coding) :math:`\\beta` and
:math:`A` solve linear systems exactly. The cell is stored as :math:`s^2 = A_{00}` (predictive variance at the
centre of the covariates), :math:`G^{-1} = A / s^2 - e_0 e_0^\\top` and ``df = inf``, so that
:func:`~napari_myelin.stats.normative_scoring.predictive_z` gives BLR's Gaussian z exactly.

PCNtoolkit pins an older numba than the one this package's MWF estimator is tested with, so it is an
optional extra, never installed by default.
"""

from __future__ import annotations

import itertools
import tempfile

import numpy as np
import pandas as pd

from napari_myelin.utils.errors import InputError

#: The extra that installs PCNtoolkit.
EXTRA = "normative-pcn"


def require_pcntoolkit():
    """The ``pcntoolkit`` module (>= 1.0).

    Raises
    ------
    InputError
        PCNtoolkit is not installed, or is a 0.x version.
    """
    try:
        import pcntoolkit
    except ImportError:
        raise InputError("--backend pcn: needs PCNtoolkit, which is not installed; install it with "
                         f"pip install 'napari-myelin[{EXTRA}]', or build with the default backend.") from None
    version = str(getattr(pcntoolkit, "__version__", "0"))
    if int(version.split(".")[0]) < 1:
        raise InputError(f"--backend pcn: needs PCNtoolkit 1.0 or later (found {version}); "
                         f"pip install 'napari-myelin[{EXTRA}]'.")
    return pcntoolkit


def probe_rows(p: int) -> np.ndarray:
    """Covariate rows (first entry 1) at which the predictive is read: the centre, :math:`\\pm e_j`, :math:`e_j + e_l`."""
    rows = [np.zeros(p - 1)]
    for j in range(p - 1):
        for sign in (1.0, -1.0):
            rows.append(sign * np.eye(p - 1)[j])
    for j, k in itertools.combinations(range(p - 1), 2):
        rows.append(np.eye(p - 1)[j] + np.eye(p - 1)[k])
    return np.c_[np.ones(len(rows)), np.array(rows)]


def _quadratic_features(x: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Columns :math:`x_a x_b` (:math:`a \\le b`, doubled off the diagonal) of :math:`x^\\top A x`."""
    pairs = [(a, b) for a in range(x.shape[1]) for b in range(a, x.shape[1])]
    return np.stack([x[:, a] * x[:, b] * (1.0 if a == b else 2.0) for a, b in pairs], axis=1), pairs


def _mean_and_sd(model, pcn, probes: np.ndarray, names: list[str], cells: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """BLR's predictive mean and SD (probes x cells) at the probe rows, from its z-scores at responses 0 and 1."""
    z = []
    for y in (0.0, 1.0):
        frame = pd.DataFrame(probes[:, 1:], columns=names).assign(subject=[f"probe{i}" for i in range(len(probes))])
        frame[cells] = y
        data = pcn.NormData.from_dataframe("probe", frame, covariates=names, batch_effects=None, response_vars=cells,
                                           subject_ids="subject")
        model.compute_zscores(data)
        z.append(data["Z"].to_pandas()[cells].to_numpy(float))
    sd = 1.0 / (z[1] - z[0])
    return -z[0] * sd, sd


def fit_pcn_cells(y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """PCNtoolkit BLR fit of every column of ``y`` (controls x cells, NaN = missing) on the design ``x``.

    Parameters
    ----------
    y : ndarray (n, m)
        The controls' tract means, one column per cell.
    x : ndarray (n, p)
        Coded covariates, first column the intercept (1).

    Returns
    -------
    beta : ndarray (m, p)
        Predictive mean coefficients.
    quad : ndarray (m, p, p)
        Predictive variance :math:`x_0^\\top A x_0`.
    version : str
        PCNtoolkit's version.

    Raises
    ------
    InputError
        PCNtoolkit missing, or a model without covariates (BLR needs at least one).
    """
    pcn = require_pcntoolkit()
    n, p = x.shape
    if p < 2:
        raise InputError("--backend pcn: PCNtoolkit's BLR needs at least one covariate; give --covariates, or build "
                         "with the default backend.")
    names = [f"x{j}" for j in range(1, p)]
    probes = probe_rows(p)
    feats, pairs = _quadratic_features(probes)
    beta = np.full((y.shape[1], p), np.nan)
    quad = np.full((y.shape[1], p, p), np.nan)
    patterns: dict[tuple, list[int]] = {}
    for c in range(y.shape[1]):
        patterns.setdefault(tuple(np.isfinite(y[:, c])), []).append(c)
    with tempfile.TemporaryDirectory(prefix="napari-myelin-pcn-") as save_dir:
        for mask, idx in patterns.items():
            rows = np.asarray(mask)
            if rows.sum() < p + 2:
                continue
            cells = [f"cell{c}" for c in idx]
            frame = pd.DataFrame(x[rows][:, 1:], columns=names).assign(subject=[f"c{i}" for i in range(rows.sum())])
            frame[cells] = y[rows][:, idx]
            data = pcn.NormData.from_dataframe("controls", frame, covariates=names, batch_effects=None,
                                               response_vars=cells, subject_ids="subject")
            model = pcn.NormativeModel(pcn.BLR(), savemodel=False, evaluate_model=False, saveresults=False,
                                       saveplots=False, save_dir=save_dir)
            model.fit(data)
            mean, sd = _mean_and_sd(model, pcn, probes, names, cells)
            beta[idx] = np.linalg.lstsq(probes, mean, rcond=None)[0].T
            coef = np.linalg.lstsq(feats, sd ** 2, rcond=None)[0]
            for k, (a, b) in enumerate(pairs):
                quad[idx, a, b] = quad[idx, b, a] = coef[k]
    return beta, quad, str(pcn.__version__)


def as_cells(beta: np.ndarray, quad: np.ndarray) -> dict[str, np.ndarray]:
    """``beta``, ``s``, ``ginv`` and ``df`` of the stored cells (module docstring): :math:`s^2 = A_{00}`,
    :math:`G^{-1} = A / s^2 - e_0 e_0^\\top`, infinite degrees of freedom (Gaussian predictive)."""
    s2 = quad[:, 0, 0]
    ginv = quad / s2[:, None, None]
    ginv[:, 0, 0] -= 1.0
    return {"beta": beta, "s": np.sqrt(s2), "ginv": ginv, "df": np.full(len(beta), np.inf)}
