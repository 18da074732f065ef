"""Writing an independent subject in the BIDS-like layout of the project phantom (:func:`write_independent_subject`).

The file names are those :mod:`napari_myelin.io.bids` finds (and the project phantom writes), so
``napari-myelin run OUT/sub-XXXX`` processes the subject; the truth maps go under
``derivatives/truth/sub-XXXX/<modality>/`` with their units, and everything drawn for the subject
under ``derivatives/truth/sub-XXXX/simulation_parameters.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from napari_myelin.io.lut import write_lut
from napari_myelin.io.volume import check_output_folder, save_volume
from napari_myelin.sims.independent.constants import INT16_SERIES
from napari_myelin.sims.independent.subject import IndependentSubject, make_independent_subject
from napari_myelin.utils.progress import step, subrange

#: Acquisition -> path below the subject folder (``{sub}`` is ``sub-XXXX``).
LAYOUT = {
    "mese": "anat/{sub}_MESE.nii.gz",
    "gre_mag": "anat/{sub}_part-mag_MEGRE.nii.gz",
    "gre_phase": "anat/{sub}_part-phase_MEGRE.nii.gz",
    "spgr": "anat/{sub}_VFA.nii.gz",
    "b1": "fmap/{sub}_TB1map.nii.gz",
    "dwi": "dwi/{sub}_dwi.nii.gz",
    "mts_mtw": "anat/{sub}_flip-1_mt-on_MTS.nii.gz",
    "mts_pdw": "anat/{sub}_flip-1_mt-off_MTS.nii.gz",
    "mts_t1w": "anat/{sub}_flip-2_mt-off_MTS.nii.gz",
}


def write_subject(subject: IndependentSubject, out_dir: str | os.PathLike, progress=None,
                  cancel=None) -> dict[str, Path]:
    """Write a simulated subject (acquisitions, truth, parameters); returns acquisition name -> file."""
    from napari_myelin import __version__

    out = check_output_folder(out_dir)
    sub = f"sub-{int(subject.parameters['seed']):02d}"
    gen = {"Name": "napari-myelin independent simulator", "Version": __version__,
           "Parameters": {k: subject.parameters[k] for k in ("seed", "size", "snr", "mese_exchange",
                                                             "refocusing_ratio", "spoiling")}}
    if subject.parameters.get("chi_separation"):  # sidecars of default subjects as before the option
        gen["Parameters"]["chi_separation"] = True
    files = {}
    layout = {k: v for k, v in LAYOUT.items() if k in subject.acq}
    for i, (name, pattern) in enumerate(layout.items()):
        path = out / sub / pattern.format(sub=sub)
        step(progress, cancel, 0.8 * i / len(layout), f"writing {path.name}")
        vol = subject.acq[name]
        data = vol.data
        if name in INT16_SERIES:  # magnitudes as scanners export them
            data = np.clip(np.rint(data), 0, np.iinfo(np.int16).max).astype(np.int16)
        side = {k: v for k, v in vol.metadata.items() if k != "Description"}
        path.parent.mkdir(parents=True, exist_ok=True)
        save_volume(data, path, vol.affine, sidecar={**side, "GeneratedBy": gen})
        if name == "dwi":
            np.savetxt(path.with_name(f"{sub}_dwi.bval"), vol.bvals[None], fmt="%g")
            np.savetxt(path.with_name(f"{sub}_dwi.bvec"), vol.bvecs.T, fmt="%.6f")
        files[name] = path
    step(progress, cancel, 0.85, "writing the truth")
    _write_truth(subject, out / "derivatives" / "truth", sub, gen)
    step(progress, cancel, 1.0, "done")
    return files


def _write_truth(subject: IndependentSubject, root: Path, sub: str, gen: dict) -> None:
    """Truth maps (+ Units sidecars; the LUT beside every labels map), parameters and descriptions."""
    for modality, maps in subject.truth.items():
        folder = root / sub / modality
        folder.mkdir(parents=True, exist_ok=True)
        for name, vol in maps.items():
            data = vol.data.astype(np.uint8) if vol.data.dtype == bool else vol.data
            side = {"Units": vol.metadata.get("Units", ""), "Description": vol.metadata.get("Description", ""),
                    "GeneratedBy": gen, "Grid": f"the grid of the {modality} acquisition"}
            save_volume(data, folder / f"{name}.nii.gz", vol.affine, sidecar=side)
            if name == "labels":
                write_lut(subject.lut, folder / "labels.tsv")
    write_lut(subject.lut, root / "tracts.tsv")
    (root / sub / "simulation_parameters.json").write_text(json.dumps(subject.parameters, indent=2),
                                                           encoding="utf-8")
    desc = {"Name": "napari-myelin independent simulator", "BIDSVersion": "1.9.0", "DatasetType": "raw",
            "GeneratedBy": [gen], "License": "CC BY-SA 4.0 (derived from HCP842 and MNI ICBM152, see NOTICE)"}
    (root.parent.parent / "dataset_description.json").write_text(json.dumps(desc, indent=2), encoding="utf-8")
    tdesc = dict(desc, Name="napari-myelin independent simulator ground truth", DatasetType="derivative")
    (root / "dataset_description.json").write_text(json.dumps(tdesc, indent=2), encoding="utf-8")


def write_independent_subject(out_dir: str | os.PathLike, seed: int, size: str = "small", snr=None, *,
                              progress=None, cancel=None, **options) -> dict[str, Path]:
    """Simulate (:func:`.make_independent_subject`, ``options`` passed on) and write one subject.

    Layout (``XXXX`` = the seed)::

        OUT/dataset_description.json
        OUT/sub-XXXX/anat/sub-XXXX_MESE.nii.gz, _part-mag_MEGRE, _part-phase_MEGRE, _VFA (+ .json)
        OUT/sub-XXXX/anat/sub-XXXX_flip-1_mt-on_MTS.nii.gz, _flip-1_mt-off_MTS, _flip-2_mt-off_MTS (option mt)
        OUT/sub-XXXX/fmap/sub-XXXX_TB1map.nii.gz
        OUT/sub-XXXX/dwi/sub-XXXX_dwi.nii.gz (+ .bval, .bvec, .json)
        OUT/derivatives/truth/sub-XXXX/<mese|dwi|gre|spgr|b1|mts>/<map>.nii.gz (+ .json with Units)
        OUT/derivatives/truth/sub-XXXX/simulation_parameters.json
        OUT/derivatives/truth/tracts.tsv

    Returns
    -------
    dict of str to Path
        Acquisition name -> written file.
    """
    subject = make_independent_subject(seed, size, snr, progress=subrange(progress, 0.0, 0.8), cancel=cancel,
                                       **options)
    return write_subject(subject, out_dir, progress=subrange(progress, 0.8, 1.0), cancel=cancel)
