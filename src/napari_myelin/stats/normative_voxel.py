"""Voxelwise normative models in template space, voxelwise predictive z, and the abnormality score.

Model
-----
At each template voxel :math:`v` and for each map, the controls' smoothed values follow the linear
model of :mod:`~napari_myelin.stats.normative_model` with the same covariates. Each control's map is
smoothed with a Gaussian of full width ``fwhm_mm``, normalised within its valid voxels (finite, non-zero,
inside the template brain; :func:`napari_myelin.align.database.smooth`), then, over the :math:`n(v)`
controls valid at :math:`v`, one pass accumulates

.. math::

    G(v) = \\sum_i x_i x_i^\\top, \\quad b(v) = \\sum_i x_i y_i(v), \\quad S(v) = \\sum_i y_i(v)^2,
    \\qquad \\hat\\beta = G^{-1} b, \\quad s^2 = \\frac{S - \\hat\\beta^\\top b}{n(v) - p}

(:math:`\\sum_i (y_i - x_i^\\top\\hat\\beta)^2 = S - \\hat\\beta^\\top b`, exact in float64 at these
coefficients of variation). Stored per map: ``mean`` (:math:`\\hat\\beta_0`, the prediction at the centre of
the covariates), ``sd`` (:math:`s`), ``n`` (:math:`n(v)`), ``beta`` (:math:`\\hat\\beta`, 4D) and ``ginv``
(the upper triangle of :math:`G(v)^{-1}`, 4D); voxels with :math:`n(v) < p + 2` carry no model.

Predictive z and abnormality
----------------------------
A subject's smoothed map :math:`y(v)` (same FWHM) gives :math:`t = (y - x_0^\\top\\hat\\beta) /
(s\\sqrt{1 + x_0^\\top G^{-1} x_0}) \\sim t_{n(v)-p}` and its normal-equivalent :math:`z_k(v)`
(:func:`~napari_myelin.stats.normative_scoring.predictive_z`). The maps are combined into one
**directional** score of myelin loss,

.. math::

    A(v) = -\\frac{\\sum_k w_k z_k(v)}{\\sqrt{\\sum_{k,l} w_k w_l R_{kl}}}, \\qquad w_k = \\pm 1,

with :math:`w_k` the sign of map :math:`k`'s dependence on myelin (:data:`MYELIN_SIGN`: MWF, QPM, FA, MK,
MTsat, MTR and the diamagnetic magnitude chi_dia rise with myelin; the bulk susceptibility falls, myelin
being diamagnetic) and :math:`R` the
correlation of the maps' standardised residuals over the controls' white-matter voxels. In healthy tissue
:math:`A \\sim N(0, 1)`, so :math:`P = 1 - \\Phi(A)` is calibrated without training data; voxels with
Benjamini-Hochberg :math:`q \\le \\alpha` over the subject's white matter form the abnormal-NAWM label map.
Maps missing at a voxel drop out of both sums.

References
----------
Ashburner & Friston, NeuroImage 11:805 (2000) (smoothing); Stouffer et al., "The American Soldier" (1949)
and Whitlock, J Evol Biol 18:1368 (2005) (weighted z combination); Laule et al., Mult Scler 12:747 (2006);
Lee et al., NeuroImage 59:3967 (2012) (myelin and susceptibility).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import special

from napari_myelin.align.database import smooth
from napari_myelin.io.volume import Volume, load_volume, save_volume
from napari_myelin.stats.normative_scoring import bh_qvalues, predictive_z
from napari_myelin.utils.errors import InputError
from napari_myelin.utils.progress import ProgressFn, step

#: +1 for maps that rise with myelin content, -1 for those that fall (the direction of demyelination is -w).
MYELIN_SIGN = {"mwf": 1, "imwf": 1, "qpm_myelin": 1, "mwf_qpm": 1, "fa": 1, "mk": 1, "mtsat": 1, "mtr": 1,
               "chi_dia": 1, "chi": -1}
#: Default smoothing of the voxelwise model (mm, FWHM).
FWHM_MM = 4.0


@dataclass
class VoxelModel:
    """Voxelwise model on one grid (module docstring); arrays are ``(X, Y, Z)`` or ``(X, Y, Z, q)``."""

    maps: list[str]
    beta: dict[str, np.ndarray]
    sd: dict[str, np.ndarray]
    n: dict[str, np.ndarray]
    ginv: dict[str, np.ndarray]
    affine: np.ndarray
    p: int
    fwhm_mm: float
    correlation: np.ndarray
    units: dict[str, str] = field(default_factory=dict)


def _pairs(p: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(p) for j in range(i, p)]


def _smoothed(vol: Volume, reference: Volume, mask: np.ndarray, fwhm_mm: float, what: str) -> np.ndarray:
    data = np.asarray(vol.data, dtype=float)
    if data.shape != reference.shape[:3]:
        raise InputError(f"{what}: has shape {data.shape}, the template grid {reference.shape[:3]}; "
                         "give maps in template space.")
    return smooth(data, fwhm_mm, reference.zooms, mask & np.isfinite(data) & (data != 0))


def _accumulate(controls: Sequence[Mapping], name: str, x: np.ndarray, reference: Volume, mask: np.ndarray,
                fwhm_mm: float) -> tuple[np.ndarray, ...]:
    """``G``, ``b``, ``S`` and ``n`` of one map over the mask voxels (module docstring)."""
    p = x.shape[1]
    v = int(mask.sum())
    g, b, syy, n = np.zeros((v, p, p)), np.zeros((v, p)), np.zeros(v), np.zeros(v, int)
    for i, maps in enumerate(controls):
        if name not in maps:
            continue
        y = _smoothed(_volume(maps[name]), reference, mask, fwhm_mm, f"control {i + 1}, map '{name}'")[mask]
        ok = np.isfinite(y)
        y = np.where(ok, y, 0.0)
        g[ok] += np.outer(x[i], x[i])
        b += y[:, None] * x[i]
        syy += y ** 2
        n += ok
    return g, b, syy, n


def _volume(item) -> Volume:
    return item if isinstance(item, Volume) else load_volume(item)


def fit_voxel_model(controls: Sequence[Mapping[str, Volume | str | os.PathLike]], x: np.ndarray, *,
                    reference: Volume, mask: np.ndarray, wm: np.ndarray, fwhm_mm: float = FWHM_MM,
                    maps: Sequence[str] | None = None, progress: ProgressFn | None = None,
                    cancel=None) -> VoxelModel:
    """Fit the voxelwise model of every map (module docstring).

    Parameters
    ----------
    controls : sequence of mapping
        Per control (in the order of the rows of ``x``), its template-space maps (Volume or path).
    x : ndarray, shape (n, p)
        Design matrix of the controls.
    reference : Volume
        The template grid.
    mask, wm : ndarray of bool
        Template brain (voxels modelled) and white matter (voxels whose residuals give :math:`R`).
    fwhm_mm : float
        Smoothing (mm).
    maps : sequence of str, optional
        Maps to model (default: those of :data:`MYELIN_SIGN` that some control has).
    """
    names = list(maps or [m for m in MYELIN_SIGN if any(m in c for c in controls)])
    p = x.shape[1]
    shape = reference.shape[:3]
    model = VoxelModel(names, {}, {}, {}, {}, reference.affine.copy(), p, float(fwhm_mm), np.eye(len(names)))
    for k, name in enumerate(names):
        step(progress, cancel, 0.7 * k / len(names), f"voxelwise model: {name}")
        g, b, syy, n = _accumulate(controls, name, x, reference, mask, fwhm_mm)
        ok = n >= p + 2
        ok[ok] = np.linalg.cond(g[ok]) < 1e10
        ginv = np.full(g.shape, np.nan)
        ginv[ok] = np.linalg.inv(g[ok])
        beta = np.einsum("vjk,vk->vj", ginv, b)
        s2 = np.maximum(syy - np.einsum("vj,vj->v", beta, b), 0.0) / np.where(ok, n - p, 1)
        model.beta[name] = _unmask(beta, mask, shape)
        model.sd[name] = _unmask(np.where(ok, np.sqrt(s2), np.nan), mask, shape)
        model.n[name] = _unmask(n, mask, shape, fill=0, dtype=np.int16)
        model.ginv[name] = _unmask(np.stack([ginv[:, i, j] for i, j in _pairs(p)], axis=-1), mask, shape)
    step(progress, cancel, 0.7, "voxelwise model: correlation of the maps")
    model.correlation = _residual_correlation(model, controls, x, reference, mask, wm)
    return model


def _unmask(values: np.ndarray, mask: np.ndarray, shape, fill=np.nan, dtype=np.float32) -> np.ndarray:
    """``values`` of the mask voxels back on the grid (``fill`` elsewhere)."""
    out = np.full(tuple(shape) + values.shape[1:], fill, dtype=dtype)
    out[mask] = values
    return out


def _residual_correlation(model: VoxelModel, controls, x, reference, mask, wm) -> np.ndarray:
    """Correlation of the standardised residuals of the maps over the controls' WM voxels (all maps valid)."""
    k = len(model.maps)
    cross, count = np.zeros((k, k)), 0
    sel = wm & mask
    for i, maps in enumerate(controls):
        if not all(m in maps for m in model.maps):
            continue
        r = np.stack([(_smoothed(_volume(maps[m]), reference, mask, model.fwhm_mm, m)[sel]
                       - model.beta[m][sel] @ x[i]) / model.sd[m][sel] for m in model.maps], axis=1)
        r = r[np.isfinite(r).all(axis=1)]
        cross += r.T @ r
        count += r.shape[0]
    if count == 0:
        return np.eye(k)
    d = np.sqrt(np.diag(cross))
    return cross / np.outer(d, d)


