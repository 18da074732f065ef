"""Volumes: NIfTI data with its affine, header and BIDS sidecar metadata; loading and saving.

A :class:`Volume` keeps the voxel array exactly as stored on disk (no reorientation), the true
4x4 voxel-to-world affine (RAS+ mm, as nibabel reports it), the header, the BIDS JSON sidecar
found beside the file and, for diffusion data, the ``.bval``/``.bvec`` tables (FSL convention:
b in s/mm^2, vectors in the image's voxel axes).

Outputs are written with :func:`save_map`: NIfTI + JSON sidecar (units, description, method,
parameters, software version, SHA-256 of inputs), each written to a temporary file in the target
folder and renamed into place, so an interrupted run never leaves a half-written output, and
never over one of the inputs.

References
----------
Gorgolewski et al., "The brain imaging data structure", Sci Data 3, 160044 (2016).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import nibabel as nib
import numpy as np

from napari_myelin.utils.errors import InputError

NIFTI_SUFFIXES = (".nii.gz", ".nii")

#: BIDS sidecar keys that carry protocol parameters the estimators need.
PROTOCOL_KEYS = (
    "EchoTime",
    "RepetitionTime",
    "FlipAngle",
    "InversionTime",
    "MagneticFieldStrength",
    "RefocusingFlipAngle",
    "EchoSpacing",
    "PhaseEncodingDirection",
    "Units",
)


@dataclass
class Volume:
    """Image data with its geometry and metadata.

    Attributes
    ----------
    data : ndarray
        Voxel array as stored (3D, or 4D with echoes/volumes on the last axis).
    affine : ndarray, shape (4, 4)
        Voxel-to-world (RAS+, mm) transform.
    header : nibabel.Nifti1Header or None
        Original header (``None`` for arrays created in memory).
    metadata : dict
        BIDS sidecar content (``EchoTime`` in s, ``FlipAngle`` in deg, ...).
    path : Path or None
        File it was read from.
    bvals, bvecs : ndarray or None
        Diffusion tables, shapes ``(N,)`` (s/mm^2) and ``(N, 3)``.
    """

    data: np.ndarray
    affine: np.ndarray
    header: Any = None
    metadata: dict = field(default_factory=dict)
    path: Path | None = None
    bvals: np.ndarray | None = None
    bvecs: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def zooms(self) -> np.ndarray:
        """Voxel size in mm along the three spatial axes."""
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))

    @property
    def name(self) -> str:
        return strip_nifti_suffix(self.path.name) if self.path else "volume"

    @property
    def echo_times(self) -> np.ndarray | None:
        """Echo times in seconds from the sidecar (``EchoTime``), or ``None``."""
        te = self.metadata.get("EchoTime")
        return None if te is None else np.atleast_1d(np.asarray(te, dtype=float))

    def with_data(self, data: np.ndarray, **metadata: Any) -> "Volume":
        """A new volume on the same grid with other data (e.g. a map derived from this one)."""
        return Volume(np.asarray(data), self.affine.copy(), None, dict(metadata), None)


def strip_nifti_suffix(name: str) -> str:
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_nifti(path: str | os.PathLike) -> bool:
    return str(path).endswith(NIFTI_SUFFIXES)


def sidecar_path(path: str | os.PathLike, suffix: str = ".json") -> Path:
    """The BIDS sidecar (``.json``, ``.bval``, ``.bvec`` ...) that belongs beside a NIfTI file."""
    path = Path(path)
    return path.with_name(strip_nifti_suffix(path.name) + suffix)


def read_sidecar(path: str | os.PathLike) -> dict:
    """Read the JSON sidecar beside ``path`` (empty dict when there is none)."""
    js = sidecar_path(path)
    if not js.exists():
        return {}
    try:
        return json.loads(js.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{js}: the JSON sidecar is not valid JSON ({exc}); fix or remove it.") from None


def read_bval_bvec(bval: str | os.PathLike, bvec: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read FSL-style ``.bval`` (one row) and ``.bvec`` (three rows) files.

    Returns
    -------
    bvals : ndarray, shape (N,)
        b-values in s/mm^2.
    bvecs : ndarray, shape (N, 3)
        Gradient directions.
    """
    for p in (bval, bvec):
        if not Path(p).exists():
            raise InputError(f"{p}: file not found; give the diffusion table that goes with the DWI.")
    try:
        bvals = np.loadtxt(bval, ndmin=1).ravel()
        bvecs = np.loadtxt(bvec, ndmin=2)
    except ValueError:
        raise InputError(f"{bval} / {bvec}: not numeric tables; expected FSL .bval/.bvec text files.") from None
    if bvecs.ndim != 2 or 3 not in bvecs.shape:
        raise InputError(f"{bvec}: expected 3 rows (x, y, z) of gradient directions, found shape {bvecs.shape}.")
    if bvecs.shape[0] == 3 and bvecs.shape[1] != 3 or (bvecs.shape == (3, 3)):
        bvecs = bvecs.T
    if bvecs.shape[0] != bvals.size:
        raise InputError(
            f"{bval} has {bvals.size} b-values but {bvec} has {bvecs.shape[0]} directions; "
            "they must list the same volumes."
        )
    return bvals, bvecs


