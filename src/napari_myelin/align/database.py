"""Standard-brain database: voxel-wise mean and SD maps of several subjects in template space.

Each subject contributes maps already on the template grid (``napari-myelin register --apply``).
For every parameter (``mwf``, ``fa``, ``chi``, ``t1`` ...) the database holds, voxel by voxel,

.. math::

    \\bar x(v) = \\frac{1}{n(v)} \\sum_s x_s(v), \\qquad
    \\mathrm{SD}(v) = \\sqrt{\\frac{1}{n(v) - 1} \\sum_s (x_s(v) - \\bar x(v))^2},

over the ``n(v)`` subjects with a valid (finite, non-zero, inside the mask) value at ``v``,
optionally after VBM-style Gaussian smoothing of each subject's map. Smoothing is normalised
within the valid voxels so the background does not leak into the brain edge:

.. math::

    \\tilde x = \\frac{G_\\sigma * (m\\,x)}{G_\\sigma * m}, \\qquad \\sigma = \\mathrm{FWHM} / \\sqrt{8 \\ln 2},

with ``m`` the subject's valid mask and ``sigma`` converted to voxels per axis.

The white-matter MWF atlas of the original integrated-myelin method is the mean of the
MWF-calibrated QPM maps (``mwf_qpm``) inside the template white matter (probability >= 0.5):
``wm_mwf_atlas.nii.gz``.

Saved layout (``save``): ``mean_<param>.nii.gz``, ``sd_<param>.nii.gz``, ``n_<param>.nii.gz``
(+ JSON sidecars), ``wm_mwf_atlas.nii.gz`` when ``mwf_qpm`` is present, ``subjects.tsv`` (one
subject per row with the parameters it contributed) and ``database.json``.

References
----------
Ashburner J., Friston K.J., "Voxel-based morphometry - the methods", NeuroImage 11, 805-821 (2000).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

from napari_myelin.utils.errors import InputError
from napari_myelin.utils.progress import ProgressFn, step
from napari_myelin.io.resample import resample_to_grid
from napari_myelin.io.volume import (
    Volume, atomic_write_bytes, check_output_folder, is_nifti, load_volume, provenance, save_volume,
    strip_nifti_suffix,
)

#: Name of the map whose mean in the white matter is the WM MWF atlas.
MWF_ATLAS_SOURCE = "mwf_qpm"
#: Files in a subject folder that are not parameter maps.
NOT_MAPS = ("warped", "tracts", "mask", "labels")
FWHM_TO_SIGMA = 1.0 / np.sqrt(8.0 * np.log(2.0))


@dataclass
class Database:
    """Voxel-wise statistics of several subjects on one template grid.

    Attributes
    ----------
    mean, sd : dict of str to ndarray
        Mean and sample standard deviation (``ddof=1``; 0 where fewer than 2 subjects) per parameter.
    count : dict of str to ndarray
        Number of subjects with a valid value per voxel.
    subjects : list of str
        Subject names, in order.
    contributions : dict of str to list of str
        Parameters each subject contributed.
    reference : Volume
        The grid (affine, shape) of the maps.
    units : dict of str to str
        Units of each parameter (from the subjects' sidecars).
    fwhm_mm : float
        Smoothing applied (0: none).
    wm_mwf_atlas : ndarray or None
        Mean ``mwf_qpm`` inside the template white matter (0 outside).
    """

    mean: dict[str, np.ndarray]
    sd: dict[str, np.ndarray]
    count: dict[str, np.ndarray]
    subjects: list[str]
    contributions: dict[str, list[str]]
    reference: Volume
    units: dict[str, str] = field(default_factory=dict)
    fwhm_mm: float = 0.0
    wm_mwf_atlas: np.ndarray | None = None

    @property
    def parameters(self) -> list[str]:
        return list(self.mean)

    def zscore(self, volume: Volume | np.ndarray, parameter: str, min_subjects: int = 2) -> np.ndarray:
        """``(x - mean) / SD`` of a subject's map in template space (NaN where SD is 0 or n < min_subjects)."""
        if parameter not in self.mean:
            raise InputError(f"parameter '{parameter}': not in the database; it holds {', '.join(self.mean)}.")
        x = np.asarray(volume.data if isinstance(volume, Volume) else volume, dtype=float)
        if x.shape != self.mean[parameter].shape:
            raise InputError(f"{parameter}: the map has shape {x.shape}, the database {self.mean[parameter].shape}; "
                             "warp it to the template first (napari-myelin register --apply).")
        sd = self.sd[parameter]
        ok = (sd > 0) & (self.count[parameter] >= min_subjects)
        z = np.full(x.shape, np.nan)
        z[ok] = (x[ok] - self.mean[parameter][ok]) / sd[ok]
        return z

    def save(self, out_dir: str | os.PathLike, inputs: Sequence[str | os.PathLike] = ()) -> list[Path]:
        """Write the database (see the module docstring for the layout)."""
        out = check_output_folder(out_dir)
        inputs = [str(p) for p in inputs]
        params = {"fwhm_mm": self.fwhm_mm, "subjects": self.subjects}
        written = []
        for name in self.mean:
            u = self.units.get(name, "")
            for kind, arr, units, desc in (
                ("mean", self.mean[name], u, f"mean {name} over subjects"),
                ("sd", self.sd[name], u, f"standard deviation of {name} over subjects"),
                ("n", self.count[name].astype(np.int16), "subjects", f"number of subjects with a valid {name}"),
            ):
                side = provenance(units=units, description=desc, method="standard-brain database",
                                  parameters=params, extra={"Space": "template"})
                written.append(save_volume(arr, out / f"{kind}_{name}.nii.gz", self.reference.affine,
                                           sidecar=side, inputs=inputs))
        if self.wm_mwf_atlas is not None:
            side = provenance(units=self.units.get(MWF_ATLAS_SOURCE, "fraction"),
                              description="white-matter MWF atlas: mean MWF-calibrated QPM map in template WM",
                              method="standard-brain database", parameters=params, extra={"Space": "template"})
            written.append(save_volume(self.wm_mwf_atlas, out / "wm_mwf_atlas.nii.gz", self.reference.affine,
                                       sidecar=side, inputs=inputs))
        rows = [{"subject": s, "parameters": ",".join(self.contributions.get(s, []))} for s in self.subjects]
        tsv = out / "subjects.tsv"
        atomic_write_bytes(tsv, pd.DataFrame(rows, columns=["subject", "parameters"]).to_csv(sep="\t", index=False)
                           .encode("utf-8"))
        record = {"Parameters": self.parameters, "Units": self.units, "Subjects": self.subjects,
                  "FWHM_mm": self.fwhm_mm, "WMMWFAtlas": self.wm_mwf_atlas is not None}
        atomic_write_bytes(out / "database.json", json.dumps(record, indent=2).encode("utf-8"))
        return [*written, tsv, out / "database.json"]


def smooth(data: np.ndarray, fwhm_mm: float, zooms: Sequence[float], valid: np.ndarray | None = None) -> np.ndarray:
    """Gaussian smoothing normalised within ``valid`` voxels (see the module docstring).

    Parameters
    ----------
    data : ndarray
        3D map.
    fwhm_mm : float
        Full width at half maximum of the kernel (mm); 0 returns the data unchanged.
    zooms : sequence of float
        Voxel size (mm) per axis.
    valid : ndarray of bool, optional
        Voxels that carry data (default: finite ones). Output is NaN outside them.
    """
    data = np.asarray(data, dtype=float)
    valid = np.isfinite(data) if valid is None else (np.asarray(valid, bool) & np.isfinite(data))
    if fwhm_mm <= 0:
        return np.where(valid, data, np.nan)
    sigma = fwhm_mm * FWHM_TO_SIGMA / np.asarray(zooms, dtype=float)
    m = valid.astype(float)
    num = ndimage.gaussian_filter(np.where(valid, data, 0.0), sigma, mode="constant")
    den = ndimage.gaussian_filter(m, sigma, mode="constant")
    out = np.full(data.shape, np.nan)
    ok = valid & (den > 1e-6)
    out[ok] = num[ok] / den[ok]
    return out


def _on_grid(vol: Volume, reference: Volume) -> np.ndarray:
    if vol.shape[:3] == reference.shape[:3] and np.allclose(vol.affine, reference.affine, atol=1e-3):
        return np.asarray(vol.data, dtype=float)
    data, _ = resample_to_grid(vol, reference.affine, reference.shape[:3], order=1, cval=np.nan)
    return data


def _check_subjects(subjects: Mapping[str, Mapping[str, Volume]]) -> None:
    """Refuse no subject, a subject without maps, or a map that is not 3D."""
    if not subjects:
        raise InputError("no subject was given; the database needs at least one subject's maps.")
    for s in subjects:
        if not subjects[s]:
            raise InputError(f"subject '{s}': has no maps; give a folder of maps in template space.")
        for p, v in subjects[s].items():
            if np.ndim(v.data) != 3:
                raise InputError(f"subject '{s}', map '{p}': has shape {np.shape(v.data)}; the database needs 3D maps.")


def _wm_mwf_atlas(db: Database, wm_probability: Volume | None, reference: Volume, wm_threshold: float) -> np.ndarray:
    """Mean ``mwf_qpm`` inside the white matter (probability >= ``wm_threshold``), 0 elsewhere."""
    if wm_probability is None:
        from napari_myelin.align.atlas import load_tissue_probability

        wm_probability = load_tissue_probability("wm", 2)
    wm = _on_grid(wm_probability, reference)
    inside = np.nan_to_num(wm) >= wm_threshold
    return np.where(inside & (db.count[MWF_ATLAS_SOURCE] > 0), db.mean[MWF_ATLAS_SOURCE], 0.0).astype(np.float32)


def build_database(
    subjects: Mapping[str, Mapping[str, Volume]],
    *,
    fwhm_mm: float = 0.0,
    mask: Volume | np.ndarray | None = None,
    reference: Volume | None = None,
    wm_probability: Volume | None = None,
    wm_threshold: float = 0.5,
    progress: ProgressFn | None = None,
    cancel=None,
) -> Database:
    """Voxel-wise mean and SD maps per parameter over subjects in template space.

    Parameters
    ----------
    subjects : mapping of subject name to mapping of parameter name to Volume
        Each subject's maps on the template grid (3D). Maps on another grid are resampled
        (trilinear) onto ``reference``.
    fwhm_mm : float
        VBM-style Gaussian smoothing FWHM (mm) applied to each subject's map before averaging.
    mask : Volume or ndarray of bool, optional
        Voxels to use (e.g. the template brain mask); default every voxel.
    reference : Volume, optional
        Grid of the database; default the first subject's first map.
    wm_probability : Volume, optional
        White-matter probability on the template grid for the WM MWF atlas; default
        :func:`napari_myelin.align.atlas.load_tissue_probability` ("wm", 2 mm) resampled on the grid.
    wm_threshold : float
        WM probability threshold of the WM MWF atlas.

    Returns
    -------
    Database

    Raises
    ------
    InputError
        No subject, a subject without maps, or a map that is not 3D.
    """
    _check_subjects(subjects)
    names = list(subjects)
    if reference is None:
        reference = next(iter(subjects[names[0]].values()))
    shape = tuple(reference.shape[:3])
    if mask is None:
        mask_arr = np.ones(shape, bool)
    else:
        mask_arr = np.asarray(mask.data if isinstance(mask, Volume) else mask, bool)
        if mask_arr.shape != shape:
            raise InputError(f"mask: has shape {mask_arr.shape}, the maps {shape}; give a mask on the template grid.")
    params = list(dict.fromkeys(p for s in names for p in subjects[s]))
    units = {}
    zooms = reference.zooms
    db = Database({}, {}, {}, names, {s: list(subjects[s]) for s in names}, reference, units, float(fwhm_mm))
    total = len(params) * len(names)
    done = 0
    for p in params:
        acc = np.zeros(shape)
        acc2 = np.zeros(shape)
        n = np.zeros(shape, dtype=np.int32)
        values = []
        for s in names:
            vol = subjects[s].get(p)
            if vol is None:
                continue
            step(progress, cancel, done / total, f"{p}: subject {s}")
            done += 1
            units.setdefault(p, str(vol.metadata.get("Units", "")))
            data = _on_grid(vol, reference)
            valid = mask_arr & np.isfinite(data) & (data != 0)
            x = smooth(data, fwhm_mm, zooms, valid)
            ok = np.isfinite(x)
            values.append((x, ok))
            acc[ok] += x[ok]
            n += ok
        mean = np.divide(acc, n, out=np.zeros(shape), where=n > 0)
        for x, ok in values:  # two-pass variance (numerically stable)
            acc2[ok] += (x[ok] - mean[ok]) ** 2
        sd = np.sqrt(np.divide(acc2, n - 1, out=np.zeros(shape), where=n > 1))
        db.mean[p], db.sd[p], db.count[p] = mean.astype(np.float32), sd.astype(np.float32), n
    if MWF_ATLAS_SOURCE in db.mean:
        db.wm_mwf_atlas = _wm_mwf_atlas(db, wm_probability, reference, wm_threshold)
    step(progress, cancel, 1.0, f"database of {len(names)} subjects")
    return db


def load_subject_maps(folder: str | os.PathLike) -> dict[str, Volume]:
    """Every 3D parameter map (``<name>.nii.gz``) of a subject folder in template space.

    ``warped``, ``tracts``, ``mask``, ``labels`` and transform files are skipped.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder; give one folder of template-space maps per subject.")
    maps = {}
    for path in sorted(folder.iterdir()):
        if not is_nifti(path):
            continue
        name = strip_nifti_suffix(path.name)
        if name in NOT_MAPS or "Warp" in name or name.startswith(("to_template", "coreg")):
            continue
        vol = load_volume(path)
        if vol.data.ndim == 3:
            maps[name] = vol
    if not maps:
        raise InputError(f"{folder}: holds no 3D map (.nii.gz); write the subject's maps there with "
                         "'napari-myelin register --apply'.")
    return maps


def load_database(folder: str | os.PathLike) -> Database:
    """Read a database written by :meth:`Database.save`."""
    folder = Path(folder)
    record_path = folder / "database.json"
    if not record_path.exists():
        raise InputError(f"{folder}: has no database.json; give a folder written by 'napari-myelin database'.")
    record = json.loads(record_path.read_text(encoding="utf-8"))
    mean, sd, count = {}, {}, {}
    reference = None
    for p in record["Parameters"]:
        m = load_volume(folder / f"mean_{p}.nii.gz")
        reference = reference or m
        mean[p] = np.asarray(m.data, dtype=np.float32)
        sd[p] = np.asarray(load_volume(folder / f"sd_{p}.nii.gz").data, dtype=np.float32)
        count[p] = np.asarray(load_volume(folder / f"n_{p}.nii.gz").data, dtype=np.int32)
    table = pd.read_csv(folder / "subjects.tsv", sep="\t", keep_default_na=False)
    contributions = {r.subject: [x for x in str(r.parameters).split(",") if x] for r in table.itertuples()}
    atlas_path = folder / "wm_mwf_atlas.nii.gz"
    atlas = np.asarray(load_volume(atlas_path).data, dtype=np.float32) if atlas_path.exists() else None
    ref = Volume(np.zeros(reference.shape[:3], np.float32), reference.affine, None, {}, None)
    return Database(mean, sd, count, list(record["Subjects"]), contributions, ref, dict(record.get("Units", {})),
                    float(record.get("FWHM_mm", 0.0)), atlas)
