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
    sub-XX/anat/sub-XX_space-megre_<map>.nii.gz  field, local_field, chi, r2star, mask; chi_para, chi_dia,
                                                 r2prime (chi-separation, with a MESE)
    sub-XX/anat/sub-XX_space-vfa_<map>.nii.gz    t1, pd, mtv, qpm_myelin, mwf_qpm (%)
    sub-XX/anat/sub-XX_space-mts_<map>.nii.gz    mtsat (p.u.), mtr (%), t1, a (MT-weighted trio, when present)
    sub-XX/anat/sub-XX_space-<grid>_tracts.nii.gz (+ .tsv)  tract labels on each native grid
    sub-XX/anat/sub-XX_space-<ref>_imwf.nii.gz   integrated myelin map (%), native reference grid
    sub-XX/anat/sub-XX_space-MNI152NLin2009aSym_<map>.nii.gz  maps in template space (fusion inputs, mtsat, mtr,
                                                 chi_para, chi_dia)
    sub-XX/xfm/                                  transforms (reused on the next run)
    sub-XX/tracts.csv                            tract statistics, one row per (tract, map)
    sub-XX/tracts_z.csv                          z-scores and flags, only with a normative model (``normative=``)

The subject reference is the SPGR volume at the largest flip angle (T1-weighted, like the
template) when present, else the first spin echo, the GRE magnitude, the DWI b0 or the T1-weighted MTS volume.
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

#: The shipped SYNTHETIC normative table (phantom truth maps): a demo-only model, ``normative="synthetic-demo"``.
SHIPPED_NORMATIVE = Path(__file__).resolve().parent.parent / "data" / "normative" / "normative_synthetic_phantom.csv"

#: Order of the steps (each reports its own progress).
STEPS = ("mwf", "dki", "qsm", "qpm", "mtsat", "register", "tracts", "calibrate", "chisep", "fusion", "stats")

#: Steps whose outputs each step reads (the graph of a subject; registration needs only the raw images).
DEPENDS = {
    "mwf": (), "dki": (), "qsm": (), "qpm": (), "mtsat": (), "register": (), "tracts": ("register", "mwf", "dki", "qsm", "qpm", "mtsat"),
    "calibrate": ("mwf", "qpm", "tracts"), "chisep": ("qsm", "register"),
    "fusion": ("register", "tracts", "chisep"),
    "stats": ("mwf", "dki", "qsm", "qpm", "mtsat", "tracts", "calibrate", "chisep", "fusion"),
}

#: Native grid of each acquisition and the folder its maps go to.
GRIDS = {"mese": "anat", "dwi": "dwi", "megre": "anat", "vfa": "anat", "mts": "anat"}

#: Maps summarised per tract, with the grid they are on.
TRACT_MAPS = {
    "mese": ("mwf", "iewf", "gmt2"),
    "dwi": ("fa", "md", "ad", "rd", "mk", "ak", "rk"),
    "megre": ("chi", "r2star", "chi_para", "chi_dia", "r2prime"),
    "vfa": ("t1", "pd", "mtv", "qpm_myelin", "mwf_qpm", "imwf"),
    "mts": ("mtsat", "mtr"),
}