def _read_nifti(path: Path):
    """Read a NIfTI-1/2 image; a ``.gz`` is decompressed whole first so that a truncated or corrupt
    gzip stream (bad CRC or length trailer) is detected instead of silently read."""
    if not str(path).endswith(".gz"):
        return nib.load(str(path))
    raw = gzip.decompress(path.read_bytes())
    klass = nib.Nifti2Image if int.from_bytes(raw[:4], "little") in (540, 0x1C020000) else nib.Nifti1Image
    return klass.from_bytes(raw)


def load_volume(path: str | os.PathLike, *, require_finite: bool = True) -> Volume:
    """Load a ``.nii``/``.nii.gz`` file with its sidecar (and ``.bval``/``.bvec`` when present).

    Parameters
    ----------
    path : path-like
        NIfTI file.
    require_finite : bool
        Refuse data whose voxels are all NaN/Inf.

    Raises
    ------
    InputError
        Missing file, not NIfTI, truncated/corrupt file, NaN-only data, or a diffusion table whose
        count does not match the number of volumes.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found; check the path.")
    if not is_nifti(path):
        raise InputError(f"{path}: not a NIfTI file; napari-myelin reads .nii and .nii.gz images.")
    try:
        img = _read_nifti(path)
        data = np.asanyarray(img.dataobj)
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, nib.filebasedimages.ImageFileError, ValueError) as exc:
        raise InputError(
            f"{path}: cannot be read as NIfTI ({type(exc).__name__}: {exc}); the file is truncated or corrupt, "
            "copy it again from the scanner export."
        ) from None
    if data.ndim < 3:
        raise InputError(f"{path}: has {data.ndim} dimensions; an image volume needs 3 (or 4 for a series).")
    if data.ndim > 4:
        data = data.reshape(data.shape[:3] + (-1,))
    if require_finite and data.dtype.kind == "f" and data.size and not np.isfinite(data).any():
        raise InputError(f"{path}: every voxel is NaN or infinite; the file holds no image data.")
    affine = np.asarray(img.affine, dtype=float)
    vol = Volume(data, affine, img.header, read_sidecar(path), path)
    bval, bvec = sidecar_path(path, ".bval"), sidecar_path(path, ".bvec")
    if bval.exists() and bvec.exists():
        vol.bvals, vol.bvecs = read_bval_bvec(bval, bvec)
        n_vol = data.shape[3] if data.ndim == 4 else 1
        if vol.bvals.size != n_vol:
            raise InputError(
                f"{path}: has {n_vol} volumes but {bval.name} lists {vol.bvals.size} b-values; "
                "use the .bval/.bvec written with this DWI."
            )
    return vol


_ECHO = re.compile(r"_echo-(\d+)_")


def find_echo_files(first: str | os.PathLike) -> list[Path]:
    """All files of the series ``first`` belongs to (``*_echo-1_*``, ``*_echo-2_*`` ...), sorted by echo."""
    first = Path(first)
    m = _ECHO.search(first.name)
    if not m:
        raise InputError(f"{first}: the name has no '_echo-N_' entity, so its echo series cannot be found.")
    pattern = first.name[: m.start()] + "_echo-*_" + first.name[m.end():]
    files = sorted(first.parent.glob(pattern), key=lambda p: int(_ECHO.search(p.name).group(1)))
    return files


def load_echo_series(paths: Sequence[str | os.PathLike] | str | os.PathLike) -> Volume:
    """Assemble a multi-echo series stored one echo per file into one 4D volume.

    Parameters
    ----------
    paths : path or sequence of paths
        Either every echo file, or one of them (the others are found by the ``_echo-N_`` entity).
        Files are ordered by their echo number; each sidecar's ``EchoTime`` (s) is collected.

    Returns
    -------
    Volume
        4D data ``(X, Y, Z, n_echoes)`` with ``metadata["EchoTime"]`` the list of echo times and the
        other sidecar keys from the first echo.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = find_echo_files(paths)
    paths = sorted((Path(p) for p in paths), key=lambda p: int(m.group(1)) if (m := _ECHO.search(p.name)) else 0)
    if not paths:
        raise InputError("no echo files were given; pass the files of a multi-echo series.")
    vols = [load_volume(p) for p in paths]
    first = vols[0]
    for v in vols[1:]:
        if v.shape != first.shape or not np.allclose(v.affine, first.affine, atol=1e-4):
            raise InputError(f"{v.path}: its grid differs from {first.path}; all echoes must share one grid.")
    tes = []
    for v in vols:
        te = v.metadata.get("EchoTime")
        if te is None:
            raise InputError(f"{v.path}: its JSON sidecar has no EchoTime; add it (in seconds) or pass --te.")
        tes.append(float(np.atleast_1d(te)[0]))
    meta = dict(first.metadata)
    meta["EchoTime"] = tes
    data = np.stack([v.data for v in vols], axis=-1)
    return Volume(data, first.affine, first.header, meta, first.path)


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> None:
    """Write ``payload`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; outputs get the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_output_folder(out: str | os.PathLike) -> Path:
    """Create ``out`` if needed and check it is writable; raises InputError otherwise."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{out}: cannot create the output folder ({exc.strerror}); choose another --out.") from None
    if not os.access(out, os.W_OK):
        raise InputError(f"{out}: the output folder is not writable; choose another --out.")
    return out


