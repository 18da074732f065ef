"""One subject end to end: estimators, registration, tract atlas, fusion, statistics.

:func:`run_subject` runs every estimator whose inputs are present in a BIDS-like subject folder
(:mod:`napari_myelin.io.bids`), co-registers the modalities to one subject reference,
normalises the reference to the MNI ICBM152 template, brings the tract atlas onto every native
grid, computes the MWF-calibrated QPM map and the CNN-fused integrated myelin map, and writes
tract statistics with normative z-scores. Each step is resumable (:mod:`napari_myelin.workflows.steps`):
a second run on the same folder does no work, an interrupted one resumes.

Outputs (BIDS-derivatives style, ``OUT/``)::

    dataset_description.json                     (GeneratedBy: napari-myelin, version)
    sub-XX/anat/sub-XX_space-mese_<map>.nii.gz   mwf, iewf (%), gmt2, sgm, mgm, alpha, snr, fitted (+ .json)
    sub-XX/dwi/sub-XX_space-dwi_<map>.nii.gz     fa, md, ad, rd, mk, ak, rk, kfa, mkt, mask
    sub-XX/anat/sub-XX_space-megre_<map>.nii.gz  field, local_field, chi, mask
    sub-XX/anat/sub-XX_space-vfa_<map>.nii.gz    t1, pd, mtv, qpm_myelin, mwf_qpm (%)
    sub-XX/anat/sub-XX_space-<grid>_tracts.nii.gz (+ .tsv)  tract labels on each native grid
    sub-XX/anat/sub-XX_space-<ref>_imwf.nii.gz   integrated myelin map (%), native reference grid
    sub-XX/anat/sub-XX_space-MNI152NLin2009aSym_<map>.nii.gz  maps in template space
    sub-XX/xfm/                                  transforms (reused on the next run)
    sub-XX/tracts.csv                            tract statistics, one row per (tract, map)
    sub-XX/tracts_z.csv                          z-scores against the normative table

The subject reference is the SPGR volume at the largest flip angle (T1-weighted, like the
template) when present, else the first spin echo, the GRE magnitude or the DWI b0.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from napari_myelin import __version__
from napari_myelin.utils.errors import InputError
from napari_myelin.io.maps import Maps
from napari_myelin.utils.progress import ProgressFn, step, subrange
from napari_myelin.workflows.steps import StepResult, StepRunner
from napari_myelin.io.bids import SubjectFiles, find_subject, first_volume, load_multi
from napari_myelin.io.volume import Volume, atomic_write_bytes, check_output_folder, load_volume, save_maps, save_volume

TEMPLATE_SPACE = "MNI152NLin2009aSym"

#: Normative table the tract statistics are scored against (synthetic: built from healthy phantoms).
SHIPPED_NORMATIVE = Path(__file__).resolve().parent.parent / "data" / "normative" / "normative_synthetic_phantom.csv"

#: Order of the steps (each reports its own progress).
STEPS = ("mwf", "dki", "qsm", "qpm", "register", "tracts", "calibrate", "fusion", "stats")

#: Native grid of each acquisition and the folder its maps go to.
GRIDS = {"mese": "anat", "dwi": "dwi", "megre": "anat", "vfa": "anat"}

#: Maps summarised per tract, with the grid they are on.
TRACT_MAPS = {
    "mese": ("mwf", "iewf", "gmt2"),
    "dwi": ("fa", "md", "ad", "rd", "mk", "ak", "rk"),
    "megre": ("chi",),
    "vfa": ("t1", "pd", "mtv", "qpm_myelin", "mwf_qpm", "imwf"),
}


@dataclass
class PipelineResult:
    """What :func:`run_subject` did: per-step results and the main output paths."""

    out_dir: Path
    subject: str
    steps: list[StepResult] = field(default_factory=list)
    tracts_csv: Path | None = None

    @property
    def work_done(self) -> bool:
        return any(s.status == "done" for s in self.steps)


class _Subject:
    """Paths and lazily loaded inputs of one subject run."""

    def __init__(self, files: SubjectFiles, out: Path) -> None:
        self.files = files
        self.root = out / f"sub-{files.subject}"
        self.xfm = self.root / "xfm"
        self._cache: dict[str, Volume] = {}

    def path(self, grid: str, name: str, suffix: str = ".nii.gz") -> Path:
        folder = GRIDS.get(grid, "anat")
        return self.root / folder / f"sub-{self.files.subject}_space-{grid}_{name}{suffix}"

    def load(self, grid: str, name: str) -> Volume:
        return load_volume(self.path(grid, name))

    def has(self, grid: str, name: str) -> bool:
        return self.path(grid, name).exists()

    def acquisition(self, key: str) -> Volume:
        if key not in self._cache:
            paths = getattr(self.files, key)
            self._cache[key] = load_multi(paths)
        return self._cache[key]

    def save(self, maps: Maps, grid: str, reference: Volume, inputs, names=None) -> list[Path]:
        keep = {k: maps[k] for k in (names or maps) if k in maps and np.ndim(maps[k]) >= 3}
        subset = Maps(keep, units=maps.units, descriptions=maps.descriptions, method=maps.method,
                      parameters=maps.parameters)
        folder = self.path(grid, "x").parent
        return save_maps(subset, folder, reference, inputs=inputs, prefix=f"sub-{self.files.subject}_space-{grid}_")


# --------------------------------------------------------------------------------------------------
# estimator steps
# --------------------------------------------------------------------------------------------------
def _step_mwf(s: _Subject, progress: ProgressFn | None, cancel) -> list[Path]:
    from napari_myelin.reconst.mwf import myelin_water, to_percent

    vol = s.acquisition("mese")
    te = vol.echo_times
    if te is None:
        raise InputError(f"{vol.path}: its sidecar has no EchoTime list; add the echo times (s).")
    maps = myelin_water(vol.data, te, mask="auto", progress=progress, cancel=cancel)
    return s.save(to_percent(maps), "mese", vol, s.files.mese,
                  ("mwf", "iewf", "gmt2", "sgm", "mgm", "alpha", "snr", "fitted"))


def _step_dki(s: _Subject, progress, cancel) -> list[Path]:
    from napari_myelin.reconst.dki import fit_dki

    vol = s.acquisition("dwi")
    if vol.bvals is None:
        raise InputError(f"{vol.path}: no .bval/.bvec beside it; DKI needs the diffusion table.")
    maps = fit_dki(vol.data, vol.bvals, vol.bvecs, affine=vol.affine, progress=progress, cancel=cancel)
    names = ("fa", "md", "ad", "rd", "mk", "ak", "rk", "kfa", "mkt", "mask")
    return s.save(maps, "dwi", vol, s.files.dwi, names)


def _step_qsm(s: _Subject, progress, cancel) -> list[Path]:
    from napari_myelin.reconst.qsm import fit_qsm

    mag, phase = load_multi(s.files.gre_mag), load_multi(s.files.gre_phase)
    te = phase.echo_times if phase.echo_times is not None else mag.echo_times
    b0 = phase.metadata.get("MagneticFieldStrength", mag.metadata.get("MagneticFieldStrength"))
    if te is None or b0 is None:
        raise InputError(f"{phase.path}: the sidecar needs EchoTime and MagneticFieldStrength for QSM.")
    maps = fit_qsm(mag.data, phase.data, te, field_strength=float(b0), affine=phase.affine,
                   progress=progress, cancel=cancel)
    return s.save(maps, "megre", phase, s.files.gre_mag + s.files.gre_phase,
                  ("field", "local_field", "chi", "mask"))


def _step_qpm(s: _Subject, progress, cancel) -> list[Path]:
    from napari_myelin.io.resample import b1_on_grid
    from napari_myelin.reconst.qpm import load_spgr, qpm

    vol, fa, tr = load_spgr(s.files.spgr)
    b1 = b1_on_grid(load_volume(s.files.b1[0]), vol) if s.files.b1 else None
    maps = qpm(vol.data, fa, tr, b1=b1, progress=progress, cancel=cancel)
    return s.save(maps, "vfa", vol, s.files.spgr + s.files.b1, ("t1", "pd", "mtv", "qpm_myelin"))


# --------------------------------------------------------------------------------------------------
# registration, atlas, calibration, fusion, statistics
# --------------------------------------------------------------------------------------------------
def _reference_key(s: _Subject) -> str:
    present = s.files.present()
    for key, grid in (("spgr", "vfa"), ("mese", "mese"), ("gre", "megre"), ("dwi", "dwi")):
        if present[key]:
            return grid
    raise InputError(f"{s.files.root}: no image to register.")


def _registration_image(s: _Subject, grid: str) -> Volume:
    if grid == "vfa":
        vol = s.acquisition("spgr")
        fa = np.atleast_1d(vol.metadata.get("FlipAngle", [0] * vol.shape[-1]))
        return Volume(np.asarray(vol.data[..., int(np.argmax(fa))], np.float32), vol.affine, None, {}, vol.path)
    if grid == "mese":
        return first_volume(s.acquisition("mese"))
    if grid == "megre":
        return first_volume(s.acquisition("gre_mag"))
    vol = s.acquisition("dwi")
    b0 = vol.data[..., np.asarray(vol.bvals) < 50].mean(axis=-1)
    return Volume(np.asarray(b0, np.float32), vol.affine, None, {}, vol.path)


def _grids(s: _Subject) -> list[str]:
    present = s.files.present()
    return [g for key, g in (("mese", "mese"), ("dwi", "dwi"), ("gre", "megre"), ("spgr", "vfa")) if present[key]]


class SubjectRegistrations:
    """Transforms of one subject (computed once, then read back from ``xfm/``).

    Every modality is rigidly co-registered to the subject reference (``self.ref``) and the reference
    is registered to the template. The subject needs ``files.present()``, ``acquisition(key)`` and
    ``xfm`` (see :class:`_Subject`); the fusion training reuses this class on phantom subjects.
    """

    def __init__(self, s: _Subject, preset: str, seed: int, progress=None, cancel=None) -> None:
        from napari_myelin.align.registration import coregister, register_to_template

        self.ref = _reference_key(s)
        grids = _grids(s)
        n = len(grids)
        ref_img = _registration_image(s, self.ref)
        self.coreg = {}
        for i, grid in enumerate(g for g in grids if g != self.ref):
            self.coreg[grid] = coregister(ref_img, _registration_image(s, grid), out_dir=s.xfm,
                                          name=f"coreg_{grid}", seed=seed,
                                          progress=subrange(progress, i / n, (i + 1) / n), cancel=cancel)
        self.template = register_to_template(ref_img, preset=preset, out_dir=s.xfm, name="to_template",
                                             seed=seed, progress=subrange(progress, (n - 1) / n, 1.0),
                                             cancel=cancel)

    def to_template(self, vol: Volume, grid: str, interpolation: str = "linear") -> Volume:
        if grid != self.ref:
            vol = self.coreg[grid].apply(vol, interpolation)
        return self.template.apply(vol, interpolation)

    def to_grid(self, vol: Volume, grid: str, interpolation: str = "linear") -> Volume:
        """A volume on the reference grid brought onto another native grid."""
        return vol if grid == self.ref else self.coreg[grid].to_native(vol, interpolation)

    def atlas_to(self, labels: Volume, grid: str) -> Volume:
        native = self.template.to_native(labels, "genericLabel")
        return self.to_grid(native, grid, "genericLabel")

    def files(self) -> list[Path]:
        regs = [self.template, *self.coreg.values()]
        return sorted({Path(p) for r in regs for p in (*r.forward, *r.inverse)})


def _step_register(s: _Subject, regs: SubjectRegistrations, preset: str) -> list[Path]:
    warped = regs.template.warped
    out = save_volume(warped.data, s.path(TEMPLATE_SPACE, "reference"), warped.affine,
                      sidecar={"Description": f"subject reference ({regs.ref}) warped to {TEMPLATE_SPACE}",
                               "Preset": preset, "Similarity": regs.template.similarity})
    return [*regs.files(), out]


def _step_tracts(s: _Subject, regs: SubjectRegistrations) -> list[Path]:
    from napari_myelin.align.atlas import load_tract_atlas
    from napari_myelin.io.lut import write_lut

    labels, lut = load_tract_atlas(2)
    written = []
    for grid in _grids(s):
        native = regs.atlas_to(labels, grid)
        written.append(save_volume(native.data.astype(np.int16), s.path(grid, "tracts"), native.affine,
                                   sidecar={"Description": "HCP842-derived tract labels in native space",
                                            "Units": "label"}))
        written.append(write_lut(lut, s.path(grid, "tracts", ".tsv")))
    return written


def _step_calibrate(s: _Subject, regs: SubjectRegistrations) -> list[Path]:
    from napari_myelin.reconst.qpm import fit_mwf_calibration

    mwf_ref = regs.coreg["mese"].apply(s.load("mese", "mwf")) if regs.ref != "mese" else s.load("mese", "mwf")
    mwf_vfa = regs.to_grid(mwf_ref, "vfa")
    qpm_map = s.load("vfa", "qpm_myelin")
    wm = s.load("vfa", "tracts").data > 0
    result = fit_mwf_calibration(mwf_vfa.data, qpm_map.data, mask=wm)
    out = s.save(result, "vfa", qpm_map, [s.path("vfa", "qpm_myelin"), s.path("mese", "mwf")], ("mwf_qpm",))
    cal_json = result.calibration.save(s.path("vfa", "calibration", ".json"))
    return [*out, cal_json]


def _step_fusion(s: _Subject, regs: SubjectRegistrations, progress, cancel) -> list[Path]:
    from napari_myelin.fusion.inference import fuse

    sources = {"mwf": ("mese", "mwf"), "fa": ("dwi", "fa"), "mk": ("dwi", "mk"), "qpm": ("vfa", "qpm_myelin")}
    if s.has("megre", "chi"):
        sources["qsm"] = ("megre", "chi")
    template = {k: regs.to_template(s.load(*src), src[0]) for k, src in sources.items()}
    units = {k: load_json_units(s.path(*src, ".json")) for k, src in sources.items()}
    ref_t = regs.template.fixed
    brain = np.asarray(regs.template.warped.data) > 0
    maps = fuse(template["mwf"].data, template["fa"].data, template["mk"].data, template["qpm"].data,
                template["qsm"].data if "qsm" in template else None, mask=brain,
                voxel_size_mm=ref_t.zooms, units=units, progress=progress, cancel=cancel)
    out = s.save(maps, TEMPLATE_SPACE, ref_t, [s.path(*src) for src in sources.values()])
    for key, (grid, name) in sources.items():
        out.append(save_volume(template[key].data, s.path(TEMPLATE_SPACE, name), ref_t.affine,
                               sidecar={"Units": units[key], "Description": f"{name} warped to {TEMPLATE_SPACE}"}))
    # fusion runs only with an SPGR series, so the subject reference is the SPGR grid
    native = regs.template.to_native(ref_t.with_data(maps["imwf"]), "linear")
    native_maps = Maps({"imwf": native.data}, units={"imwf": "%"},
                       descriptions={"imwf": "integrated myelin map (CNN fusion), warped back to native space"},
                       method=maps.method, parameters=maps.parameters)
    out += s.save(native_maps, regs.ref, native, [s.path(TEMPLATE_SPACE, "imwf")])
    return out


def load_json_units(path: Path) -> str:
    """``Units`` of a map's JSON sidecar ('' when absent)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8")).get("Units", "")
    except (OSError, json.JSONDecodeError):
        return ""


