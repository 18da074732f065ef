"""DICOM in: a scanner's DICOM export converted by dcm2niix and named as a BIDS subject.

:func:`convert_dicom` runs dcm2niix (the ``dcm2niix`` PyPI package's binary) on a folder into a work
folder and groups its outputs into :class:`Series` (one per series and image part, echoes in order);
:func:`classify` names each series from its dcm2niix sidecar alone (nothing is guessed from file names
or pixel values); :func:`import_dicom` writes the recognised series into ``BIDS_ROOT/sub-XX`` under the
names :func:`napari_myelin.io.bids.find_subject` reads and returns the series it left out, with why.

=================  ==========================================================  ===================================
kind               sidecar evidence                                            written as (``sub-XX/...``)
=================  ==========================================================  ===================================
DWI                a ``.bval`` with a b-value above 0                          ``dwi/*_dwi`` + ``.bval``/``.bvec``
B1                 ``ImageType`` with ``FLIP ANGLE MAP`` (Siemens tfl_b1map,   ``fmap/*_TB1map`` (ratio)
                   tenths of a degree of the 80 deg preparation pulse: /800)
                   or ``B1``, or a description naming a B1 map (as stored)
MESE               ``ScanningSequence`` SE, 4 or more echo times               ``anat/*_echo-N_MESE``
MEGRE              ``ScanningSequence`` GR, 2 or more echo times;              ``anat/*_echo-N_part-mag_MEGRE``,
                   ``ImageType`` M/MAGNITUDE or P/PHASE                        ``anat/*_echo-N_part-phase_MEGRE``
MTS                one MT-on (``MTState`` true, ``ScanOptions`` MT or a        ``anat/*_flip-1_mt-on_MTS``,
                   description ``mt-on``) and two MT-off (``MTState`` false    ``*_flip-1_mt-off_MTS`` (lower FA),
                   or ``mt-off``) single-echo GR magnitudes                    ``*_flip-2_mt-off_MTS``
VFA                single-echo GR magnitudes on one grid and ``TR`` at two or  ``anat/*_flip-N_VFA`` (by FA)
                   more flip angles (``FlipAngle``)
=================  ==========================================================  ===================================

Everything else (derived maps, EPI without a diffusion table, inversion recovery, real/imaginary
parts, a second series of a kind already found, single-echo gradient echoes at one flip angle, ...)
is left out and listed. The sidecars are dcm2niix's (BIDS keys, seconds and degrees; anonymised),
plus ``RepetitionTimeExcitation`` for MTS and ``Units`` for the B1 ratio.

References
----------
Li X, Morgan PS, Ashburner J, Smith J, Rorden C. The first step for neuroimaging data analysis:
DICOM to NIfTI conversion. J Neurosci Methods 264:47-56 (2016). BIDS specification 1.9,
"Magnetic Resonance Imaging: Quantitative MRI".
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import dcm2niix
import numpy as np

from napari_myelin.io.volume import (Volume, atomic_write_bytes, check_output_folder, load_echo_series, load_volume,
                                     read_bval_bvec, save_volume, sidecar_path)
from napari_myelin.utils.errors import InputError

#: Least echo count of a multi-echo spin echo taken as MESE (T2 relaxometry / myelin water).
MIN_MESE_ECHOES = 4

_B1_DESCRIPTION = re.compile(r"b1[-_ ]?map|\btb1|\bdream\b|\bafi\b")
_MT_ON = re.compile(r"mt[-_ ]?on\b|\bmtw\b")
_MT_OFF = re.compile(r"mt[-_ ]?off\b")


@dataclass
class Series:
    """One series converted by dcm2niix: its NIfTI files (one per echo, in echo order) and sidecars.

    ``kind`` is set by :func:`classify` (``""`` when left out, with ``reason``; ``entities`` such as
    ``flip-2_mt-off`` for VFA and MTS) and ``names`` are the BIDS paths of ``files`` relative to the
    subject folder, without extension.
    """

    number: int
    files: list[Path]
    sidecars: list[dict]
    kind: str = ""
    reason: str = ""
    entities: str = ""
    names: list[str] = field(default_factory=list)

    @property
    def sidecar(self) -> dict:
        return self.sidecars[0]

    @property
    def description(self) -> str:
        return str(self.sidecar.get("SeriesDescription") or self.sidecar.get("ProtocolName") or "")

    @property
    def image_type(self) -> set[str]:
        return {str(t).upper() for t in self.sidecar.get("ImageType", [])}

    @property
    def is_phase(self) -> bool:
        return bool(self.image_type & {"P", "PHASE"})

    @property
    def echo_times(self) -> list[float]:
        return [float(s["EchoTime"]) for s in self.sidecars if "EchoTime" in s]

    @property
    def flip_angle(self) -> float | None:
        return self.sidecar.get("FlipAngle")

    @property
    def bvals(self) -> np.ndarray | None:
        bval = sidecar_path(self.files[0], ".bval")
        return read_bval_bvec(bval, sidecar_path(self.files[0], ".bvec"))[0] if bval.exists() else None

    def label(self) -> str:
        return f"series {self.number} '{self.description}'"


def has_dicom(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds (at any depth) a DICOM file: one with the ``DICM`` mark at byte 128."""
    for dirpath, _, names in os.walk(folder):
        for name in sorted(names):
            try:
                with open(Path(dirpath) / name, "rb") as f:
                    if f.read(132)[128:] == b"DICM":
                        return True
            except OSError:
                continue
    return False