def _refuse_overwriting_inputs(path: Path, inputs: Iterable[str | os.PathLike]) -> None:
    for inp in inputs:
        if Path(inp).exists() and path.exists() and path.resolve() == Path(inp).resolve():
            raise InputError(f"{path}: is one of the inputs; write outputs to another folder (--out).")


def save_volume(
    data: np.ndarray,
    path: str | os.PathLike,
    affine: np.ndarray,
    *,
    sidecar: dict | None = None,
    header: Any = None,
    inputs: Iterable[str | os.PathLike] = (),
) -> Path:
    """Save ``data`` as NIfTI with ``affine`` (and a JSON sidecar), atomically, never over an input.

    Boolean arrays are stored as uint8, integer arrays keep their type, others as float32.
    """
    path = Path(path)
    if not is_nifti(path):
        path = path.with_name(path.name + ".nii.gz")
    inputs = list(inputs)
    _refuse_overwriting_inputs(path, inputs)
    check_output_folder(path.parent)
    arr = np.asarray(data)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    elif arr.dtype.kind == "f":
        arr = arr.astype(np.float32)
    hdr = header.copy() if header is not None else None
    img = nib.Nifti1Image(arr, np.asarray(affine, dtype=float), header=hdr)
    img.set_data_dtype(arr.dtype)
    img.set_qform(np.asarray(affine, dtype=float), code=1)
    img.set_sform(np.asarray(affine, dtype=float), code=1)
    payload = img.to_bytes()
    if str(path).endswith(".gz"):
        payload = gzip.compress(payload, compresslevel=6, mtime=0)
    if sidecar is not None:
        js = sidecar_path(path)
        _refuse_overwriting_inputs(js, inputs)
        atomic_write_bytes(js, json.dumps(sidecar, indent=2, default=_json_default).encode("utf-8"))
    atomic_write_bytes(path, payload)
    return path


