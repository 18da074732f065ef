"""Calibration of a QPM myelin map ``M`` to myelin water fraction: the quadratic
``MWF[%] = c0 + c1 M + c2 M^2`` fitted by least squares on white-matter voxels or tract means
(:func:`fit_mwf_calibration`), stored as JSON and applied to other maps (:class:`MwfCalibration`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_myelin.io.maps import Maps
from napari_myelin.utils.errors import InputError
from napari_myelin.utils.progress import step


@dataclass
class MwfCalibration:
    """Quadratic calibration ``MWF[%] = c0 + c1 M + c2 M^2`` of a QPM myelin map ``M`` to MWF.

    Attributes
    ----------
    coefficients : tuple of float
        ``(c0, c1, c2)``; MWF in percent, ``M`` in the units of the QPM map (fraction).
    r2 : float
        Coefficient of determination of the fit.
    residual_sd : float
        Residual standard deviation (MWF %), ``sqrt(SS_res / (n - 3))``.
    n : int
        Number of points fitted (voxels or tract means).
    basis : str
        ``"voxels"`` or ``"tract means"``.
    """

    coefficients: tuple[float, float, float]
    r2: float
    residual_sd: float
    n: int
    basis: str = "voxels"
    extra: dict = field(default_factory=dict)

    def apply(self, qpm_map) -> np.ndarray:
        """MWF-calibrated map (%) of a QPM myelin map."""
        c0, c1, c2 = self.coefficients
        q = np.asarray(qpm_map, dtype=float)
        return c0 + c1 * q + c2 * q * q

    def to_dict(self) -> dict:
        return {
            "model": "MWF[%] = c0 + c1*M + c2*M^2",
            "coefficients": [float(c) for c in self.coefficients],
            "r2": float(self.r2),
            "residual_sd_percent": float(self.residual_sd),
            "n": int(self.n),
            "basis": self.basis,
            **self.extra,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "MwfCalibration":
        try:
            c = [float(x) for x in d["coefficients"]]
            if len(c) != 3:
                raise ValueError
            known = {"model", "coefficients", "r2", "residual_sd_percent", "n", "basis"}
            return cls(tuple(c), float(d.get("r2", np.nan)), float(d.get("residual_sd_percent", np.nan)),
                       int(d.get("n", 0)), str(d.get("basis", "voxels")), {k: v for k, v in d.items() if k not in known})
        except (KeyError, TypeError, ValueError):
            raise InputError("calibration: expected a JSON object with 3 'coefficients' (c0, c1, c2); "
                             "use a file written by 'napari-myelin calibrate'.") from None

    def save(self, path: str | os.PathLike) -> Path:
        """Write the calibration as JSON (atomically)."""
        from napari_myelin.io.volume import atomic_write_bytes

        path = Path(path)
        atomic_write_bytes(path, json.dumps(self.to_dict(), indent=2).encode("utf-8"))
        return path

    @classmethod
    def load(cls, source) -> "MwfCalibration":
        """Read a calibration from a JSON file path or a dict."""
        if isinstance(source, dict):
            return cls.from_dict(source)
        path = Path(source)
        if not path.exists():
            raise InputError(f"{path}: calibration file not found; write one with 'napari-myelin calibrate'.")
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except json.JSONDecodeError:
            raise InputError(f"{path}: not valid JSON; use a file written by 'napari-myelin calibrate'.") from None


@dataclass
class CalibrationResult(Maps):
    """:class:`Maps` with ``mwf_qpm`` (%) plus the fitted :class:`MwfCalibration` and the points fitted."""

    calibration: MwfCalibration | None = None
    points: tuple[np.ndarray, np.ndarray] | None = None  # (qpm, mwf %) fitted, for plots


def _calibration_mask(mwf, q, mask):
    """Voxels to fit: ``mask`` (default: MWF > 0) where both maps are finite."""
    if mwf.shape != q.shape:
        raise InputError(f"calibration: MWF grid {mwf.shape} differs from QPM grid {q.shape}; register them to one grid first.")
    ok = np.isfinite(mwf) & np.isfinite(q)
    if mask is None:
        m = ok & (mwf > 0)
    else:
        m = np.asarray(mask).astype(bool)
        if m.shape != q.shape:
            raise InputError(f"calibration mask: shape {m.shape} differs from the maps {q.shape}; use a mask on the same grid.")
        m &= ok
    return m


def _mwf_scale(mwf, m, mwf_units):
    """Factor that turns the MWF map into percent (``mwf_units`` "auto": percent when its 99th percentile > 1.5)."""
    if mwf_units == "auto":
        scale = 1.0 if (m.any() and np.percentile(mwf[m], 99) > 1.5) else 100.0
    elif mwf_units in ("percent", "%"):
        scale = 1.0
    elif mwf_units == "fraction":
        scale = 100.0
    else:
        raise InputError(f"mwf_units: '{mwf_units}' is not known; use 'auto', 'fraction' or 'percent'.")
    return scale


def _calibration_points(q, y_all, m, labels):
    """Points to fit: the voxels of the mask, or one mean per nonzero label inside it.

    Returns
    -------
    (ndarray, ndarray, str)
        QPM values, MWF values (%) and the basis (``"voxels"`` or ``"tract means"``).
    """
    if labels is not None:
        lab = np.asarray(labels)
        if lab.shape != q.shape:
            raise InputError(f"calibration labels: shape {lab.shape} differs from the maps {q.shape}; use labels on the same grid.")
        lab = np.where(m, lab.astype(np.int64), 0)
        ids = np.unique(lab[lab > 0])
        x = np.array([q[lab == i].mean() for i in ids])  # one mean per tract (few tracts)
        y = np.array([y_all[lab == i].mean() for i in ids])
        basis = "tract means"
    else:
        x, y = q[m], y_all[m]
        basis = "voxels"
    return x, y, basis


def _fit_quadratic(x, y, basis, min_points):
    """Least-squares ``y = c0 + c1 x + c2 x^2`` with its R^2 and residual SD, as an :class:`MwfCalibration`."""
    if x.size < min_points:
        raise InputError(
            f"calibration: only {x.size} {basis} to fit 3 coefficients; give a larger white-matter mask (at least {min_points})."
        )
    if np.ptp(x) <= 0:
        raise InputError("calibration: the QPM map is constant over the mask; check that the right map was given.")
    v = np.stack([np.ones_like(x), x, x * x], axis=-1)
    coef, *_ = np.linalg.lstsq(v, y, rcond=None)
    fit = v @ coef
    ss_res = float(((y - fit) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
    sd = float(np.sqrt(ss_res / max(x.size - 3, 1)))
    return MwfCalibration(tuple(float(c) for c in coef), r2, sd, int(x.size), basis)


def fit_mwf_calibration(
    mwf,
    qpm,
    mask=None,
    *,
    labels=None,
    mwf_units: str = "auto",
    min_points: int = 4,
    progress=None,
    cancel=None,
) -> CalibrationResult:
    """Fit ``MWF[%] = c0 + c1 M + c2 M^2`` between an MWF map and a QPM myelin map ``M``.

    Ordinary least squares on the white-matter voxels (``mask``), or, with ``labels``, on the
    per-tract means (each nonzero label inside the mask is one point). Reports the coefficients,
    ``R^2 = 1 - SS_res/SS_tot`` and the residual SD ``sqrt(SS_res/(n - 3))``; the result holds the
    calibrated map ``mwf_qpm = c0 + c1 M + c2 M^2`` (%) over the whole grid (0 where ``M`` is not finite).

    Parameters
    ----------
    mwf : array_like
        MWF map (fraction 0-1, or percent; see ``mwf_units``).
    qpm : array_like
        QPM myelin map on the same grid.
    mask : array_like of bool, optional
        White-matter voxels to fit (default: every voxel where both maps are finite and MWF > 0).
    labels : array_like of int, optional
        Tract labels; fit on tract means instead of voxels.
    mwf_units : {"auto", "fraction", "percent"}
        ``"auto"``: percent when the 99th percentile of MWF in the mask exceeds 1.5.
    min_points : int
        Fewest points accepted (voxels or tracts).

    Returns
    -------
    CalibrationResult
        ``result["mwf_qpm"]`` (%), ``result.calibration`` (:class:`MwfCalibration`, ``save()`` to JSON,
        ``apply()`` to another map), ``result.points`` (the fitted points).
    """
    mwf = np.asarray(mwf, dtype=float)
    q = np.asarray(qpm, dtype=float)
    m = _calibration_mask(mwf, q, mask)
    step(progress, cancel, 0.0, "calibrating QPM to MWF")
    y_all = mwf * _mwf_scale(mwf, m, mwf_units)
    x, y, basis = _calibration_points(q, y_all, m, labels)
    cal = _fit_quadratic(x, y, basis, min_points)
    mwf_qpm = np.where(np.isfinite(q), cal.apply(np.nan_to_num(q)), 0.0)
    step(progress, cancel, 1.0, "calibration done")
    return CalibrationResult(
        {"mwf_qpm": mwf_qpm},
        units={"mwf_qpm": "%"},
        descriptions={"mwf_qpm": "MWF-calibrated QPM myelin map, MWF = c0 + c1 M + c2 M^2 (%)"},
        method="quadratic MWF calibration",
        parameters={"calibration": cal.to_dict()},
        calibration=cal,
        points=(x, y),
    )