def _require_dicom(folder) -> None:
    """Raise :class:`InputError` unless ``folder`` is a folder holding a DICOM file."""
    if not Path(folder).is_dir():
        raise InputError(f"{folder}: not a folder; give the folder of the scanner's DICOM export.")
    if not has_dicom(folder):
        raise InputError(f"{folder}: holds no DICOM files (none has the DICM mark); give the folder of the "
                         "scanner's DICOM export.")


def convert_dicom(dicom_dir: str | os.PathLike, work_dir: str | os.PathLike, subject: str = "01") -> list[Series]:
    """Convert every series under ``dicom_dir`` with dcm2niix into ``work_dir`` and classify them
    (:func:`classify`, BIDS names for subject ``subject``).

    Raises
    ------
    InputError
        No DICOM file in ``dicom_dir``, or dcm2niix converted none of them.
    """
    _require_dicom(dicom_dir)
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    cmd = [dcm2niix.bin, "-z", "y", "-b", "y", "-ba", "y", "-d", "9", "-f", "%s", "-o", str(work), str(dicom_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    series = _group(work)
    if not series:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no message"]
        raise InputError(f"{dicom_dir}: dcm2niix converted none of its DICOM files ({last[0]}); check the export.")
    classify(series, subject)
    return series


def _group(work: Path) -> list[Series]:
    """dcm2niix's outputs grouped by series number, description and image part; echoes in order."""
    groups: dict[tuple, list[tuple[dict, Path]]] = {}
    for js in sorted(work.glob("*.json")):
        nii = next((p for p in (js.with_suffix(".nii.gz"), js.with_suffix(".nii")) if p.exists()), None)
        if nii is None:
            continue
        side = json.loads(js.read_text(encoding="utf-8"))
        itype = tuple(sorted({str(t).upper() for t in side.get("ImageType", [])} & {"P", "PHASE", "REAL",
                                                                                     "IMAGINARY"}))
        key = (int(side.get("SeriesNumber", 0)), str(side.get("SeriesDescription", "")), itype)
        groups.setdefault(key, []).append((side, nii))
    out = []
    for key in sorted(groups):
        items = sorted(groups[key], key=lambda it: (it[0].get("EchoNumber", 1), it[0].get("EchoTime", 0)))
        out.append(Series(key[0], [p for _, p in items], [s for s, _ in items]))
    return out


# --------------------------------------------------------------------------------------------------
# classification
# --------------------------------------------------------------------------------------------------
def _series_kind(s: Series) -> tuple[str, str]:
    """The kind of one series from its sidecar, or ``("", why not)``; ``spgr``, ``mt-on`` and ``mt-off``
    are candidates that :func:`classify` settles across series."""
    side, itype = s.sidecar, s.image_type
    seq = str(side.get("ScanningSequence", "")).upper()
    desc = f"{side.get('SeriesDescription', '')} {side.get('ProtocolName', '')}".lower()
    n_echo = len(set(s.echo_times))
    bvals = s.bvals
    if len(s.files) != max(n_echo, 1):
        return "", f"{len(s.files)} images for {n_echo} echo times (coil, repeated or reformatted images)"
    if bvals is not None and bvals.max() > 0:
        return "dwi", ""
    if itype & {"FLIP ANGLE MAP", "B1"} or (_B1_DESCRIPTION.search(desc) and not itype & {"M", "MAGNITUDE"}):
        return "b1", ""
    if "DERIVED" in itype:
        return "", "derived images (a map or reformat computed by the scanner)"
    if itype & {"REAL", "IMAGINARY"}:
        return "", "real/imaginary parts (export magnitude and phase instead)"
    if "EP" in seq:
        return "", "echo-planar images without a diffusion table (fMRI or a b=0 series)"
    if "IR" in seq:
        return "", "inversion recovery (e.g. MPRAGE, FLAIR); no estimator reads it"
    if "SE" in seq:
        if n_echo >= MIN_MESE_ECHOES and not s.is_phase:
            return "mese", ""
        return "", f"spin echo with {n_echo} echo time(s); MESE needs {MIN_MESE_ECHOES} or more magnitude echoes"
    if "GR" in seq:
        if n_echo >= 2:
            return ("megre-phase" if s.is_phase else "megre-mag"), ""
        if s.is_phase:
            return "", "single-echo gradient-echo phase; QSM needs 2 or more echoes"
        if side.get("MTState") is True or "MT" in str(side.get("ScanOptions", "")).upper().split("\\") \
                or _MT_ON.search(desc):
            return "mt-on", ""
        return ("mt-off" if side.get("MTState") is False or _MT_OFF.search(desc) else "spgr"), ""
    return "", f"scanning sequence '{seq or 'not given'}' is neither spin echo (SE) nor gradient echo (GR)"


def classify(series: list[Series], subject: str = "01") -> None:
    """Set ``kind``, ``reason`` and the BIDS ``names`` of every series (see the module's table).

    Of several series of one kind the lowest series number is kept and the others are left out.
    """
    for s in series:
        s.kind, s.reason = _series_kind(s)
    _settle_mts(series)
    _settle_vfa(series)
    seen: dict[str, Series] = {}
    for s in series:
        if s.kind and s.kind not in ("vfa", "mts") and s.kind in seen:
            s.kind, s.reason = "", f"another {s.kind.upper()} series; {seen[s.kind].label()} was imported"
        elif s.kind:
            seen.setdefault(s.kind, s)
    for s in series:
        s.names = _bids_names(s, subject)


def _settle_mts(series: list[Series]) -> None:
    """One MT-on and two MT-off series at two flip angles make the MTS trio; otherwise MT-off candidates go
    back to the SPGR pool and the MT-on series are left out."""
    on = [s for s in series if s.kind == "mt-on"]
    off = sorted((s for s in series if s.kind == "mt-off"), key=lambda s: s.flip_angle or 0)
    if len(on) == 1 and len(off) == 2 and off[0].flip_angle != off[1].flip_angle:
        on[0].kind, off[0].kind, off[1].kind = "mts", "mts", "mts"
        on[0].entities, off[0].entities, off[1].entities = "flip-1_mt-on", "flip-1_mt-off", "flip-2_mt-off"
        return
    for s in off:
        s.kind = "spgr"
    for s in on:
        s.kind, s.reason = "", (f"MT-weighted, but the MTS trio needs one MT-on and two MT-off series at two flip "
                                f"angles ({len(on)} MT-on, {len(off)} MT-off found)")


def _settle_vfa(series: list[Series]) -> None:
    """Single-echo GR magnitudes on one grid and TR at two or more flip angles (one series each) make the VFA
    series; the first such group (lowest series number) is imported, the other candidates are left out."""
    groups: dict[tuple, list[Series]] = {}
    for s in series:
        if s.kind == "spgr":
            key = (round(float(s.sidecar.get("RepetitionTime", 0)), 6), _grid_key(s.files[0]))
            groups.setdefault(key, []).append(s)
    chosen: list[Series] = []
    for members in groups.values():
        angles = [m.flip_angle for m in members]
        if not chosen and len(set(angles)) >= 2 and len(set(angles)) == len(angles):
            chosen = members
            for i, m in enumerate(sorted(members, key=lambda m: m.flip_angle), start=1):
                m.kind, m.entities = "vfa", f"flip-{i}"
            continue
        for m in members:
            m.kind, m.reason = "", _not_vfa(m, angles, chosen)


def _not_vfa(s: Series, angles: list, chosen: list[Series]) -> str:
    """Why a single-echo GR magnitude is not imported as VFA (``angles``: those of its grid and TR group)."""
    protocol = f"FA {s.flip_angle} deg, TR {s.sidecar.get('RepetitionTime')} s"
    if len(set(angles)) != len(angles):
        return (f"single-echo gradient echo ({protocol}) on a grid and TR where a flip angle is repeated; VFA needs "
                "one series per flip angle")
    if len(angles) >= 2:
        return f"another VFA series ({protocol}); {chosen[0].label()} and its partners were imported"
    return (f"single-echo gradient echo ({protocol}) without a VFA partner at another flip angle on its grid and TR"
            + (" (a VFA series was imported)" if chosen else ""))


def _grid_key(path: Path) -> tuple:
    import nibabel as nib

    img = nib.load(str(path))
    return tuple(img.shape[:3]) + tuple(np.round(img.affine, 3).ravel())


_SUFFIX = {"mese": ("anat", "MESE"), "megre-mag": ("anat", "part-mag_MEGRE"),
           "megre-phase": ("anat", "part-phase_MEGRE"), "vfa": ("anat", "VFA"), "mts": ("anat", "MTS"),
           "b1": ("fmap", "TB1map"), "dwi": ("dwi", "dwi")}


def _bids_names(s: Series, subject: str) -> list[str]:
    """The BIDS paths (relative to ``sub-XX``, without extension) of the files of a classified series."""
    if not s.kind:
        return []
    folder, suffix = _SUFFIX[s.kind]
    stem = f"sub-{subject}"
    if s.kind in ("mese", "megre-mag", "megre-phase"):
        return [f"{folder}/{stem}_echo-{i}_{suffix}" for i in range(1, len(s.files) + 1)]
    if s.kind in ("vfa", "mts"):
        return [f"{folder}/{stem}_{s.entities}_{suffix}"]
    return [f"{folder}/{stem}_{suffix}"]


# --------------------------------------------------------------------------------------------------
# writing the subject
# --------------------------------------------------------------------------------------------------
@dataclass
class DicomImport:
    """What :func:`import_dicom` did: the subject folder, the files written and the series left out."""

    subject_dir: Path
    written: list[Path]
    left_out: list[Series]

    def left_out_lines(self) -> list[str]:
        """One line per series left out: number, description and why."""
        return [f"{s.label()}: {s.reason}" for s in self.left_out]


def series_volume(s: Series) -> Volume:
    """The series as one :class:`~napari_myelin.io.volume.Volume` in memory (echoes stacked last, with
    their ``EchoTime`` list)."""
    return load_echo_series(s.files) if len(s.files) > 1 else load_volume(s.files[0])


def import_dicom(dicom_dir: str | os.PathLike, bids_root: str | os.PathLike, *, subject: str = "01") -> DicomImport:
    """Convert a DICOM folder and write its recognised series as ``bids_root/sub-<subject>``.

    The subject folder is assembled in a temporary folder inside ``bids_root`` and renamed into place
    at the end, so an interrupted import leaves nothing; ``bids_root/dataset_description.json`` is
    written when missing.

    Parameters
    ----------
    dicom_dir : path
        Folder of the scanner's DICOM export (searched to any depth).
    bids_root : path
        BIDS dataset folder (created if needed).
    subject : str
        BIDS subject label (letters and digits).

    Returns
    -------
    DicomImport

    Raises
    ------
    InputError
        Bad subject label, the subject folder already holds files, no DICOM file, or no series of a
        kind that napari-myelin reads (the series found are named).
    """
    if not re.fullmatch(r"[A-Za-z0-9]+", subject):
        raise InputError(f"--subject '{subject}': a BIDS label has only letters and digits; give e.g. --subject 01.")
    final = Path(bids_root) / f"sub-{subject}"
    if final.exists() and any(final.iterdir()):
        raise InputError(f"{final}: already holds files; import into another --subject or remove that folder first.")
    _require_dicom(dicom_dir)
    root = check_output_folder(bids_root)
    with tempfile.TemporaryDirectory(dir=root, prefix=".napari-myelin-import-") as tmp:
        series = convert_dicom(dicom_dir, Path(tmp) / "dcm2niix", subject)
        kept = [s for s in series if s.kind]
        if not kept:
            raise InputError(f"{dicom_dir}: none of its {len(series)} series is a MESE, DWI, MEGRE, VFA, MTS or B1 "
                             f"series ({'; '.join(f'{s.label()}: {s.reason}' for s in series)}).")
        staging = Path(tmp) / final.name
        for s in kept:
            _write_series(s, staging)
        written = sorted(final / p.relative_to(staging) for p in staging.rglob("*") if p.is_file())
        if final.exists():
            final.rmdir()
        os.replace(staging, final)
    _dataset_description(root)
    return DicomImport(final, written, [s for s in series if not s.kind])


def _write_series(s: Series, staging: Path) -> None:
    """The files of one classified series under their BIDS names, with their sidecars (and b-table)."""
    for src, side, name in zip(s.files, s.sidecars, s.names):
        dest = staging / f"{name}.nii.gz"
        dest.parent.mkdir(parents=True, exist_ok=True)
        side = dict(side)
        if s.kind == "mts":
            side.update(MTState=s.entities.endswith("mt-on"), RepetitionTimeExcitation=side.get("RepetitionTime"))
        if s.kind == "b1" and "FLIP ANGLE MAP" in s.image_type:
            vol = load_volume(src)
            side.update(Units="ratio", B1Scaling="Siemens flip-angle map (0.1 deg, 80 deg preparation pulse) / 800")
            save_volume(np.asarray(vol.data, np.float32) / 800.0, dest, vol.affine, sidecar=side)
            continue
        shutil.copyfile(src, dest)
        (staging / f"{name}.json").write_text(json.dumps(side, indent=2), encoding="utf-8")
        for ext in (".bval", ".bvec") if s.kind == "dwi" else ():
            shutil.copyfile(sidecar_path(src, ext), staging / f"{name}{ext}")


def _dataset_description(root: Path) -> None:
    """A raw BIDS ``dataset_description.json`` (when missing) naming dcm2niix and napari-myelin."""
    from napari_myelin import __version__

    path = root / "dataset_description.json"
    if path.exists():
        return
    desc = {"Name": "imported with napari-myelin", "BIDSVersion": "1.9.0", "DatasetType": "raw",
            "GeneratedBy": [{"Name": "dcm2niix", "Version": dcm2niix.__version__},
                            {"Name": "napari-myelin", "Version": __version__}]}
    atomic_write_bytes(path, json.dumps(desc, indent=2).encode("utf-8"))
