"""Standard-space templates and white-matter label atlases.

Shipped with the package (``napari_myelin/data/atlas``, see its ``NOTICE.md``):

* the MNI ICBM152 2009a nonlinear symmetric T1 template (1 and 2 mm) and its grey/white-matter
  probability maps (2 mm; 1 mm is interpolated from them), plus a brain mask;
* a white-matter tract label map derived from the HCP842 tractography atlas (1 and 2 mm, on the
  template grids) with its lookup table (``index``, ``name``, ``abbreviation``, ``hemisphere``):
  each white-matter voxel (WM probability >= 0.5) carries the smallest tract covering it, cranial
  nerves dropped, the corpus callosum split into genu, body and splenium, left/right kept
  (``scripts/build_atlas.py`` documents every rule);
* a 2 mm map of fibre directions (unit vectors in world RAS axes) used by the phantom.

Also read: any user label image with its lookup table (:func:`load_labels`) and FSL's
JHU ICBM-DTI-81 labels from an FSL installation (:func:`load_jhu_labels`; never copied into the
package, its licence forbids it).

References
----------
Fonov V et al., "Unbiased average age-appropriate atlases for pediatric studies", NeuroImage 54:313
(2011); Fonov V et al., NeuroImage 47:S102 (2009).
Yeh F-C et al., "Population-averaged atlas of the macroscale human structural connectome and its
network topology", NeuroImage 178:57 (2018).
Mori S et al., "Stereotaxic white matter atlas based on diffusion tensor imaging in an ICBM
template", NeuroImage 40:570 (2008).
"""

from __future__ import annotations

import functools
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd

from napari_myelin.utils.errors import InputError
from napari_myelin.io.lut import find_lut, read_lut
from napari_myelin.io.resample import resample_to_grid
from napari_myelin.io.volume import Volume, load_volume

#: Folder of the shipped atlas files.
ATLAS_DIR = Path(__file__).resolve().parent.parent / "data" / "atlas"

TISSUES = ("wm", "gm", "csf")
_RESOLUTIONS = (1, 2)


def _check_resolution(resolution_mm) -> int:
    try:
        res = int(resolution_mm)
    except (TypeError, ValueError):
        res = -1
    if res not in _RESOLUTIONS or float(resolution_mm) != res:
        raise InputError(f"resolution_mm={resolution_mm!r}: the shipped atlas exists at 1 or 2 mm; choose 1 or 2.")
    return res


@functools.lru_cache(maxsize=16)
def _read(name: str) -> tuple[np.ndarray, np.ndarray]:
    vol = load_volume(ATLAS_DIR / name)
    data = vol.data
    data.setflags(write=False)
    return data, vol.affine


def _volume(name: str, dtype=None, **metadata) -> Volume:
    data, affine = _read(name)
    arr = np.array(data, dtype=dtype or data.dtype)
    vol = Volume(arr, affine.copy(), None, dict(metadata), ATLAS_DIR / name)
    return vol


def load_template(resolution_mm: int = 2) -> Volume:
    """The MNI ICBM152 2009a nonlinear symmetric T1-weighted template.

    Parameters
    ----------
    resolution_mm : {1, 2}
        Grid spacing. The 2 mm grid is the mean of 2x2x2 blocks of the 1 mm grid
        (1 mm: 197 x 233 x 189; 2 mm: 99 x 117 x 95; RAS, MNI mm).

    Returns
    -------
    Volume
        float32 intensities (0-255 as distributed; brain-extracted).
    """
    res = _check_resolution(resolution_mm)
    return _volume(f"mni_t1_{res}mm.nii.gz", np.float32, Description="MNI ICBM152 2009a sym T1 template")


def load_brain_mask(resolution_mm: int = 2) -> Volume:
    """Brain mask of the template (bool), on the grid of :func:`load_template`."""
    res = _check_resolution(resolution_mm)
    return _volume(f"mni_brain_{res}mm.nii.gz", bool, Description="MNI ICBM152 2009a brain mask")