def _step_stats(s: _Subject) -> list[Path]:
    from napari_myelin.stats.normative import compare_to_normative, read_normative
    from napari_myelin.stats.roi import roi_statistics, write_csv

    tables = []
    for grid, names in TRACT_MAPS.items():
        if not s.has(grid, "tracts"):
            continue
        present = {n: s.load(grid, n) for n in names if s.has(grid, n)}
        if not present:
            continue
        labels = s.load(grid, "tracts")
        lut_path = s.path(grid, "tracts", ".tsv")
        from napari_myelin.io.lut import read_lut

        table = roi_statistics(labels, present, lut=read_lut(lut_path),
                               units={n: load_json_units(s.path(grid, n, ".json")) for n in present},
                               sources={n: str(s.path(grid, n)) for n in present}, subject=f"sub-{s.files.subject}")
        tables.append(table.table)
    import pandas as pd

    long = pd.concat(tables, ignore_index=True)
    out = [write_csv(long, s.root / "tracts.csv")]
    scored, distance = compare_to_normative(long, read_normative(SHIPPED_NORMATIVE))
    out.append(write_csv(scored, s.root / "tracts_z.csv"))
    return out


# --------------------------------------------------------------------------------------------------
# the whole run
# --------------------------------------------------------------------------------------------------
def write_dataset_description(out: Path) -> Path:
    """BIDS-derivatives ``dataset_description.json`` with GeneratedBy provenance."""
    desc = {
        "Name": "napari-myelin derivatives",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "napari-myelin", "Version": __version__,
                         "Description": "integrated quantitative myelin MRI (MWF, DKI, QSM, QPM, fusion)"}],
    }
    path = out / "dataset_description.json"
    atomic_write_bytes(path, json.dumps(desc, indent=2).encode("utf-8"))
    return path


