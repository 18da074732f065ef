"""Normative models from the user's own controls, built from the derivatives ``run`` and ``cohort`` write.

:func:`build_normative_model` reads, for the controls selected in ``participants.tsv``:

* ``DERIV/sub-XX/tracts.csv``: the tract means of every map (estimator outputs, never truth maps), fitted
  by one linear model per tract and map (:mod:`napari_myelin.stats.normative_model`);
* the JSON sidecars of the maps those rows came from (the ``source`` column): units, method and the
  estimator settings the controls share, recorded so that a subject processed otherwise is refused;
* ``DERIV/sub-XX/anat/sub-XX_space-MNI152NLin2009aSym_<map>.nii.gz``: the template-space maps of the
  voxelwise model (:mod:`napari_myelin.stats.normative_voxel`);

and writes the model folder (``model.json``, ``tracts.csv``, ``multivariate.csv``, ``voxelwise/``).
``model.json`` records the format version, a model ID (SHA-256 of its content), the software version,
the controls (query, subjects, covariate ranges), the atlas, per map the units, method and shared
settings, and ``Synthetic``: true when the controls are simulated (the raw sidecars of the phantom or of the
independent simulator say so, or
``synthetic=True``), so that every output scored with it says SYNTHETIC.

:func:`score_subject_folder` scores one subject's ``tracts.csv`` (what the pipeline's ``stats`` step
writes as ``tracts_z.csv``).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from napari_myelin import __version__
from napari_myelin.io.volume import read_sidecar
from napari_myelin.stats.normative import SubjectScores, score_subject
from napari_myelin.stats.normative_design import default_covariates, make_design
from napari_myelin.stats.normative_model import (NormativeModel, fit_tract_model, load_normative_model,
                                                 model_from_table, save_normative_model, shared_settings)
from napari_myelin.stats.normative_voxel import FWHM_MM, MYELIN_SIGN, fit_voxel_model, save_voxel_model
from napari_myelin.stats.tables import read_stats_csv, write_csv
from napari_myelin.utils.errors import InputError
from napari_myelin.utils.progress import ProgressFn, step, subrange
from napari_myelin.workflows.cohort_group import read_participants
from napari_myelin.workflows.pipeline import SHIPPED_NORMATIVE, TEMPLATE_SPACE

#: The name that selects the shipped demo model (the SYNTHETIC table of phantom truth maps).
DEMO_MODEL = "synthetic-demo"
#: Names of the simulators in the raw sidecars' GeneratedBy (the project phantom, the independent simulator).
SIMULATORS = ("napari-myelin phantom", "napari-myelin independent simulator")


def subject_folders(deriv: str | os.PathLike) -> dict[str, Path]:
    """``sub-XX`` folders of a derivatives folder that hold a ``tracts.csv``."""
    root = Path(deriv)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder; give the derivatives folder of 'napari-myelin run' or 'cohort'.")
    found = {p.name: p for p in sorted(root.glob("sub-*")) if (p / "tracts.csv").is_file()}
    if not found:
        raise InputError(f"{root}: holds no sub-XX/tracts.csv; run 'napari-myelin run' or 'cohort' into it first.")
    return found


def _participants(deriv: Path, participants) -> pd.DataFrame | None:
    if participants is not None:
        return read_participants(participants)
    for candidate in (deriv / "participants.tsv", deriv.parent / "participants.tsv"):
        if candidate.is_file():
            return read_participants(candidate)
    return None


def select_controls(deriv: Path, participants, controls: str | None, covariates: Sequence[str] | None):
    """The controls' rows of participants.tsv (``subject`` + covariates) that have derivatives, and the
    covariate names."""
    folders = subject_folders(deriv)
    table = _participants(deriv, participants)
    if table is None:
        if controls or covariates:
            raise InputError(f"{deriv}: no participants.tsv beside it; give --participants BIDS/participants.tsv.")
        return pd.DataFrame({"subject": list(folders)}), []
    if controls:
        try:
            table = table.query(controls, engine="python")
        except Exception as exc:  # pandas raises many kinds for a bad expression
            raise InputError(f"--controls \"{controls}\": not a valid selection of participants.tsv "
                             f"({type(exc).__name__}: {exc}).") from None
    chosen = table[table["subject"].isin(folders)].reset_index(drop=True)
    if chosen.empty:
        raise InputError(f"--controls \"{controls}\": selects no subject with derivatives in {deriv}.")
    names = list(covariates) if covariates is not None else default_covariates(chosen)
    return chosen, names


def map_settings(table: pd.DataFrame, root: Path) -> dict[str, dict]:
    """Per map, the sidecar (``Units``, ``Method``, ``Parameters``) of the file its rows came from."""
    out = {}
    for name, source in table.drop_duplicates("map")[["map", "source"]].itertuples(index=False):
        path = Path(str(source))
        if not path.is_file():  # a moved derivatives folder: the same file name under the subject
            matches = list(root.glob(f"*/{path.name}"))
            path = matches[0] if matches else path
        out[name] = read_sidecar(path) if path.is_file() else {}
    return out


def _is_synthetic(root: Path) -> bool:
    """True when the raw inputs of a subject (listed in its stats step manifest) were simulated (:data:`SIMULATORS`)."""
    manifest = root / ".napari-myelin" / "steps" / "stats.json"
    if not manifest.is_file():
        return False
    inputs = json.loads(manifest.read_text(encoding="utf-8")).get("key", {}).get("inputs", {})
    for raw in inputs:
        if raw.endswith(".nii.gz") and Path(raw).is_file():
            gen = read_sidecar(Path(raw)).get("GeneratedBy") or {}
            return isinstance(gen, dict) and gen.get("Name") in SIMULATORS
    return False


def _record(deriv: Path, chosen: pd.DataFrame, controls: str | None, values: pd.DataFrame,
            sidecars: dict[str, list[dict]], synthetic: bool, name: str | None) -> dict:
    """The ``model.json`` entries of a tract model."""
    tracts_manifest = deriv / chosen["subject"].iloc[0] / ".napari-myelin" / "steps" / "tracts.json"
    atlas = "unknown"
    if tracts_manifest.is_file():
        atlas = json.loads(tracts_manifest.read_text()).get("key", {}).get("parameters", {}).get("atlas", atlas)
    maps = {m: {"Units": str(values.loc[values["map"] == m, "units"].iloc[0]),
                "Method": str(sides[0].get("Method", "")) if sides else "",
                "Settings": shared_settings([s.get("Parameters", {}) for s in sides])}
            for m, sides in sidecars.items()}
    return {"Name": name or f"controls of {deriv.name}", "Created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "Software": {"Name": "napari-myelin", "Version": __version__}, "Synthetic": bool(synthetic),
            "Controls": {"Query": controls or "all subjects", "Derivatives": str(deriv), "N": len(chosen)},
            "Atlas": {"Name": atlas, "Tracts": int(values["label"].nunique())}, "Maps": maps,
            "Statistic": "mean", "Alpha": 0.05}


def build_normative_model(deriv: str | os.PathLike, out: str | os.PathLike, *, controls: str | None = None,
                          covariates: Sequence[str] | None = None, participants: str | os.PathLike | None = None,
                          voxelwise: bool = True, fwhm_mm: float = FWHM_MM, synthetic: bool | None = None,
                          name: str | None = None, backend: str = "ols", progress: ProgressFn | None = None,
                          cancel=None) -> NormativeModel:
    """Build a normative model from the controls of a derivatives folder and write it to ``out``.

    Parameters
    ----------
    deriv : path
        Derivatives of ``napari-myelin run`` / ``cohort`` (``sub-XX/tracts.csv``, template-space maps).
    out : path
        Model folder to write (a previous model there is replaced atomically).
    controls : str, optional
        Selection of the controls among the rows of participants.tsv, a pandas query such as
        ``"group == 'control'"``; default every subject.
    covariates : sequence of str, optional
        Columns of participants.tsv to model (default: age, sex and site, those present and not constant).
        ``[]`` for none.
    participants : path, optional
        participants.tsv (default ``DERIV/participants.tsv``, else beside DERIV).
    voxelwise : bool
        Also build the voxelwise model in template space.
    fwhm_mm : float
        Smoothing of the voxelwise model (mm).
    synthetic : bool, optional
        Label the model SYNTHETIC (default: when the controls' raw data come from the phantom).
    name : str, optional
        Name of the model in its outputs.
    backend : {"ols", "pcn"}
        Tract model: the closed form (default) or PCNtoolkit's Bayesian linear regression (optional extra
        ``normative-pcn``; :mod:`napari_myelin.stats.normative_pcn`).

    Returns
    -------
    NormativeModel

    Raises
    ------
    InputError
        No derivatives, an invalid selection, too few controls for the covariates, a missing covariate,
        or maps processed differently between controls.
    """
    deriv = Path(deriv)
    chosen, names = select_controls(deriv, participants, controls, covariates)
    design = make_design(chosen, names)
    if len(chosen) < len(design.columns) + 2:
        raise InputError(f"normative: {len(chosen)} controls for {len(design.columns)} parameters "
                         f"({', '.join(design.columns)}); give at least {len(design.columns) + 2} controls.")
    step(progress, cancel, 0.0, f"reading {len(chosen)} controls")
    roots = [deriv / s for s in chosen["subject"]]
    values = pd.concat([read_stats_csv(r / "tracts.csv").assign(subject=r.name) for r in roots], ignore_index=True)
    sides = [map_settings(read_stats_csv(r / "tracts.csv"), r) for r in roots]
    sidecars = {m: [s[m] for s in sides if m in s] for m in values["map"].unique()}
    synthetic = _is_synthetic(roots[0]) if synthetic is None else synthetic
    info = _record(deriv, chosen, controls, values, sidecars, synthetic, name)
    model = fit_tract_model(values, chosen, design, info, backend=backend)
    extra = {}
    if voxelwise:
        vox = _voxel_model(roots, design.matrix(chosen), fwhm_mm, subrange(progress, 0.1, 0.95), cancel)
        model.info["Voxelwise"] = {"Maps": vox.maps, "FWHM_mm": vox.fwhm_mm, "Space": TEMPLATE_SPACE}
        description = f"{model.label} voxelwise normative model"
        extra["voxelwise"] = lambda tmp: save_voxel_model(vox, tmp / "voxelwise", description)
    step(progress, cancel, 0.95, "writing the model")
    save_normative_model(model, out, extra)
    step(progress, cancel, 1.0, f"model of {len(chosen)} controls: {out}")
    return model


def _voxel_model(roots: Sequence[Path], x: np.ndarray, fwhm_mm: float, progress, cancel):
    """The voxelwise model of the controls' template-space maps (2 mm MNI grid)."""
    from napari_myelin.align.atlas import load_brain_mask, load_template, load_tissue_probability

    reference = load_template(2)
    maps = [{m: p for m in MYELIN_SIGN
             if (p := r / "anat" / f"{r.name}_space-{TEMPLATE_SPACE}_{m}.nii.gz").is_file()} for r in roots]
    if not any(maps):
        raise InputError(f"{roots[0].parent}: the controls have no template-space maps "
                         f"(sub-XX_space-{TEMPLATE_SPACE}_<map>.nii.gz); build with --no-voxelwise.")
    wm = np.asarray(load_tissue_probability("wm", 2).data) >= 0.5
    vox = fit_voxel_model(maps, x, reference=reference, mask=np.asarray(load_brain_mask(2).data, bool), wm=wm,
                          fwhm_mm=fwhm_mm, progress=progress, cancel=cancel)
    first = next(m for m in maps if m)
    vox.units = {m: str(read_sidecar(first[m]).get("Units", "")) for m in vox.maps if m in first}
    return vox


