"""What the subject report shows, read from a results folder of ``napari-myelin run`` (no drawing here).

:func:`read_results` collects, for one ``sub-XX`` folder: every native-space map
(``<anat|dwi>/sub-XX_space-<grid>_<map>.nii.gz``, 3D, with the ``Units``, ``Description`` and ``Method`` of
its sidecar), the masks, the tract statistics (``tracts.csv``, joined with ``tracts_z.csv`` when a normative
comparison was made), the quality figures the estimators and the registration recorded (SNR, fit residuals,
noise, phase sign, implausible voxels, registration similarity and overlap) and the provenance (software
versions, inputs with their SHA-256, the steps' parameters and times).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from napari_myelin.io.volume import load_volume, read_sidecar, strip_nifti_suffix
from napari_myelin.utils.errors import InputError

#: Order of the native grids in the report (others follow alphabetically).
GRID_ORDER = ("mese", "dwi", "megre", "vfa", "mts")

#: Files that are not shown as maps: tract labels and brain masks (drawn as edges on the QC page).
NOT_MAPS = ("tracts", "mask")

#: Quality figures recorded in the map sidecars: (grid, map, parameter path, what it is).
QC_PARAMETERS = (
    ("mese", "mwf", ("n_fitted",), "MESE voxels fitted (T2 distribution)"),
    ("megre", "chi", ("NoiseSigma",), "GRE noise sigma outside the brain (magnitude units)"),
    ("dwi", "fa", ("black_voxel_fraction",), "DKI voxels with implausible kurtosis (fraction)"),
    ("mts", "mtsat", ("n_invalid",), "MTsat voxels without a valid value"),
)


@dataclass
class MapEntry:
    """One native-space map: grid, name, file and what its sidecar says."""

    grid: str
    name: str
    path: Path
    units: str
    description: str
    method: str

    @property
    def title(self) -> str:
        return f"{self.name} ({self.units})" if self.units else self.name


@dataclass
class ResultsContent:
    """Everything the report shows for one subject (see the module docstring)."""

    subject_dir: Path
    subject: str
    maps: list[MapEntry]
    masks: dict[str, Path]
    tracts: pd.DataFrame | None
    normative: str | None
    qc: list[tuple[str, str]]
    registrations: list[dict]
    template_reference: Path | None
    provenance: dict = field(default_factory=dict)

    @property
    def synthetic(self) -> bool:
        """The tract z-scores come from the shipped SYNTHETIC table (phantom truth maps)."""
        return bool(self.normative) and "SYNTHETIC" in self.normative.upper()

    def grids(self) -> list[str]:
        found = {m.grid for m in self.maps}
        return [g for g in GRID_ORDER if g in found] + sorted(found - set(GRID_ORDER))

    def maps_on(self, grid: str) -> list[MapEntry]:
        return [m for m in self.maps if m.grid == grid]


def flagged(value) -> bool:
    """A flag column's value (True, False or missing) as a bool."""
    return False if value is None or pd.isna(value) else bool(value)


