"""The NAWM abnormality map of one subject: voxelwise z-maps in native space and their combination.

:func:`abnormality_map` works on a subject folder written by ``napari-myelin run`` (``DERIV/sub-XX``):

1. the registrations saved in ``xfm/`` (no image is registered again): the subject reference grid (the
   grid without a ``coreg_<grid>`` transform) and the transform to the template;
2. each map of the model's voxelwise part (``mwf``, ``fa``, ``mk``, ``qpm_myelin``, ``chi``, ``imwf``,
   ``mtsat``, ``mtr``) is read on its native grid and brought onto the reference grid (rigid, linear), then
   smoothed with the model's FWHM;
3. the model's template maps (coefficients, residual SD, :math:`n`, :math:`G^{-1}`) are brought onto the
   reference grid by the inverse warp (linear);
4. :func:`~napari_myelin.stats.normative_voxel.predictive_z_map` gives one z-map per map,
   :func:`~napari_myelin.stats.normative_voxel.abnormality_score` their directional combination
   :math:`A`, and :func:`~napari_myelin.stats.normative_voxel.abnormal_voxels` the white-matter voxels
   (template WM probability >= 0.5, brought to native space) with FDR :math:`q \\le \\alpha`;
5. the abnormal volume per tract (native tract labels of the reference grid).

Outputs (with ``write=True``; their sidecars name the model, SYNTHETIC when it is)::

    sub-XX/anat/sub-XX_space-<ref>_z_<map>.nii.gz      predictive z of each map
    sub-XX/anat/sub-XX_space-<ref>_abnormality.nii.gz  A (z units; > 0 = less myelin than predicted)
    sub-XX/anat/sub-XX_space-<ref>_abnormal_wm.nii.gz  1 = abnormal white matter (FDR q <= alpha)
    sub-XX/abnormal_tracts.csv                         abnormal volume per tract
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from napari_myelin.align.database import smooth
from napari_myelin.align.runner import saved_registration
from napari_myelin.io.volume import Volume, load_volume, save_volume
from napari_myelin.stats.normative_voxel import (abnormal_voxels, abnormality_score, load_voxel_model,
                                                 predictive_z_map, tract_volumes)
from napari_myelin.stats.tables import write_csv
from napari_myelin.utils.errors import InputError
from napari_myelin.utils.progress import ProgressFn, step
from napari_myelin.workflows.normative import open_model, subject_covariates
from napari_myelin.workflows.pipeline import GRIDS

#: Native grid and file name of each voxelwise map (``None``: the subject reference grid).
NATIVE_SOURCES = {"mwf": ("mese", "mwf"), "fa": ("dwi", "fa"), "mk": ("dwi", "mk"), "qpm_myelin": ("vfa", "qpm_myelin"),
                  "chi": ("megre", "chi"), "imwf": (None, "imwf"), "mtsat": ("mts", "mtsat"), "mtr": ("mts", "mtr")}
#: Model voxels whose interpolated validity is below this are left out (edge of the controls' brains).
MIN_VALID = 0.99


@dataclass
class AbnormalityResult:
    """What :func:`abnormality_map` computed, on the subject reference grid ``reference``."""

    subject: str
    grid: str
    reference: Volume
    z: dict[str, np.ndarray]
    score: np.ndarray
    q: np.ndarray
    abnormal: np.ndarray
    tracts: pd.DataFrame
    model_label: str
    files: list[Path] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)


class _Native:
    """A subject folder of ``run``: its grids, reference grid and saved transforms."""

    def __init__(self, root: Path) -> None:
        if not re.match(r"sub-[A-Za-z0-9]+$", root.name):
            found = sorted(p for p in root.glob("sub-*") if (p / "xfm").is_dir()) if root.is_dir() else []
            if len(found) != 1:
                raise InputError(f"{root}: give one subject's results folder (DERIV/sub-XX written by 'napari-myelin run').")
            root = found[0]
        self.root, self.subject = root, root.name
        self.grids = {g: p for g in GRIDS if (p := self.path(g, "tracts")).is_file()}
        refs = [g for g in self.grids if not (root / "xfm" / f"coreg_{g}.json").is_file()]
        if not self.grids or len(refs) != 1:
            raise InputError(f"{root}: has no complete 'napari-myelin run' output (tract labels and xfm/); "
                             "run the pipeline on the subject first.")
        self.ref = refs[0]
        self.reference = load_volume(self.grids[self.ref])

    def path(self, grid: str, name: str, suffix: str = ".nii.gz") -> Path:
        return self.root / GRIDS.get(grid, "anat") / f"{self.subject}_space-{grid}_{name}{suffix}"

    def to_template(self):
        from napari_myelin.align.atlas import load_template

        return saved_registration(self.root / "xfm", "to_template", load_template(2), self.reference)

    def on_reference(self, grid: str, vol: Volume) -> Volume:
        """A native map of ``grid`` on the reference grid (rigid, linear)."""
        if grid == self.ref:
            return vol
        moving = load_volume(self.grids[grid])
        return saved_registration(self.root / "xfm", f"coreg_{grid}", self.reference, moving).apply(vol, "linear")


def _model_on_native(vm, name: str, reg, reference: Volume) -> dict[str, np.ndarray]:
    """The voxelwise model of one map brought onto the reference grid by the inverse warp."""
    valid = np.isfinite(vm.sd[name]).astype(np.float32)
    stack = np.concatenate([np.nan_to_num(vm.beta[name]), np.nan_to_num(vm.ginv[name]),
                            np.nan_to_num(vm.sd[name])[..., None], vm.n[name][..., None].astype(np.float32),
                            valid[..., None]], axis=-1)
    native = reg.to_native(Volume(stack.astype(np.float32), vm.affine, None, {}, None), "linear").data
    p, q = vm.beta[name].shape[-1], vm.ginv[name].shape[-1]
    ok = native[..., -1] >= MIN_VALID
    sd = np.where(ok, native[..., p + q], np.nan)
    return {"beta": native[..., :p], "ginv": native[..., p:p + q], "sd": sd, "n": native[..., p + q + 1]}


def _z_maps(sub: _Native, vm, x0: np.ndarray, progress, cancel) -> tuple[dict[str, np.ndarray], list[str]]:
    """Predictive z of every voxelwise map the subject has, on the reference grid."""
    reg = sub.to_template()
    z, notes = {}, []
    for k, name in enumerate(vm.maps):
        step(progress, cancel, 0.1 + 0.7 * k / len(vm.maps), f"z-map of {name}")
        grid, file = NATIVE_SOURCES.get(name, (None, name))
        grid = grid or sub.ref
        path = sub.path(grid, file)
        if grid not in sub.grids or not path.is_file():
            notes.append(f"{sub.subject}: has no native '{name}' map; the abnormality score leaves it out.")
            continue
        vol = sub.on_reference(grid, load_volume(path))
        data = np.asarray(vol.data, float)
        y = smooth(data, vm.fwhm_mm, sub.reference.zooms, np.isfinite(data) & (data != 0))
        model = _model_on_native(vm, name, reg, sub.reference)
        z[name] = predictive_z_map(y, model["beta"], model["sd"], model["n"], model["ginv"], x0).astype(np.float32)
    return z, notes


def abnormality_map(results: str | os.PathLike, normative, covariates: Mapping | None = None, *,
                    alpha: float = 0.05, participants: str | os.PathLike | None = None, write: bool = True,
                    progress: ProgressFn | None = None, cancel=None) -> AbnormalityResult:
    """Voxelwise z-maps, the abnormality score and the abnormal-WM label map of one subject (module docstring).

    Parameters
    ----------
    results : path
        The subject's folder of ``napari-myelin run`` (``DERIV/sub-XX``; a DERIV holding one subject also works).
    normative : path or NormativeModel
        A model with a voxelwise part (``napari-myelin normative build``).
    covariates : mapping, optional
        The subject's covariates (update its row of ``participants``).
    alpha : float
        False-discovery rate of the abnormal-WM voxels.
    participants : path, optional
        participants.tsv listing the subject (default: beside DERIV, when present).
    write : bool
        Write the maps and ``abnormal_tracts.csv`` into the subject folder.

    Returns
    -------
    AbnormalityResult

    Raises
    ------
    InputError
        Not a subject folder of ``run``, a model without voxelwise maps, missing covariates, or no map in
        common with the model.
    """
    from napari_myelin.align.atlas import load_tissue_probability
    from napari_myelin.io.lut import read_lut

    sub = _Native(Path(results))
    model = open_model(normative)
    if model.folder is None or not model.voxelwise:
        raise InputError(f"normative model {model.label}: has no voxelwise maps; build one with "
                         "'napari-myelin normative build' (without --no-voxelwise).")
    vm = load_voxel_model(model.folder / "voxelwise")
    participants = participants or sub.root.parent / "participants.tsv"
    values = subject_covariates(sub.subject, covariates, participants)
    notes = model.design.check_subject(values, who=sub.subject)
    x0 = model.design.matrix(pd.DataFrame([values], columns=model.design.names))[0]
    step(progress, cancel, 0.05, "reading the saved transforms")
    z, more = _z_maps(sub, vm, x0, progress, cancel)
    score = abnormality_score(z, vm.maps, vm.correlation).astype(np.float32)
    step(progress, cancel, 0.85, "abnormal white matter")
    wm_t = load_tissue_probability("wm", 2)
    wm = np.asarray(sub.to_template().to_native(wm_t, "linear").data) >= 0.5
    q, abnormal = abnormal_voxels(score, wm, alpha)
    lut = read_lut(sub.path(sub.ref, "tracts", ".tsv"))
    voxel_mm3 = float(abs(np.linalg.det(sub.reference.affine[:3, :3])))
    tracts = tract_volumes(abnormal, np.asarray(sub.reference.data), lut, voxel_mm3, score)
    tracts.insert(0, "subject", sub.subject)
    tracts["normative_model"] = model.label
    result = AbnormalityResult(sub.subject, sub.ref, sub.reference, z, score, q, abnormal, tracts, model.label,
                               messages=notes + more)
    if write:
        result.files = _write(sub, result, model, alpha)
    step(progress, cancel, 1.0, f"{int(abnormal.sum())} abnormal WM voxels")
    return result


def _write(sub: _Native, result: AbnormalityResult, model, alpha: float) -> list[Path]:
    """The z-maps, the score, the label map (sidecars naming the model) and abnormal_tracts.csv."""
    about = {"NormativeModel": {"Name": model.label, "ModelID": model.model_id, "Synthetic": model.synthetic}}
    aff = sub.reference.affine
    files = [save_volume(arr, sub.path(sub.ref, f"z_{name}"), aff,
                         sidecar={"Units": "z", "Description": f"predictive z of {name} against {model.label}", **about})
             for name, arr in result.z.items()]
    files.append(save_volume(result.score, sub.path(sub.ref, "abnormality"), aff, sidecar={
        "Units": "z", "Description": f"abnormality score (combined z, > 0: less myelin than predicted) against "
                                     f"{model.label}", **about}))
    files.append(save_volume(result.abnormal.astype(np.uint8), sub.path(sub.ref, "abnormal_wm"), aff, sidecar={
        "Units": "label", "Description": f"abnormal white matter (FDR q <= {alpha:g}) against {model.label}", **about}))
    files.append(write_csv(result.tracts, sub.root / "abnormal_tracts.csv", layout="as-is"))
    return files
