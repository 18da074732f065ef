"""Find the acquisitions of one subject in a BIDS-like folder.

Recognised files (``*`` stands for the subject and session entities; ``.nii`` or ``.nii.gz``):

============  ==================================================================================
acquisition   files
============  ==================================================================================
``mese``      ``anat/*_MESE.nii.gz`` (4D, ``EchoTime`` list) or ``anat/*_echo-N_MESE.nii.gz``
``gre``       ``anat/*_part-mag_MEGRE`` + ``anat/*_part-phase_MEGRE`` (4D), or one file per echo
              (``*_echo-N_part-mag_MEGRE`` / ``*_echo-N_part-phase_MEGRE``)
``spgr``      ``anat/*_VFA.nii.gz`` (4D, ``FlipAngle`` list) or ``anat/*_flip-N_VFA.nii.gz``
``mts``       ``anat/*_flip-1_mt-on_MTS``, ``*_flip-1_mt-off_MTS``, ``*_flip-2_mt-off_MTS`` (MT-, PD- and
              T1-weighted SPGR; ``FlipAngle`` and ``RepetitionTimeExcitation`` in each sidecar)
``b1``        ``fmap/*_TB1map.nii.gz`` (ratio of actual to nominal flip angle)
``dwi``       ``dwi/*_dwi.nii.gz`` with ``.bval``/``.bvec`` beside it
============  ==================================================================================

The phantom (:func:`napari_myelin.sims.phantom.write_phantom`) writes exactly this layout.

References
----------
BIDS specification 1.9, "Magnetic Resonance Imaging: Quantitative MRI" (MESE, MEGRE, VFA, MTS, TB1map).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_myelin.utils.errors import InputError
from napari_myelin.io.volume import Volume, load_echo_series, load_volume

_NII = ("*.nii.gz", "*.nii")


def _glob(folder: Path, pattern: str) -> list[Path]:
    return sorted(p for ext in _NII for p in folder.glob(pattern + ext[1:]))


@dataclass
class SubjectFiles:
    """Input files of one subject; absent acquisitions are empty lists."""

    root: Path
    subject: str
    mese: list[Path] = field(default_factory=list)
    gre_mag: list[Path] = field(default_factory=list)
    gre_phase: list[Path] = field(default_factory=list)
    spgr: list[Path] = field(default_factory=list)
    mts: list[Path] = field(default_factory=list)
    b1: list[Path] = field(default_factory=list)
    dwi: list[Path] = field(default_factory=list)

    def present(self) -> dict[str, bool]:
        """Which acquisitions were found."""
        return {
            "mese": bool(self.mese),
            "gre": bool(self.gre_mag and self.gre_phase),
            "spgr": bool(self.spgr),
            "mts": len(self.mts) == 3,
            "b1": bool(self.b1),
            "dwi": bool(self.dwi),
        }

    def all_files(self) -> list[Path]:
        files = self.mese + self.gre_mag + self.gre_phase + self.spgr + self.mts + self.b1 + self.dwi
        for d in self.dwi:
            files += [d.with_name(d.name.split(".nii")[0] + s) for s in (".bval", ".bvec")]
        return files


def find_subject(subject_dir: str | os.PathLike) -> SubjectFiles:
    """Find the acquisitions of a subject folder (``.../sub-XX``).

    Raises
    ------
    InputError
        The folder does not exist or holds none of the recognised acquisitions.
    """
    root = Path(subject_dir)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder; give a BIDS-like subject folder such as sample_data/sub-01.")
    m = re.match(r"sub-([A-Za-z0-9]+)", root.name)
    subject = m.group(1) if m else root.name
    anat, dwi = root / "anat", root / "dwi"
    files = SubjectFiles(root, subject)
    files.mese = _glob(anat, "*_MESE")
    files.gre_mag = _glob(anat, "*part-mag*_MEGRE")
    files.gre_phase = _glob(anat, "*part-phase*_MEGRE")
    files.spgr = _glob(anat, "*_VFA")
    files.mts = _subject_mts(anat)
    files.b1 = _glob(root / "fmap", "*_TB1map")
    files.dwi = _glob(dwi, "*_dwi")[:1]
    if not any(files.present().values()):
        raise InputError(
            f"{root}: no MESE, MEGRE, VFA, MTS or DWI images were found in anat/ or dwi/; see the documentation (Files and orientation) for the "
            "expected BIDS names."
        )
    return files


_MTS_ENTITIES = re.compile(r"_flip-(\d+)_mt-(on|off)_MTS(\.nii(\.gz)?)?$")


def mts_roles(paths) -> list[Path]:
    """Three MTS files in the order MT-weighted, PD-weighted, T1-weighted, by their BIDS entities.

    ``*_mt-on_MTS`` is the MT-weighted volume; of the two ``*_mt-off_MTS`` files the lower ``flip-N`` is the
    PD-weighted and the higher the T1-weighted one (BIDS: ``flip-1_mt-on``, ``flip-1_mt-off``, ``flip-2_mt-off``).
    Files without these entities are taken in the order given.

    Raises
    ------
    InputError
        Some files carry MTS entities and some do not, or the entities do not name one MT-on and two MT-off
        volumes at two different flip indices.
    """
    paths = [Path(p) for p in paths]
    found = [_MTS_ENTITIES.search(p.name) for p in paths]
    if not any(found):
        return paths
    if not all(found) or len(paths) != 3:
        raise InputError(f"{paths[0].parent}: MTS files {[p.name for p in paths]} do not make one BIDS trio; give "
                         "three files named *_flip-1_mt-on_MTS, *_flip-1_mt-off_MTS and *_flip-2_mt-off_MTS.")
    on = [p for p, m in zip(paths, found) if m.group(2) == "on"]
    off = sorted(((int(m.group(1)), p) for p, m in zip(paths, found) if m.group(2) == "off"), key=lambda x: x[0])
    if len(on) != 1 or len(off) != 2 or off[0][0] == off[1][0]:
        raise InputError(f"{paths[0].parent}: MTS files {[p.name for p in paths]} need one mt-on and two mt-off "
                         "volumes at two flip indices (*_flip-1_mt-on, *_flip-1_mt-off, *_flip-2_mt-off).")
    return [on[0], off[0][1], off[1][1]]


def _subject_mts(anat: Path) -> list[Path]:
    """The MTS trio of a subject's ``anat/`` folder in role order, or ``[]`` when it has none."""
    paths = _glob(anat, "*_MTS")
    if paths and (len(paths) != 3 or not all(_MTS_ENTITIES.search(p.name) for p in paths)):
        raise InputError(f"{anat}: MTS files {[p.name for p in paths]} were found; the MTsat step needs exactly three, "
                         "named *_flip-1_mt-on_MTS, *_flip-1_mt-off_MTS and *_flip-2_mt-off_MTS.")
    return mts_roles(paths) if paths else []


def load_multi(paths: list[Path]) -> Volume:
    """One 4D file as is, or one file per echo assembled with its echo times."""
    if len(paths) == 1:
        return load_volume(paths[0])
    return load_echo_series(paths)


def first_volume(vol: Volume) -> Volume:
    """The first 3D volume of a series (used as a registration image)."""
    data = vol.data[..., 0] if vol.data.ndim == 4 else vol.data
    return Volume(np.asarray(data, dtype=np.float32), vol.affine, None, {}, vol.path)