def subject_folder(results_dir: str | os.PathLike) -> Path:
    """The one ``sub-XX`` folder of a results folder (or the folder itself when it is one).

    Raises
    ------
    InputError
        Not a folder, no subject written by ``napari-myelin run`` in it, or several subjects.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder; give the --out folder of 'napari-myelin run' or a sub-XX inside it.")
    if (root / ".napari-myelin").is_dir():
        return root
    subjects = sorted(p for p in root.glob("sub-*") if (p / ".napari-myelin").is_dir())
    if not subjects:
        raise InputError(f"{root}: holds no subject written by 'napari-myelin run' (no sub-XX/.napari-myelin); give "
                         "the --out folder of a run or a sub-XX inside it.")
    if len(subjects) > 1:
        raise InputError(f"{root}: holds {len(subjects)} subjects ({', '.join(p.name for p in subjects[:3])}...); "
                         "give one of them, e.g. " + str(subjects[0]) + ".")
    return subjects[0]


def _entities(path: Path) -> tuple[str, str]:
    """(space, map name) of ``sub-XX_space-<grid>_<map>.nii.gz``; map names may hold underscores."""
    stem = strip_nifti_suffix(path.name)
    parts = stem.split("_")
    space = next((p[len("space-"):] for p in parts if p.startswith("space-")), "")
    if not space:
        return "", ""
    return space, stem.split(f"space-{space}_", 1)[1]


def _is_3d(path: Path) -> bool:
    import nibabel as nib

    shape = nib.load(str(path)).shape
    return len(shape) == 3 or (len(shape) == 4 and shape[3] == 1)


def read_results(results_dir: str | os.PathLike) -> ResultsContent:
    """Collect what the report shows from a results folder (see the module docstring).

    Raises
    ------
    InputError
        See :func:`subject_folder`; also a subject folder with no map at all.
    """
    sub = subject_folder(results_dir)
    maps, masks, template_ref = [], {}, None
    for path in sorted(sub.glob("*/*.nii.gz")):
        space, name = _entities(path)
        if not space:
            continue
        if space.startswith("MNI"):
            template_ref = path if name == "reference" else template_ref
        elif name == "mask":
            masks[space] = path
        elif name not in NOT_MAPS and _is_3d(path):  # 4D fit records are left out
            side = read_sidecar(path)
            maps.append(MapEntry(space, name, path, str(side.get("Units", "")), str(side.get("Description", "")),
                                 str(side.get("Method", ""))))
    if not maps:
        raise InputError(f"{sub}: holds no map (sub-XX_space-<grid>_<map>.nii.gz); the run wrote nothing to report.")
    order = {g: i for i, g in enumerate(GRID_ORDER)}
    maps.sort(key=lambda m: (order.get(m.grid, len(order)), m.grid, m.name))
    tracts, normative = _tract_table(sub)
    content = ResultsContent(sub, sub.name, maps, masks, tracts, normative, [], _registrations(sub), template_ref)
    content.qc = _qc_items(content)
    content.provenance = _provenance(content)
    return content


def _tract_table(sub: Path) -> tuple[pd.DataFrame | None, str | None]:
    """``tracts.csv`` (rows with a value), with ``z``, ``abnormal``, ``D_abnormal`` from ``tracts_z.csv``."""
    path = sub / "tracts.csv"
    if not path.is_file():
        return None, None
    table = pd.read_csv(path)
    table = table[table["status"] == "ok"] if "status" in table.columns else table
    scored_path = sub / "tracts_z.csv"
    if not scored_path.is_file():
        return table.reset_index(drop=True), None
    scored = pd.read_csv(scored_path)
    keep = [c for c in ("label", "map", "z", "abnormal", "D", "D_abnormal") if c in scored.columns]
    table = table.merge(scored[keep], on=["label", "map"], how="left")
    model = scored["normative_model"].dropna().astype(str) if "normative_model" in scored.columns else pd.Series([])
    return table.reset_index(drop=True), (model.iloc[0] if len(model) else "normative table")


def _registrations(sub: Path) -> list[dict]:
    """The registrations of ``xfm/*.json``: name, preset, similarity and overlap."""
    out = []
    for js in sorted((sub / "xfm").glob("*.json")):
        side = json.loads(js.read_text(encoding="utf-8"))
        out.append({"name": js.stem, "preset": side.get("Preset", ""), "similarity": side.get("Similarity"),
                    "overlap": side.get("Overlap")})
    return out


def _qc_items(content: ResultsContent) -> list[tuple[str, str]]:
    """(what, value) lines: the MWF fit SNR, the quality parameters of :data:`QC_PARAMETERS`, the QSM phase
    sign check (:func:`~napari_myelin.reconst.qsm.phase.phase_sign_result`), mask sizes."""
    from napari_myelin.reconst.qsm.phase import phase_sign_result

    items = []
    by_key = {(m.grid, m.name): m for m in content.maps}
    if ("megre", "chi") in by_key:
        check = read_sidecar(by_key["megre", "chi"].path).get("Parameters", {}).get("PhaseSignCheck")
        if check and {"Voxels", "ParamagneticVoxels"} <= set(check):
            items.append(("QSM phase sign check (high-R2* voxels must be paramagnetic)",
                          f"{phase_sign_result(check)}, {check['ParamagneticVoxels']} of {check['Voxels']}"))
    if ("mese", "snr") in by_key:
        snr = load_volume(by_key["mese", "snr"].path).data
        fitted = snr[np.isfinite(snr) & (snr > 0)]
        if fitted.size:
            items.append(("MWF fit SNR (max signal / SD of the fit residuals), median over fitted voxels",
                          f"{np.median(fitted):.1f}"))
    for grid, name, keys, what in QC_PARAMETERS:
        if (grid, name) not in by_key:
            continue
        value = read_sidecar(by_key[grid, name].path).get("Parameters", {})
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            items.append((what, f"{value:.4g}" if isinstance(value, float) else str(value)))
    for grid, path in content.masks.items():
        items.append((f"{grid} mask voxels", str(int((load_volume(path).data > 0).sum()))))
    return items


def _provenance(content: ResultsContent) -> dict:
    """Software versions, per method its inputs (name, SHA-256) and the steps' parameters and times."""
    versions, methods = {}, {}
    for m in content.maps:
        side = read_sidecar(m.path)
        software = side.get("Software") or {}
        if software:
            versions[software.get("Name", "napari-myelin")] = str(software.get("Version", ""))
        sources = [(Path(s["Path"]).name, s.get("SHA256", "")) for s in side.get("Sources", [])]
        entry = methods.setdefault((m.grid, m.method or "(no method recorded)"), {"maps": [], "sources": sources})
        entry["maps"].append(m.name)
    description = content.subject_dir.parent / "dataset_description.json"
    generated = []
    if description.is_file():
        generated = json.loads(description.read_text(encoding="utf-8")).get("GeneratedBy", [])
    steps = []
    for js in sorted((content.subject_dir / ".napari-myelin" / "steps").glob("*.json")):
        manifest = json.loads(js.read_text(encoding="utf-8"))
        steps.append({"step": manifest.get("step", js.stem), "seconds": manifest.get("seconds"),
                      "outputs": len(manifest.get("outputs", [])),
                      "parameters": manifest.get("key", {}).get("parameters", {})})
    return {"versions": versions, "generated_by": generated, "methods": methods, "steps": steps}
