"""The transmit (B1+) map as the estimators use it: the ratio ``b`` of actual to nominal flip angle.

A helper below the estimators (QPM's VFA fit and MTsat both scale their excitation angles by ``b``),
so that no estimator imports another's module. Resampling a B1 map acquired on another grid is
:func:`napari_myelin.io.resample.b1_on_grid`; this module only checks the array on the image grid.
"""

from __future__ import annotations

import warnings

import numpy as np

from napari_myelin.utils.errors import InputError


def b1_ratio(b1, spatial_shape, *, grid: str = "SPGR") -> np.ndarray | None:
    """B1 ratio on the image grid (invalid values set to 1, percent converted), or ``None``.

    Parameters
    ----------
    b1 : array_like or None
        Transmit map, ratio of actual to nominal flip angle (1 = nominal). Maps stored in percent of the
        nominal angle (median above 10) are divided by 100, with a warning.
    spatial_shape : tuple of int
        Shape of the image grid the map must be on.
    grid : str
        Name of that grid in the error message (``"SPGR"``, ``"MT-weighted"`` ...).

    Returns
    -------
    ndarray or None
        ``b``, with non-finite and non-positive values replaced by 1 (nominal); ``None`` when ``b1`` is None.

    Raises
    ------
    InputError
        The map is not on the image grid.
    """
    if b1 is None:
        return None
    b1 = np.asarray(b1, dtype=float)
    if b1.shape != tuple(spatial_shape):
        raise InputError(
            f"B1 map: shape {b1.shape} differs from the {grid} grid {tuple(spatial_shape)}; resample it to the {grid} "
            "grid (the CLI and widget do this by world coordinates)."
        )
    b1 = np.where(np.isfinite(b1) & (b1 > 0), b1, 1.0)
    med = float(np.median(b1))
    if med > 10:  # stored in percent of the nominal flip angle
        warnings.warn("B1 map: values look like percent (median %.0f); dividing by 100." % med, stacklevel=3)
        b1 = b1 / 100.0
    return b1