def load_tissue_probability(tissue: str, resolution_mm: int = 2) -> Volume:
    """Tissue probability map of the template (float32, 0-1).

    Parameters
    ----------
    tissue : {"wm", "gm", "csf"}
        White matter, grey matter, or cerebrospinal fluid. The CSF probability is
        ``brain_mask * (1 - wm - gm)`` (clipped to 0-1): the template ships WM and GM only.
    resolution_mm : {1, 2}
        Grid of :func:`load_template`. The 1 mm maps are trilinear interpolations of the 2 mm
        ones (the 1 mm source maps are not shipped, to keep the package small).
    """
    tissue = str(tissue).lower()
    if tissue not in TISSUES:
        raise InputError(f"tissue={tissue!r}: unknown tissue class; choose one of {', '.join(TISSUES)}.")
    res = _check_resolution(resolution_mm)
    if tissue == "csf":
        wm = load_tissue_probability("wm", res).data
        gm = load_tissue_probability("gm", res).data
        brain = load_brain_mask(res).data
        csf = np.clip(1.0 - wm - gm, 0.0, 1.0) * brain
        return Volume(csf.astype(np.float32), load_brain_mask(res).affine, None,
                      {"Units": "probability", "Description": "CSF probability = brain * (1 - wm - gm)"}, None)
    desc = {"wm": "white-matter probability", "gm": "grey-matter probability"}[tissue]
    vol2 = _volume(f"mni_{tissue}_2mm.nii.gz", np.float32, Units="probability", Description=desc)
    if res == 2:
        return vol2
    t1 = load_template(1)
    data = np.clip(resample_to_grid(vol2, t1.affine, t1.shape, cval=None)[0], 0, 1).astype(np.float32)
    return Volume(data, t1.affine, None, dict(vol2.metadata), None)


def tract_lut() -> pd.DataFrame:
    """Lookup table of the shipped tract atlas (``index``, ``name``, ``abbreviation``, ``hemisphere``)."""
    return read_lut(ATLAS_DIR / "hcp842_tracts.tsv")


def load_tract_atlas(resolution_mm: int = 2) -> tuple[Volume, pd.DataFrame]:
    """White-matter tract labels derived from HCP842, on the template grid.

    Returns
    -------
    labels : Volume
        int32 labels (0 = not labelled white matter or not white matter) on the grid of
        :func:`load_template` with the same ``resolution_mm``.
    lut : DataFrame
        ``index``, ``name``, ``abbreviation`` (e.g. ``GCC``, ``CST_L``), ``hemisphere`` (L, R, M).
    """
    res = _check_resolution(resolution_mm)
    vol = _volume(f"hcp842_tracts_{res}mm.nii.gz", np.int32, Description="HCP842-derived white-matter tract labels")
    return vol, tract_lut()


def load_fibre_direction() -> Volume:
    """Unit fibre direction of each labelled tract voxel (2 mm grid, 4D ``(..., 3)``, world RAS axes).

    The principal axis of the local covariance of the tract's mask (Gaussian window, sigma 6 mm);
    the callosal body is set left-right (see ``scripts/build_atlas.py``). Zero outside the labels.
    """
    vol = _volume("hcp842_direction_2mm.nii.gz", np.float32, Description="tract fibre direction (RAS unit vector)")
    norm = np.linalg.norm(vol.data, axis=-1, keepdims=True)
    vol.data = np.divide(vol.data, norm, out=np.zeros_like(vol.data), where=norm > 0)
    return vol


