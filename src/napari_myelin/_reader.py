"""npe2 readers: NIfTI files, napari-myelin result folders and DICOM folders to napari layers.

A DICOM folder is converted by dcm2niix into a temporary folder (:func:`napari_myelin.io.dicom.convert_dicom`)
and every series becomes a layer: the recognised ones named by their BIDS name (echoes stacked), the others
by series number and description.

Integer-valued files that look like label maps (integer dtype, or a lookup table beside them)
become Labels layers, with region names from a ``.tsv`` (``index`` and ``name`` columns) or an
FSL-style ``.txt`` lookup table beside the file.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np

from ._layers import volume_to_layer
from ._styles import DIVERGING, MAP_LABELS, display_style, robust_limits
from napari_myelin.io.dicom import convert_dicom, has_dicom, series_volume
from napari_myelin.io.lut import find_lut
from napari_myelin.io.volume import is_nifti, load_volume


def napari_get_reader(path):
    """:func:`read_nifti` for NIfTI paths, :func:`read_results` for a napari-myelin results folder."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if paths and all(is_nifti(p) for p in paths):
        return read_nifti
    if len(paths) == 1 and results_subjects(paths[0]):
        return read_results
    return None


def results_subjects(folder) -> list[Path]:
    """Subject folders of a results folder written by ``napari-myelin run`` (or the folder itself)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    if (folder / ".napari-myelin").is_dir():
        return [folder]
    return sorted(p for p in folder.glob("sub-*") if (p / ".napari-myelin").is_dir())


def read_results(path):
    """Every native-space map of a results folder, styled (colormap, units, robust contrast limits: the 1st-99th
    percentiles of its non-zero voxels), and the
    tract labels with their names. Template-space maps (``space-MNI...``) are left out: they are on
    another grid; open them as files."""
    layers = []
    for subject in results_subjects(path):
        for f in sorted(subject.glob("*/*.nii.gz")):
            entities = f.name[: -len(".nii.gz")].split("_")
            space = next((e[6:] for e in entities if e.startswith("space-")), "")
            name = entities[-1]
            if space.startswith("MNI") or name == "mask":
                continue
            if name == "tracts":
                layers.extend((d, {**a, "name": f"{subject.name} tracts · {space}", "visible": False}, t)
                              for d, a, t in read_nifti(f))
                continue
            vol = load_volume(f)
            units = vol.metadata.get("Units", "")
            style, factor = display_style(name, units)
            data = vol.with_data(vol.data * factor if factor != 1.0 else vol.data)
            values = np.asarray(data.data, dtype=float)
            style["contrast_limits"] = robust_limits(values, np.isfinite(values) & (values != 0),
                                                     diverging=name in DIVERGING)  # the maps' 0 outside the mask
            meta = {**style.pop("metadata"), "source": str(f)}
            label = MAP_LABELS[name][0] if name in MAP_LABELS else f"{name} ({meta['units']})" if meta["units"] else name
            layers.append(volume_to_layer(data, name=f"{subject.name} {label} · {space}", metadata=meta,
                                          blending="additive", visible=name in ("mwf", "imwf"), **style))
    return layers


_LABEL_HINTS = ("dseg", "label", "mask", "tract", "atlas", "roi")


def looks_like_labels(data: np.ndarray, filename: str) -> bool:
    """Integer data named like a segmentation (BIDS ``_dseg``/``_mask``, atlas, ROI) or with few values."""
    if not np.issubdtype(data.dtype, np.integer):
        return False
    return any(h in filename.lower() for h in _LABEL_HINTS) or np.unique(data).size <= 64


def read_nifti(path):
    """Layer data tuples for NIfTI files (images or labels)."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    layers = []
    for p in paths:
        vol = load_volume(p)
        lut = find_lut(p)
        is_labels = vol.data.ndim == 3 and (lut is not None or looks_like_labels(vol.data, Path(p).name))
        if is_labels:
            vol.data = vol.data.astype(np.int32)
            data, attrs, _ = volume_to_layer(vol, layer_type="labels")
            if lut is not None:
                attrs["metadata"]["lut"] = lut.to_dict(orient="list")
                attrs["features"] = lut
            layers.append((data, attrs, "labels"))
        else:
            layers.append(volume_to_layer(vol))
    return layers


def napari_get_dicom_reader(path):
    """:func:`read_dicom` for one folder that holds DICOM files (any depth), else None."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if len(paths) == 1 and Path(paths[0]).is_dir() and has_dicom(paths[0]):
        return read_dicom
    return None


def read_dicom(path):
    """Every series of a DICOM folder as an image layer (converted in a temporary folder, then loaded)."""
    folder = path if isinstance(path, (str, Path)) else path[0]
    layers = []
    with tempfile.TemporaryDirectory(prefix="napari-myelin-dicom-") as tmp:
        for s in convert_dicom(folder, tmp):
            if s.names:  # recognised: one layer, echoes stacked
                named = [(re.sub(r"_echo-\d+", "", s.names[0].split("/")[-1]), series_volume(s))]
            else:  # left out: one layer per file (it may hold coil images, other grids ...)
                tag = f"{s.number} {s.description}"
                named = [(tag if len(s.files) == 1 else f"{tag} ({i})", load_volume(f)) for i, f in
                         enumerate(s.files, start=1)]
            for name, vol in named:
                vol.data, vol.path = np.array(vol.data), None  # in memory before the temporary files go
                layers.append(volume_to_layer(vol, name=name))
    return layers