def open_model(model: str | os.PathLike | NormativeModel) -> NormativeModel:
    """A model given by folder, by :data:`DEMO_MODEL` (the shipped SYNTHETIC table) or already loaded."""
    if isinstance(model, NormativeModel):
        return model
    if str(model) == DEMO_MODEL:
        from napari_myelin.stats.normative import read_normative

        return model_from_table(read_normative(SHIPPED_NORMATIVE),
                                {"Name": "SYNTHETIC demo table (phantom truth maps, not estimator outputs)",
                                 "Synthetic": True, "Statistic": "mean"})
    return load_normative_model(model)


def subject_covariates(subject: str, given: Mapping[str, object] | None = None,
                       participants: str | os.PathLike | None = None) -> dict:
    """The covariates of ``sub-XX``: its row of participants.tsv (when given and listing it), updated by ``given``."""
    values: dict = {}
    if participants is not None and Path(participants).is_file():
        table = read_participants(participants).set_index("subject")
        if subject in table.index:
            values = {k: v for k, v in table.loc[subject].to_dict().items() if not pd.isna(v)}
    values.update(given or {})
    return values


def score_subject_folder(root: str | os.PathLike, model: NormativeModel, covariates: Mapping | None = None, *,
                         alpha: float | None = None) -> SubjectScores:
    """Score ``root/tracts.csv`` (one subject of ``run``) with ``model``: its sidecars' settings are checked."""
    root = Path(root)
    table = read_stats_csv(root / "tracts.csv")
    settings = {m: side.get("Parameters", {}) for m, side in map_settings(table, root).items()}
    return score_subject(table, model, covariates, alpha=alpha or float(model.info.get("Alpha", 0.05)),
                         settings=settings)