def predictive_z_map(y: np.ndarray, beta: np.ndarray, sd: np.ndarray, n: np.ndarray, ginv: np.ndarray,
                     x0: np.ndarray) -> np.ndarray:
    """Voxelwise predictive z of a subject's (smoothed) map ``y`` (module docstring); NaN without a model.

    ``beta`` and ``ginv`` carry the coefficients and the packed :math:`G^{-1}` on their last axis; ``x0`` is
    the subject's design row.
    """
    p = x0.size
    mu = beta @ x0
    quad = sum(ginv[..., q] * x0[i] * x0[j] * (1 if i == j else 2) for q, (i, j) in enumerate(_pairs(p)))
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (y - mu) / (sd * np.sqrt(1 + quad))
    t = np.where((n >= p + 2) & (sd > 0), t, np.nan)
    z, _ = predictive_z(t, np.asarray(n, float) - p)
    return z


def abnormality_score(z: Mapping[str, np.ndarray], maps: Sequence[str], correlation: np.ndarray) -> np.ndarray:
    """The directional score :math:`A(v)` of the module docstring from the z-maps ``z`` (NaN = missing).

    ``maps`` and ``correlation`` are the model's (:attr:`VoxelModel.maps`, :attr:`VoxelModel.correlation`);
    maps absent from ``z`` drop out.
    """
    present = [j for j, m in enumerate(maps) if m in z]
    if not present:
        raise InputError("abnormality: no z-map of a map the model has; compute z-maps first.")
    stack = np.stack([np.asarray(z[maps[j]], float) for j in present], axis=-1)
    w = np.array([MYELIN_SIGN.get(maps[j], 1) for j in present], float)
    finite = np.isfinite(stack)
    wf = np.where(finite, w, 0.0)
    num = np.where(finite, stack, 0.0) @ w
    den = np.sqrt(np.einsum("...k,kl,...l->...", wf, correlation[np.ix_(present, present)], wf))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(finite.any(axis=-1), -num / den, np.nan)


