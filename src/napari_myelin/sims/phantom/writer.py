"""Writing a simulated subject as a BIDS-like dataset with its ground truth (:func:`write_phantom`).

The layout is the one :mod:`napari_myelin.io.bids` reads: raw series under ``sub-XX/`` (magnitudes as
int16, as scanners export them), truth maps under ``derivatives/truth/sub-XX/<modality>/`` with their
units in the sidecars.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from napari_myelin.io.volume import Volume, check_output_folder, save_volume
from napari_myelin.sims.phantom.constants import INT16_SERIES
from napari_myelin.sims.phantom.subject import Phantom, make_phantom
from napari_myelin.utils.progress import step


def _sidecar(vol: Volume, extra: dict | None = None) -> dict:
    """BIDS sidecar of a series: its metadata without the description, plus ``extra``."""
    side = {k: v for k, v in vol.metadata.items() if k not in ("Description",)}
    side.update(extra or {})
    return side


def write_phantom(out_dir: str | os.PathLike, seed: int = 0, size: str = "small", snr: float = 200.0,
                  lesions: bool = False, *, progress=None, cancel=None) -> dict[str, Path]:
    """Simulate a phantom and write it as a BIDS-like dataset with its truth.

    Layout::

        OUT/dataset_description.json
        OUT/sub-XX/anat/sub-XX_MESE.nii.gz (+ .json: EchoTime list ...)
        OUT/sub-XX/anat/sub-XX_part-mag_MEGRE.nii.gz, sub-XX_part-phase_MEGRE.nii.gz
        OUT/sub-XX/anat/sub-XX_VFA.nii.gz (FlipAngle list, RepetitionTime)
        OUT/sub-XX/anat/sub-XX_flip-1_mt-on_MTS.nii.gz, sub-XX_flip-1_mt-off_MTS.nii.gz, sub-XX_flip-2_mt-off_MTS.nii.gz
            (MT-, PD- and T1-weighted SPGR; FlipAngle, RepetitionTimeExcitation, MTState)
        OUT/sub-XX/fmap/sub-XX_TB1map.nii.gz
        OUT/sub-XX/dwi/sub-XX_dwi.nii.gz (+ .bval, .bvec, .json)
        OUT/derivatives/truth/sub-XX/<mese|dwi|gre|spgr|b1|mts>/<map>.nii.gz (+ .json with Units)
        OUT/derivatives/truth/tracts.tsv (label lookup table; also beside every labels map)

    ``XX`` is the seed on two digits. Series are stored 4D with list-valued sidecar entries;
    magnitude series as int16 (rounded, signal scale ~1000), phase in radians (float32).

    Returns
    -------
    dict of str to Path
        Acquisition name -> written file.
    """
    from napari_myelin import __version__
    from napari_myelin.utils.progress import subrange

    out = check_output_folder(out_dir)
    ph = make_phantom(seed=seed, size=size, snr=snr, lesions=lesions, progress=subrange(progress, 0, 0.8),
                      cancel=cancel)
    sub = f"sub-{int(seed):02d}"
    gen = {"Name": "napari-myelin phantom", "Version": __version__,
           "Parameters": {"seed": int(seed), "size": size, "snr": float(snr), "lesions": bool(lesions)}}
    files = _write_acquisitions(ph, out, sub, gen, progress, cancel)
    truth_root = out / "derivatives" / "truth"
    _write_truth(ph, truth_root, sub, gen)
    step(progress, cancel, 0.95, "writing descriptions")
    _write_descriptions(ph, out, truth_root, gen)
    step(progress, cancel, 1.0, "done")
    return files


def _write_acquisitions(ph: Phantom, out: Path, sub: str, gen: dict, progress, cancel) -> dict[str, Path]:
    """The raw series (+ sidecars; + .bval/.bvec for the DWI); returns acquisition name -> file."""
    files = {
        "mese": out / sub / "anat" / f"{sub}_MESE.nii.gz",
        "gre_mag": out / sub / "anat" / f"{sub}_part-mag_MEGRE.nii.gz",
        "gre_phase": out / sub / "anat" / f"{sub}_part-phase_MEGRE.nii.gz",
        "spgr": out / sub / "anat" / f"{sub}_VFA.nii.gz",
        "b1": out / sub / "fmap" / f"{sub}_TB1map.nii.gz",
        "dwi": out / sub / "dwi" / f"{sub}_dwi.nii.gz",
        "mts_mtw": out / sub / "anat" / f"{sub}_flip-1_mt-on_MTS.nii.gz",
        "mts_pdw": out / sub / "anat" / f"{sub}_flip-1_mt-off_MTS.nii.gz",
        "mts_t1w": out / sub / "anat" / f"{sub}_flip-2_mt-off_MTS.nii.gz",
    }
    for i, (name, path) in enumerate(files.items()):
        step(progress, cancel, 0.8 + 0.1 * i / len(files), f"writing {path.name}")
        vol = ph.acq[name]
        path.parent.mkdir(parents=True, exist_ok=True)
        data = vol.data
        if name in INT16_SERIES:  # magnitudes stored as scanners export them (int16)
            data = np.clip(np.rint(data), 0, np.iinfo(np.int16).max).astype(np.int16)
        save_volume(data, path, vol.affine, sidecar=_sidecar(vol, {"GeneratedBy": gen}))
        if name == "dwi":
            np.savetxt(path.with_name(f"{sub}_dwi.bval"), vol.bvals[None], fmt="%g")
            np.savetxt(path.with_name(f"{sub}_dwi.bvec"), vol.bvecs.T, fmt="%.6f")
    return files


def _write_truth(ph: Phantom, truth_root: Path, sub: str, gen: dict) -> None:
    """Every truth map but the DKI parameters (+ Units sidecar; the LUT beside every labels map)."""
    from napari_myelin.io.lut import write_lut

    for modality, maps in ph.truth.items():
        folder = truth_root / sub / modality
        folder.mkdir(parents=True, exist_ok=True)
        for name, vol in maps.items():
            if name == "dki_params":  # large; regenerate with make_phantom when needed
                continue
            data = vol.data.astype(np.uint8) if vol.data.dtype == bool else vol.data
            side = {"Units": vol.metadata.get("Units", ""), "Description": vol.metadata.get("Description", ""),
                    "GeneratedBy": gen, "Grid": f"the grid of the {modality} acquisition"}
            save_volume(data, folder / f"{name}.nii.gz", vol.affine, sidecar=side)
            if name == "labels":
                write_lut(ph.lut, folder / "labels.tsv")
    write_lut(ph.lut, truth_root / "tracts.tsv")


def _write_descriptions(ph: Phantom, out: Path, truth_root: Path, gen: dict) -> None:
    """``dataset_description.json`` of the raw and truth datasets, and the phantom's parameters."""
    desc = {"Name": "napari-myelin digital brain phantom", "BIDSVersion": "1.9.0", "DatasetType": "raw",
            "GeneratedBy": [gen], "License": "CC BY-SA 4.0 (derived from HCP842 and MNI ICBM152, see NOTICE)"}
    (out / "dataset_description.json").write_text(json.dumps(desc, indent=2), encoding="utf-8")
    tdesc = dict(desc, Name="napari-myelin phantom ground truth", DatasetType="derivative")
    (truth_root / "dataset_description.json").write_text(json.dumps(tdesc, indent=2), encoding="utf-8")
    (truth_root / "phantom_parameters.json").write_text(json.dumps(ph.parameters, indent=2), encoding="utf-8")