#: Maps the ``tracts`` step also writes in template space (``space-MNI152NLin2009aSym``), with their grid:
#: the fusion inputs and the maps of the voxelwise normative model.
TEMPLATE_MAPS = {
    "mese": ("mwf",),
    "dwi": ("fa", "mk"),
    "megre": ("chi",),
    "vfa": ("qpm_myelin",),
    "mts": ("mtsat", "mtr"),
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
    from napari_myelin.reconst.qsm import fit_qsm, phase_to_radians

    mag, phase = load_multi(s.files.gre_mag), load_multi(s.files.gre_phase)
    phase_to_radians(phase.data, name=str(phase.path))  # a mis-scaled phase refused, naming its file
    te = phase.echo_times if phase.echo_times is not None else mag.echo_times
    b0 = phase.metadata.get("MagneticFieldStrength", mag.metadata.get("MagneticFieldStrength"))
    if te is None or b0 is None:
        raise InputError(f"{phase.path}: the sidecar needs EchoTime and MagneticFieldStrength for QSM.")
    maps = fit_qsm(mag.data, phase.data, te, field_strength=float(b0), affine=phase.affine,
                   progress=progress, cancel=cancel)
    return s.save(maps, "megre", phase, s.files.gre_mag + s.files.gre_phase,
                  ("field", "local_field", "chi", "r2star", "mask"))


def _step_qpm(s: _Subject, progress, cancel) -> list[Path]:
    from napari_myelin.io.resample import b1_on_grid
    from napari_myelin.reconst.qpm import load_spgr, qpm

    vol, fa, tr = load_spgr(s.files.spgr)
    b1 = b1_on_grid(load_volume(s.files.b1[0]), vol) if s.files.b1 else None
    maps = qpm(vol.data, fa, tr, b1=b1, progress=progress, cancel=cancel)
    return s.save(maps, "vfa", vol, s.files.spgr + s.files.b1, ("t1", "pd", "mtv", "qpm_myelin"))


def _step_mtsat(s: _Subject, progress, cancel) -> list[Path]:
    from napari_myelin.io.resample import b1_on_grid
    from napari_myelin.reconst.mtsat import fit_mtsat, load_mts

    vols, fa, tr = load_mts(s.files.mts)
    from napari_myelin.reconst.masking import brain_mask

    b1 = b1_on_grid(load_volume(s.files.b1[0]), vols[0]) if s.files.b1 else None
    # the brain of the PD-weighted image, where all three signals are positive: no map of the background noise
    signal = np.all([np.isfinite(v.data) & (v.data > 0) for v in vols], axis=0)
    maps = fit_mtsat(*(v.data for v in vols), flip_angles=fa, repetition_times=tr, b1=b1,
                     mask=brain_mask(vols[1].data) & signal, progress=progress, cancel=cancel)
    return s.save(maps, "mts", vols[0], s.files.mts + s.files.b1, ("mtsat", "mtr", "t1", "a"))


# --------------------------------------------------------------------------------------------------
# registration, atlas, calibration, fusion, statistics
# --------------------------------------------------------------------------------------------------
def _reference_key(s: _Subject) -> str:
    present = s.files.present()
    for key, grid in (("spgr", "vfa"), ("mese", "mese"), ("gre", "megre"), ("dwi", "dwi"), ("mts", "mts")):
        if present.get(key):
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
    if grid == "mts":  # the T1-weighted volume of the trio, like the template
        return first_volume(load_volume(s.files.mts[2]))
    vol = s.acquisition("dwi")
    b0 = vol.data[..., np.asarray(vol.bvals) < 50].mean(axis=-1)
    return Volume(np.asarray(b0, np.float32), vol.affine, None, {}, vol.path)


def _grids(s: _Subject) -> list[str]:
    present = s.files.present()
    return [g for key, g in (("mese", "mese"), ("dwi", "dwi"), ("gre", "megre"), ("spgr", "vfa"), ("mts", "mts"))
            if present.get(key)]


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

    def between(self, vol: Volume, src: str, dst: str, interpolation: str = "linear") -> Volume:
        """A volume on native grid ``src`` brought onto native grid ``dst`` through the reference."""
        on_ref = vol if src == self.ref else self.coreg[src].apply(vol, interpolation)
        return self.to_grid(on_ref, dst, interpolation)

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
    return written + _maps_to_template(s, regs)


def _maps_to_template(s: _Subject, regs: SubjectRegistrations) -> list[Path]:
    """The estimators' maps of :data:`TEMPLATE_MAPS` that this subject has, warped to the template."""
    out = []
    for grid, names in TEMPLATE_MAPS.items():
        for name in names:
            if s.has(grid, name):
                warped = regs.to_template(s.load(grid, name), grid)
                out.append(save_volume(np.asarray(warped.data, np.float32), s.path(TEMPLATE_SPACE, name),
                                       warped.affine, sidecar={"Units": load_json_units(s.path(grid, name, ".json")),
                                                               "Description": f"{name} warped to {TEMPLATE_SPACE}"}))
    return out


def _step_calibrate(s: _Subject, regs: SubjectRegistrations) -> list[Path]:
    from napari_myelin.reconst.qpm import fit_mwf_calibration

    mwf_vfa = regs.between(s.load("mese", "mwf"), "mese", "vfa")
    qpm_map = s.load("vfa", "qpm_myelin")
    wm = s.load("vfa", "tracts").data > 0
    result = fit_mwf_calibration(mwf_vfa.data, qpm_map.data, mask=wm)
    out = s.save(result, "vfa", qpm_map, [s.path("vfa", "qpm_myelin"), s.path("mese", "mwf")], ("mwf_qpm",))
    cal_json = result.calibration.save(s.path("vfa", "calibration", ".json"))
    return [*out, cal_json]


def _step_chisep(s: _Subject, regs: SubjectRegistrations, progress, cancel) -> list[Path]:
    from napari_myelin.workflows.chisep import step_chisep  # chi-separation (MESE R2 + MEGRE)

    return step_chisep(s, regs, progress, cancel)


def _step_fusion(s: _Subject, regs: SubjectRegistrations, progress, cancel) -> list[Path]:
    from napari_myelin.fusion.inference import fuse
    from napari_myelin.fusion.weights import load_model

    model = load_model(None)  # the shipped weights: optional maps are passed when present and read by them
    sources = {"mwf": ("mese", "mwf"), "fa": ("dwi", "fa"), "mk": ("dwi", "mk"), "qpm": ("vfa", "qpm_myelin")}
    optional = {"qsm": ("megre", "chi"), "mtsat": ("mts", "mtsat"), "chi_dia": ("megre", "chi_dia")}
    sources.update({k: src for k, src in optional.items()
                    if k in model.channels and s.has(src[0], src[1]) and s.has(TEMPLATE_SPACE, src[1])})
    # template maps written by ``tracts`` (mtsat too) and ``chisep`` (chi_dia)
    template = {k: s.load(TEMPLATE_SPACE, name) for k, (_, name) in sources.items()}
    units = {k: load_json_units(s.path(*src, ".json")) for k, src in sources.items()}
    ref_t = regs.template.fixed
    brain = np.asarray(regs.template.warped.data) > 0
    # the optional maps only where the MWF fit ran (its brain mask): the MTsat fit covers the whole field of view
    support = np.isfinite(template["mwf"].data) & (template["mwf"].data != 0)
    extra = {k: np.where(support, np.nan_to_num(template[k].data), 0.0) for k in optional if k in template}
    maps = fuse(template["mwf"].data, template["fa"].data, template["mk"].data, template["qpm"].data,
                **extra, mask=brain,
                voxel_size_mm=ref_t.zooms, units=units, progress=progress, cancel=cancel)
    out = s.save(maps, TEMPLATE_SPACE, ref_t, [s.path(*src) for src in sources.values()])
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


def _step_stats(s: _Subject, scoring=None) -> list[Path]:
    from napari_myelin.stats.roi import roi_statistics, write_csv
    from napari_myelin.workflows.normative import write_subject_scores

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
    return [write_csv(long, s.root / "tracts.csv"), *write_subject_scores(s.root, scoring)]


# --------------------------------------------------------------------------------------------------
# the whole run
# --------------------------------------------------------------------------------------------------
def write_dataset_description(out: Path, generated_by: tuple[dict, ...] | list[dict] = ()) -> Path:
    """BIDS-derivatives ``dataset_description.json`` with GeneratedBy provenance (napari-myelin and its
    version, then the ``generated_by`` entries, e.g. the scheduler of a cohort)."""
    desc = {
        "Name": "napari-myelin derivatives",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "napari-myelin", "Version": __version__,
                         "Description": "integrated quantitative myelin MRI (MWF, DKI, QSM, QPM, fusion)"},
                        *generated_by],
    }
    path = out / "dataset_description.json"
    atomic_write_bytes(path, json.dumps(desc, indent=2).encode("utf-8"))
    return path