def abnormal_voxels(score: np.ndarray, wm: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """One-sided :math:`P = 1 - \\Phi(A)` and the WM voxels with Benjamini-Hochberg :math:`q \\le \\alpha`.

    Returns the q-values (NaN outside ``wm``) and the boolean label map.
    """
    if not 0 < alpha < 1:
        raise InputError(f"alpha {alpha}: give a false-discovery rate between 0 and 1, e.g. 0.05.")
    sel = wm & np.isfinite(score)
    q = np.full(score.shape, np.nan)
    q[sel] = bh_qvalues(special.ndtr(-score[sel]))
    return q, np.nan_to_num(q, nan=1.0) <= alpha


def tract_volumes(abnormal: np.ndarray, tracts: np.ndarray, lut: pd.DataFrame, voxel_mm3: float,
                  score: np.ndarray | None = None) -> pd.DataFrame:
    """Abnormal volume per tract: ``label, name, n_voxels, abnormal_voxels, abnormal_mm3, fraction, mean_score``."""
    labels = np.asarray(tracts, int).ravel()
    size = max(int(labels.max(initial=0)) + 1, int(lut["index"].max()) + 1)
    total = np.bincount(labels, minlength=size)
    bad = np.bincount(labels, weights=np.asarray(abnormal, float).ravel(), minlength=size)
    finite = np.isfinite(score).ravel() if score is not None else np.zeros(labels.size, bool)
    sums = np.bincount(labels[finite], weights=score.ravel()[finite], minlength=size) if score is not None else None
    counts = np.bincount(labels[finite], minlength=size)
    idx = lut["index"].to_numpy(int)
    table = pd.DataFrame({"label": idx, "name": lut["name"].to_numpy(), "n_voxels": total[idx],
                          "abnormal_voxels": bad[idx].astype(int)})
    table["abnormal_mm3"] = table["abnormal_voxels"] * float(voxel_mm3)
    with np.errstate(invalid="ignore", divide="ignore"):
        table["fraction"] = table["abnormal_voxels"] / table["n_voxels"]
        table["mean_score"] = sums[idx] / counts[idx] if sums is not None else np.nan
    return table[table["n_voxels"] > 0].reset_index(drop=True)


def save_voxel_model(model: VoxelModel, folder: Path, description: str) -> list[Path]:
    """Write ``folder/{mean,sd,n,beta,ginv}_<map>.nii.gz``, ``correlation.csv`` and ``voxelwise.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for m in model.maps:
        for kind, arr, units in (("mean", model.beta[m][..., 0], model.units.get(m, "")),
                                 ("sd", model.sd[m], model.units.get(m, "")), ("n", model.n[m], "subjects"),
                                 ("beta", model.beta[m], model.units.get(m, "")), ("ginv", model.ginv[m], "")):
            written.append(save_volume(arr, folder / f"{kind}_{m}.nii.gz", model.affine,
                                       sidecar={"Units": units, "Description": f"{description}: {kind} of {m}"}))
    pd.DataFrame(model.correlation, index=model.maps, columns=model.maps).to_csv(folder / "correlation.csv")
    record = {"Maps": model.maps, "Parameters": model.p, "FWHM_mm": model.fwhm_mm, "Units": model.units}
    (folder / "voxelwise.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    return [*written, folder / "correlation.csv", folder / "voxelwise.json"]


def load_voxel_model(folder: str | os.PathLike) -> VoxelModel:
    """Read a voxelwise model written by :func:`save_voxel_model`."""
    folder = Path(folder)
    if not (folder / "voxelwise.json").is_file():
        raise InputError(f"{folder.parent}: the model has no voxelwise maps; build it without --no-voxelwise.")
    record = json.loads((folder / "voxelwise.json").read_text(encoding="utf-8"))
    maps = list(record["Maps"])
    arrays = {kind: {m: np.asarray(load_volume(folder / f"{kind}_{m}.nii.gz", require_finite=False).data)
                     for m in maps} for kind in ("beta", "sd", "n", "ginv")}
    p = int(record["Parameters"])
    for kind in ("beta", "ginv"):  # a 4D image with one volume is stored 3D
        arrays[kind] = {m: a if a.ndim == 4 else a[..., None] for m, a in arrays[kind].items()}
    affine = load_volume(folder / f"mean_{maps[0]}.nii.gz", require_finite=False).affine
    corr = pd.read_csv(folder / "correlation.csv", index_col=0).loc[maps, maps].to_numpy(float)
    return VoxelModel(maps, arrays["beta"], arrays["sd"], arrays["n"], arrays["ginv"], affine, p,
                      float(record["FWHM_mm"]), corr, dict(record.get("Units", {})))
