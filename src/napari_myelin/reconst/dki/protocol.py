"""The DKI diffusion table: its checks, its shells and dipy's design matrix.

b-values in s/mm^2 (FSL ``.bval``), unit gradient directions in the image's voxel axes (FSL ``.bvec``).
"""

from __future__ import annotations

import numpy as np

from napari_myelin.utils.errors import InputError


def check_protocol(
    bvals: np.ndarray,
    bvecs: np.ndarray,
    n_volumes: int | None = None,
    *,
    b0_threshold: float = 50.0,
    source: str = "bval/bvec",
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a DKI diffusion table and return it as float arrays ``(N,)`` and ``(N, 3)``.

    Parameters
    ----------
    bvals : array-like, shape (N,)
        b-values in s/mm^2 (FSL ``.bval``).
    bvecs : array-like, shape (N, 3) or (3, N)
        Unit gradient directions (FSL ``.bvec``, image voxel axes).
    n_volumes : int, optional
        Number of DWI volumes the table must describe.
    b0_threshold : float
        b-values (s/mm^2) at or below this count as non-diffusion-weighted.
    source : str
        Name used in error messages (file names or ``"bval/bvec"``).

    Raises
    ------
    InputError
        Count or shape mismatch, b-values that look like s/m^2 or ms/um^2, gradient directions that
        are not unit vectors, fewer than two non-zero shells, or fewer than 22 volumes.
    """
    bvals = np.asarray(bvals, dtype=float)
    bvecs = np.asarray(bvecs, dtype=float)
    if bvals.ndim != 1:
        bvals = bvals.ravel()
    if bvecs.ndim != 2 or 3 not in bvecs.shape:
        raise InputError(f"{source}: the b-vectors have shape {bvecs.shape}; expected 3 rows (x, y, z) of directions.")
    if bvecs.shape[1] != 3:
        bvecs = bvecs.T
    if bvecs.shape[0] != bvals.size:
        raise InputError(
            f"{source}: {bvals.size} b-values but {bvecs.shape[0]} gradient directions; "
            "the .bval and .bvec must list the same volumes."
        )
    if n_volumes is not None and bvals.size != n_volumes:
        raise InputError(
            f"{source}: lists {bvals.size} volumes but the DWI has {n_volumes}; use the .bval/.bvec written with this DWI."
        )
    if not (np.isfinite(bvals).all() and np.isfinite(bvecs).all()):
        raise InputError(f"{source}: the diffusion table holds NaN or infinite numbers; fix the .bval/.bvec files.")
    if (bvals < 0).any():
        raise InputError(f"{source}: negative b-values ({bvals.min():g}); b-values must be >= 0 s/mm^2.")
    bmax = float(bvals.max()) if bvals.size else 0.0
    if bmax > 1e5:
        raise InputError(
            f"{source}: the largest b-value is {bmax:.4g}, which looks like s/m^2; "
            "divide the b-values by 1e6 to give them in s/mm^2."
        )
    if 0 < bmax <= 10:
        raise InputError(
            f"{source}: the largest b-value is {bmax:g}, which looks like ms/um^2; "
            "multiply the b-values by 1000 to give them in s/mm^2."
        )
    dw = bvals > b0_threshold
    norms = np.linalg.norm(bvecs[dw], axis=1)
    if norms.size and np.abs(norms - 1).max() > 1e-2:
        worst = norms[np.argmax(np.abs(norms - 1))]
        raise InputError(
            f"{source}: gradient directions of diffusion-weighted volumes must be unit vectors "
            f"(one has length {worst:.3g}); normalise the .bvec columns and keep b in the .bval."
        )
    shells = shell_values(bvals, b0_threshold=b0_threshold)
    if len(shells) < 2:
        found = ", ".join(f"{s:g}" for s in shells) or "none"
        raise InputError(
            f"{source}: DKI needs at least two non-zero b-value shells (e.g. 1000 and 2000 s/mm^2) but found "
            f"{found}; use a multi-shell acquisition."
        )
    if bvals.size < 22:
        raise InputError(
            f"{source}: {bvals.size} volumes, but DKI estimates 22 parameters per voxel; at least 22 volumes are needed."
        )
    return bvals, bvecs


def shell_values(bvals: np.ndarray, *, b0_threshold: float = 50.0, tolerance: float = 100.0) -> list[float]:
    """Non-zero shells (s/mm^2): b-values above ``b0_threshold`` grouped within ``tolerance``."""
    b = np.sort(np.asarray(bvals, dtype=float)[np.asarray(bvals) > b0_threshold])
    shells: list[list[float]] = []
    for value in b:
        if shells and value - shells[-1][0] <= tolerance:
            shells[-1].append(value)
        else:
            shells.append([value])
    return [float(np.round(np.mean(s))) for s in shells]


def design_matrix(bvals: np.ndarray, bvecs: np.ndarray) -> np.ndarray:
    """dipy's DKI design matrix ``(N, 22)``: 6 DT, 15 KT (times MD^2) columns and ``-1`` for ln S0."""
    from dipy.core.gradients import gradient_table
    from dipy.reconst.utils import dki_design_matrix

    gtab = gradient_table(np.asarray(bvals, dtype=float), bvecs=np.asarray(bvecs, dtype=float))
    return dki_design_matrix(gtab)