def _plan(s: _Subject, preset: str, seed: int, cancel,
          scoring=None) -> dict[str, tuple[bool, str, list[Path], dict, Callable]]:
    """Each step of one subject: whether it can run (and why not), its inputs, parameters and work.

    Every step that reads the registrations carries their parameters (preset, seed), so that changing
    them redoes it; ``stats`` also carries the normative model's ID and the covariates (``scoring``,
    :func:`napari_myelin.workflows.normative.prepare_scoring`).
    """
    files, present = s.files, s.files.present()
    reg_params = {"preset": preset, "seed": seed}
    regs: list[SubjectRegistrations] = []

    def registrations(p=None) -> SubjectRegistrations:
        if not regs:
            regs.append(SubjectRegistrations(s, preset, seed, p, cancel))
        return regs[0]

    return {
        "mwf": (present["mese"], "no multi-echo spin echo (anat/*_MESE)", files.mese, {},
                lambda p: _step_mwf(s, p, cancel)),
        "dki": (present["dwi"], "no DWI with .bval/.bvec (dwi/*_dwi)", files.dwi, {},
                lambda p: _step_dki(s, p, cancel)),
        "qsm": (present["gre"], "no GRE magnitude + phase (anat/*_part-mag/phase_MEGRE)",
                files.gre_mag + files.gre_phase, {}, lambda p: _step_qsm(s, p, cancel)),
        "qpm": (present["spgr"], "no variable-flip-angle SPGR (anat/*_VFA)", files.spgr + files.b1, {},
                lambda p: _step_qpm(s, p, cancel)),
        "mtsat": (present["mts"], "no MT-weighted trio (anat/*_flip-N_mt-on|off_MTS)", files.mts + files.b1, {},
                  lambda p: _step_mtsat(s, p, cancel)),
        "register": (True, "", files.all_files(), reg_params,
                     lambda p: _step_register(s, registrations(p), preset)),
        "tracts": (True, "", files.all_files(), {**reg_params, "atlas": "hcp842"},
                   lambda p: _step_tracts(s, registrations())),
        "calibrate": (present["mese"] and present["spgr"], "needs both MWF and QPM", files.all_files(), reg_params,
                      lambda p: _step_calibrate(s, registrations())),
        "chisep": (present["mese"] and present["gre"], "needs both a MESE and a MEGRE",
                   files.mese + files.gre_mag + files.gre_phase, reg_params,
                   lambda p: _step_chisep(s, registrations(), p, cancel)),
        "fusion": (present["mese"] and present["spgr"] and present["dwi"], "needs MWF, DKI and QPM",
                   files.all_files(), reg_params, lambda p: _step_fusion(s, registrations(), p, cancel)),
        "stats": (True, "", files.all_files(), {**reg_params, **(scoring.parameters if scoring else {"normative": None})},
                  lambda p: _step_stats(s, scoring)),
    }