def run_subject(
    subject_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    force: bool = False,
    preset: str = "fast",
    seed: int = 0,
    progress: ProgressFn | None = None,
    cancel=None,
    on_step: Callable[[str, str], None] | None = None,
) -> PipelineResult:
    """Run every step whose inputs are present for one subject folder.

    Parameters
    ----------
    subject_dir : path
        BIDS-like subject folder (``sub-XX`` with ``anat/``, ``dwi/``, ``fmap/``).
    out_dir : path
        Derivatives folder; the subject's outputs go to ``out_dir/sub-XX``.
    force : bool
        Redo steps whose valid outputs exist.
    preset : {"fast", "accurate", "affine"}
        Registration preset.
    seed : int
        Registration seed.
    progress, cancel
        Overall progress (0-1 over all steps) and cancellation.
    on_step : callable(name, status), optional
        Called when a step starts (``"start"``) and ends (its status).

    Returns
    -------
    PipelineResult
    """
    files = find_subject(subject_dir)
    out = check_output_folder(out_dir)
    write_dataset_description(out)
    s = _Subject(files, out)
    runner = StepRunner(s.root, force=force)
    present = files.present()
    n = len(STEPS)
    regs: list[SubjectRegistrations] = []

    def registrations(p=None) -> SubjectRegistrations:
        if not regs:
            regs.append(SubjectRegistrations(s, preset, seed, p, cancel))
        return regs[0]

    plan: dict[str, tuple[bool, str, list[Path], dict, Callable]] = {
        "mwf": (present["mese"], "no multi-echo spin echo (anat/*_MESE)", files.mese, {},
                lambda p: _step_mwf(s, p, cancel)),
        "dki": (present["dwi"], "no DWI with .bval/.bvec (dwi/*_dwi)", files.dwi, {},
                lambda p: _step_dki(s, p, cancel)),
        "qsm": (present["gre"], "no GRE magnitude + phase (anat/*_part-mag/phase_MEGRE)",
                files.gre_mag + files.gre_phase, {}, lambda p: _step_qsm(s, p, cancel)),
        "qpm": (present["spgr"], "no variable-flip-angle SPGR (anat/*_VFA)", files.spgr + files.b1, {},
                lambda p: _step_qpm(s, p, cancel)),
        "register": (True, "", files.all_files(), {"preset": preset, "seed": seed},
                     lambda p: _step_register(s, registrations(p), preset)),
        "tracts": (True, "", files.all_files(), {"preset": preset, "atlas": "hcp842"},
                   lambda p: _step_tracts(s, registrations())),
        "calibrate": (present["mese"] and present["spgr"], "needs both MWF and QPM", files.all_files(), {},
                      lambda p: _step_calibrate(s, registrations())),
        "fusion": (present["mese"] and present["spgr"] and present["dwi"], "needs MWF, DKI and QPM",
                   files.all_files(), {"preset": preset}, lambda p: _step_fusion(s, registrations(), p, cancel)),
        "stats": (True, "", files.all_files(), {}, lambda p: _step_stats(s)),
    }
    for i, name in enumerate(STEPS):
        ok, why, inputs, params, func = plan[name]
        step(progress, cancel, i / n, f"{name}")
        if on_step:
            on_step(name, "start")
        if not ok:
            result = runner.missing(name, why)
        else:
            result = runner.run(name, func, inputs=inputs, parameters=params, progress=subrange(progress, i / n, (i + 1) / n))
        if on_step:
            on_step(name, result.status)
    step(progress, cancel, 1.0, "done")
    csv = s.root / "tracts.csv"
    return PipelineResult(out, files.subject, runner.results, csv if csv.exists() else None)
