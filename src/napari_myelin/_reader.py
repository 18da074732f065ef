"""npe2 reader: NIfTI files (and, later, result folders) to napari layers.

Integer-valued files that look like label maps (integer dtype, or a lookup table beside them)
become Labels layers, with region names from a ``.tsv`` (``index`` and ``name`` columns) or an
FSL-style ``.txt`` lookup table beside the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._layers import volume_to_layer
from .core.lut import find_lut
from .core.volume import is_nifti, load_volume


def napari_get_reader(path):
    """Return :func:`read_nifti` for one or more NIfTI paths, else ``None``."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if paths and all(is_nifti(p) for p in paths):
        return read_nifti
    return None


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