def _run_planned(runner: StepRunner, plan: dict, name: str, progress: ProgressFn | None) -> StepResult:
    """Run step ``name`` of ``plan`` (or record it as missing) with ``runner``."""
    ok, why, inputs, params, func = plan[name]
    if not ok:
        return runner.missing(name, why)
    return runner.run(name, func, inputs=inputs, parameters=params, progress=progress)


def run_step(
    subject_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    name: str,
    *,
    force: bool = False,
    preset: str = "fast",
    seed: int = 0,
    progress: ProgressFn | None = None,
    cancel=None,
    normative=None,
    covariates: dict | None = None,
) -> StepResult:
    """Run one named step of one subject, as :func:`run_subject` runs it (resumable, same outputs).

    The unit of work of a cohort (:mod:`napari_myelin.workflows.cohort`): the steps a step reads
    (:data:`DEPENDS`) must have run before; ``out_dir`` must exist.

    Parameters
    ----------
    subject_dir, out_dir : path
        BIDS-like subject folder and derivatives folder, as for :func:`run_subject`.
    name : str
        One of :data:`STEPS`.
    force, preset, seed, progress, cancel, normative, covariates
        As for :func:`run_subject` (``progress`` spans this step only).

    Returns
    -------
    StepResult
    """
    if name not in STEPS:
        raise InputError(f"step '{name}': not a pipeline step; choose one of {', '.join(STEPS)}.")
    s = _Subject(find_subject(subject_dir), Path(out_dir))
    scoring = _scoring(s.files, normative, covariates) if name == "stats" else None
    return _run_planned(StepRunner(s.root, force=force), _plan(s, preset, seed, cancel, scoring), name, progress)


def _scoring(files: SubjectFiles, normative, covariates):
    """The model and covariates of the ``stats`` step (:func:`napari_myelin.workflows.normative.prepare_scoring`;
    covariates from ``participants.tsv`` beside the subject folder, updated by ``covariates``)."""
    from napari_myelin.workflows.normative import prepare_scoring

    return prepare_scoring(normative, covariates, f"sub-{files.subject}", files.root.parent / "participants.tsv")


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
    normative=None,
    covariates: dict | None = None,
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
    normative : path or NormativeModel, optional
        Normative model (a folder of ``napari-myelin normative build``, or ``"synthetic-demo"``): the
        ``stats`` step then writes ``tracts_z.csv`` with z-scores and flags. Without one, no z-score and
        no flag is written.
    covariates : dict, optional
        The subject's covariates for the model (default: its row of ``participants.tsv`` beside the
        subject folder); they update that row.

    Returns
    -------
    PipelineResult
    """
    files = find_subject(subject_dir)
    scoring = _scoring(files, normative, covariates)
    out = check_output_folder(out_dir)
    write_dataset_description(out)
    s = _Subject(files, out)
    runner = StepRunner(s.root, force=force)
    plan = _plan(s, preset, seed, cancel, scoring)
    n = len(STEPS)
    for i, name in enumerate(STEPS):
        step(progress, cancel, i / n, f"{name}")
        if on_step:
            on_step(name, "start")
        result = _run_planned(runner, plan, name, subrange(progress, i / n, (i + 1) / n))
        if on_step:
            on_step(name, result.status)
    step(progress, cancel, 1.0, "done")
    csv = s.root / "tracts.csv"
    return PipelineResult(out, files.subject, runner.results, csv if csv.exists() else None)