def provenance(
    *,
    units: str,
    description: str,
    method: str = "",
    parameters: dict | None = None,
    inputs: Iterable[str | os.PathLike] = (),
    extra: dict | None = None,
) -> dict:
    """The JSON sidecar of an output map: units, description, method, parameters, software, inputs."""
    from napari_myelin import __version__

    side = {
        "Units": units,
        "Description": description,
        "Method": method,
        "Parameters": parameters or {},
        "Software": {"Name": "napari-myelin", "Version": __version__},
        "Sources": [
            {"Path": str(p), "SHA256": file_sha256(p)} for p in inputs if Path(p).is_file()
        ],
    }
    if extra:
        side.update(extra)
    return side


def save_map(
    data: np.ndarray,
    path: str | os.PathLike,
    reference: Volume | np.ndarray,
    *,
    units: str,
    description: str,
    method: str = "",
    parameters: dict | None = None,
    inputs: Iterable[str | os.PathLike] = (),
) -> Path:
    """Save one output map on the grid of ``reference`` with its provenance sidecar.

    Parameters
    ----------
    data : ndarray
        Map on the reference grid.
    path : path-like
        Output file (``.nii.gz`` appended when there is no NIfTI suffix).
    reference : Volume or (4, 4) affine
        Grid the map lies on.
    units, description, method, parameters
        Written into the JSON sidecar.
    inputs : paths
        Input files (checksummed in the sidecar; never overwritten).
    """
    affine = reference.affine if isinstance(reference, Volume) else np.asarray(reference)
    if isinstance(reference, Volume) and reference.path is not None:
        inputs = [reference.path, *inputs]
    inputs = list(dict.fromkeys(str(p) for p in inputs))
    side = provenance(units=units, description=description, method=method, parameters=parameters, inputs=inputs)
    return save_volume(data, path, affine, sidecar=side, inputs=inputs)


def save_maps(maps, out_dir: str | os.PathLike, reference: Volume, *, inputs=(), prefix: str = "") -> list[Path]:
    """Save every map of an estimator result (:class:`~napari_myelin.io.maps.Maps`) into ``out_dir``.

    Each map ``name`` goes to ``out_dir/{prefix}{name}.nii.gz`` with ``{prefix}{name}.json``. Maps that
    are not spatial (1D arrays such as the T2 times) are written into every sidecar's parameters.
    """
    out = check_output_folder(out_dir)
    spatial = {k: v for k, v in maps.items() if np.ndim(v) >= 3}
    extras = {k: np.asarray(v).tolist() for k, v in maps.items() if np.ndim(v) < 3}
    params = dict(maps.parameters, **extras)
    written = []
    for name, arr in spatial.items():
        info = maps.info(name)
        written.append(
            save_map(
                arr, out / f"{prefix}{name}.nii.gz", reference,
                units=info["units"], description=info["description"], method=maps.method,
                parameters=params, inputs=inputs,
            )
        )
    return written


def orientation_codes(affine: np.ndarray) -> str:
    """Orientation of the voxel axes, e.g. ``"RAS"`` or ``"LPS"``."""
    return "".join(nib.aff2axcodes(affine))


def obliquity_deg(affine: np.ndarray) -> float:
    """Largest angle (deg) between a voxel axis and its nearest world axis (0 for a plumb grid)."""
    rzs = affine[:3, :3] / np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    cosines = np.abs(rzs).max(axis=0).clip(-1, 1)
    return float(np.degrees(np.arccos(cosines)).max())


def protocol_parameters(vol: Volume) -> dict:
    """The protocol parameters found in the sidecar and diffusion tables of ``vol``."""
    found = {k: vol.metadata[k] for k in PROTOCOL_KEYS if k in vol.metadata}
    if vol.bvals is not None:
        shells = np.unique(np.round(vol.bvals / 50.0) * 50).astype(int)
        found["b-values (s/mm^2)"] = shells.tolist()
        found["DWI volumes"] = int(vol.bvals.size)
    return found