@dataclass
class Scoring:
    """A model and a subject's covariates, for the pipeline's ``stats`` step."""

    model: NormativeModel
    covariates: dict

    @property
    def parameters(self) -> dict:
        """Step parameters: changing the model or the covariates redoes the step."""
        return {"normative": self.model.model_id, "covariates": {k: str(v) for k, v in self.covariates.items()}}


def prepare_scoring(normative, covariates: Mapping | None, subject: str,
                    participants: str | os.PathLike | None) -> Scoring | None:
    """Open the model and gather ``sub-XX``'s covariates before any work (``None`` without a model).

    Raises
    ------
    InputError
        Not a model, or a covariate the model needs is missing or has a level the controls do not have.
    """
    if normative is None:
        return None
    model = open_model(normative)
    values = subject_covariates(subject, covariates, participants)
    for note in model.design.check_subject(values, who=subject):
        warnings.warn(note, stacklevel=2)
    return Scoring(model, {k: values[k] for k in model.design.names})


def write_subject_scores(root: Path, scoring: Scoring | None) -> list[Path]:
    """``root/tracts_z.csv`` scored with the model; without a model, no z-scores and no flags (a previous
    ``tracts_z.csv`` is removed)."""
    path = root / "tracts_z.csv"
    if scoring is None:
        path.unlink(missing_ok=True)
        return []
    scores = score_subject_folder(root, scoring.model, scoring.covariates)
    for note in scores.messages:
        warnings.warn(note, stacklevel=2)
    return [write_csv(scores.rows, path)]