def load_labels(path: str | os.PathLike, lut: str | os.PathLike | pd.DataFrame | None = None) -> tuple[Volume, pd.DataFrame]:
    """A user label image (integer NIfTI) and its lookup table.

    Parameters
    ----------
    path : path-like
        3D label image (integer values; 0 = background).
    lut : path-like, DataFrame or None
        ``.tsv`` (``index``, ``name`` ...) or FSL-style ``.txt`` table. ``None`` looks for
        ``NAME.tsv``/``NAME.txt`` beside the image, else names the labels ``label_<index>``.

    Raises
    ------
    InputError
        Not 3D, not integer-valued, or the table misses labels present in the image.
    """
    vol = load_volume(path)
    if vol.data.ndim != 3:
        raise InputError(f"{path}: a label image must be 3D, found {vol.data.ndim}D; give one label map.")
    data = vol.data
    if data.dtype.kind == "f":
        if not np.all(np.isfinite(data)) or not np.allclose(data, np.round(data)):
            raise InputError(f"{path}: holds non-integer values; a label map must store integer labels.")
    vol.data = np.round(data).astype(np.int32)
    if lut is None:
        table = find_lut(path)
    elif isinstance(lut, pd.DataFrame):
        table = lut.copy()
        if not {"index", "name"} <= set(table.columns):
            raise InputError("lut: a lookup table needs 'index' and 'name' columns.")
    else:
        table = read_lut(lut)
    present = np.unique(vol.data)
    present = present[present != 0]
    if table is None:
        table = pd.DataFrame({"index": present.astype(int), "name": [f"label_{i}" for i in present]})
    missing = sorted(set(present.tolist()) - set(table["index"].tolist()))
    if missing:
        raise InputError(
            f"{path}: labels {missing[:5]} are not in the lookup table; give the table that goes with this image."
        )
    for col in ("abbreviation", "hemisphere"):
        if col not in table.columns:
            table[col] = table["name"] if col == "abbreviation" else [_hemisphere(n) for n in table["name"]]
    return vol, table.reset_index(drop=True)


def _hemisphere(name: str) -> str:
    n = str(name).strip().lower()
    if n.endswith((" l", "_l", " left", "(left)", " left)")) or n.startswith("left"):
        return "L"
    if n.endswith((" r", "_r", " right", "(right)", " right)")) or n.startswith("right"):
        return "R"
    return "M"


def fsl_dir() -> Path | None:
    """``$FSLDIR`` when it points to an existing folder, else ``None``."""
    value = os.environ.get("FSLDIR")
    return Path(value) if value and Path(value).is_dir() else None


def read_fsl_atlas_xml(xml_path: str | os.PathLike) -> pd.DataFrame:
    """Lookup table of an FSL atlas XML (``<label index="i">name</label>``; label value = i + 1)."""
    try:
        root = ET.parse(str(xml_path)).getroot()
    except (ET.ParseError, OSError) as exc:
        raise InputError(f"{xml_path}: cannot read the FSL atlas description ({exc}).") from None
    rows = []
    for lab in root.iter("label"):
        name = (lab.text or "").strip()
        rows.append({"index": int(lab.get("index")) + 1, "name": name})
    table = pd.DataFrame(rows, columns=["index", "name"])
    table["abbreviation"] = table["name"]
    table["hemisphere"] = [_hemisphere(n) for n in table["name"]]
    return table


def load_jhu_labels(resolution_mm: int = 1) -> tuple[Volume, pd.DataFrame]:
    """FSL's JHU ICBM-DTI-81 white-matter labels, read from ``$FSLDIR/data/atlases/JHU``.

    Parameters
    ----------
    resolution_mm : {1, 2}
        ``JHU-ICBM-labels-1mm`` or ``-2mm``.

    Raises
    ------
    InputError
        When FSL (with its atlases) is not installed: the JHU atlas may not be redistributed.
    """
    res = _check_resolution(resolution_mm)
    root = fsl_dir()
    if root is None:
        raise InputError(
            "JHU labels: FSLDIR is not set to an FSL installation; install FSL (its JHU atlas cannot be shipped) "
            "or use the shipped HCP842 tract atlas."
        )
    folder = root / "data" / "atlases"
    image = folder / "JHU" / f"JHU-ICBM-labels-{res}mm.nii.gz"
    xml = folder / "JHU-labels.xml"
    if not image.exists() or not xml.exists():
        raise InputError(
            f"JHU labels: {image} or {xml} is missing in the FSL installation; install FSL's atlases "
            "or use the shipped HCP842 tract atlas."
        )
    vol = load_volume(image)
    vol.data = np.round(vol.data).astype(np.int32)
    return vol, read_fsl_atlas_xml(xml)
