r"""The DKI model fitted to arrays of voxels by linear least squares (dipy's ``ls_fit_dki``).

The signal of each voxel is modelled as (Jensen et al. 2005)

.. math::

    \ln S(b, \mathbf{n}) = \ln S_0 - b\, n_i n_j D_{ij}
        + \tfrac{1}{6} b^2 \bar{D}^2\, n_i n_j n_k n_l W_{ijkl},

with the diffusion tensor :math:`D` (6 unique elements, mm^2/s), the kurtosis tensor :math:`W`
(15 unique elements, dimensionless) and the mean diffusivity :math:`\bar D = \mathrm{tr}(D)/3`.
The 22 unknowns are found by linear least squares on the log signal with dipy's design matrix:
ordinary (OLS) or weighted (WLS, the default) with weights equal to the squared signal predicted by
a first OLS fit (Veraart et al. 2013). This reproduces
``dipy.reconst.dki.DiffusionKurtosisModel(gtab, fit_method="WLS"|"OLS")`` of dipy 1.12.1 step by
step -- signal floor ``min_signal = 1e-4``, eigenvalues clipped at ``1e-6 / -min(B)``, kurtosis
elements divided by the square of the clipped MD -- on arrays of voxels (batched normal equations
and eigen-decompositions).

References
----------
Jensen JH, Helpern JA et al., "Diffusional kurtosis imaging", Magn Reson Med 53:1432 (2005).
Veraart J et al., "Weighted linear least squares estimation of diffusion MRI parameters:
strengths, limitations, and pitfalls", NeuroImage 81:335 (2013).
"""

from __future__ import annotations

import numpy as np

from napari_myelin.utils.errors import InputError

#: dipy's floor on the signal before taking its logarithm (``dipy.reconst.dti.MIN_POSITIVE_SIGNAL``).
MIN_SIGNAL = 1e-4


def fit_dki_params(
    signal: np.ndarray,
    design: np.ndarray,
    *,
    method: str = "WLS",
    min_signal: float = MIN_SIGNAL,
    design_pinv: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Fit the DKI model to ``n`` voxels at once (dipy's ``ls_fit_dki`` on arrays).

    Parameters
    ----------
    signal : ndarray (n, N)
        DWI signal of each voxel.
    design : ndarray (N, 22)
        :func:`design_matrix`.
    method : {"WLS", "OLS"}
        WLS weights each measurement by its squared OLS-predicted signal.
    min_signal : float
        Floor applied to the signal before the logarithm.

    Returns
    -------
    dict
        ``evals`` (n, 3) mm^2/s sorted descending, ``evecs`` (n, 3, 3) columns, ``kt`` (n, 15),
        ``s0`` (n,).
    """
    a = np.asarray(design, dtype=float)
    pinv = np.linalg.pinv(a) if design_pinv is None else design_pinv
    y = np.log(np.maximum(np.asarray(signal, dtype=float), min_signal))
    beta = y @ pinv.T
    if method == "WLS":
        # Minimise sum_g w_g^2 (y_g - A_g beta)^2 with w = exp(A beta_OLS) through the normal
        # equations on column-scaled A (keeps their condition number moderate), batched over voxels.
        scale = np.linalg.norm(a, axis=0)
        scale[scale == 0] = 1.0
        a_s = a / scale
        w2 = np.exp(2.0 * (beta @ a.T))
        n_par = a.shape[1]
        outer = (a_s[:, :, None] * a_s[:, None, :]).reshape(a.shape[0], n_par * n_par)
        normal = (w2 @ outer).reshape(-1, n_par, n_par)
        rhs = (w2 * y) @ a_s
        try:
            beta = np.linalg.solve(normal, rhs[:, :, None])[:, :, 0] / scale
        except np.linalg.LinAlgError:
            beta = np.einsum("nij,nj->ni", np.linalg.pinv(normal), rhs) / scale
    elif method != "OLS":
        raise InputError(f"method: '{method}' is not a DKI fit method; use 'WLS' or 'OLS'.")
    dt = beta[:, :6]
    tensor = np.empty((beta.shape[0], 3, 3))
    for (i, j), e in zip(((0, 0), (0, 1), (1, 1), (0, 2), (1, 2), (2, 2)), range(6)):
        tensor[:, i, j] = tensor[:, j, i] = dt[:, e]
    evals, evecs = np.linalg.eigh(tensor)
    order = np.argsort(evals, axis=1)[:, ::-1]
    evals = np.take_along_axis(evals, order, axis=1)
    evecs = np.take_along_axis(evecs, order[:, None, :], axis=2)
    min_diffusivity = 1e-6 / -a.min()
    evals = evals.clip(min=min_diffusivity)
    md_sq = evals.mean(axis=1) ** 2
    kt = np.zeros((beta.shape[0], 15))
    nz = md_sq != 0
    kt[nz] = beta[nz, 6:21] / md_sq[nz, None]
    return {"evals": evals, "evecs": evecs, "kt": kt, "s0": np.exp(-beta[:, 21])}
