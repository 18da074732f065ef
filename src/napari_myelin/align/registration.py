"""Registration with ANTs (antspyx): subject to the MNI ICBM152 template, modality to modality.

Two steps bring every map of a subject into one standard space (VBM style) and the tract atlas
back onto each unresampled map:

1. :func:`coregister` aligns one modality of a subject to the subject's reference image (the first
   echo of the spin-echo series, the DWI b0, the GRE magnitude or an SPGR volume): a rigid
   transform (6 degrees of freedom) that maximises the Mattes mutual information, so images of
   different contrast align.
2. :func:`register_to_template` aligns the subject reference to the shipped MNI ICBM152 2009a T1
   template (:func:`napari_myelin.align.atlas.load_template`): rigid, affine, then symmetric
   diffeomorphic normalisation (SyN) depending on the preset

   ==========  ================================  =============================================
   preset      ANTs ``type_of_transform``        stages
   ==========  ================================  =============================================
   ``fast``    ``antsRegistrationSyNQuick[s]``   rigid + affine (MI), SyN (MI, 100x70x50x0)
   ``accurate`` ``SyN``                          affine (MI), SyN (MI, 100x70x50x20)
   ``affine``  ``Affine``                        affine (MI) only
   ==========  ================================  =============================================

The returned :class:`Registration` carries the transform files (copied next to the outputs with
stable names and reused when present, so a subject is never registered twice), the warped image,
a similarity check, and applies the transforms to maps (linear), labels (``genericLabel``) and
masks, forwards (native -> template) or inverted (template -> native, e.g. the tract atlas, so
tract statistics are computed on the unresampled maps).

Geometry
--------
NIfTI affines map voxel indices to RAS+ millimetres; ITK/ANTs physical space is LPS+. A volume
with affine ``A`` becomes an ANTs image with ``origin = F t``, ``spacing = |F R e_j|`` and
``direction = F R / spacing`` where ``R, t`` are the rotation-zoom block and translation of
``A`` and ``F = diag(-1, -1, 1)`` (:func:`to_ants`, :func:`from_ants`); the array is not reordered.

Threads and reproducibility
---------------------------
The number of ITK threads follows the machine (``os.cpu_count()``) unless
``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` is set (:func:`set_threads`, ``--threads``) before the first
registration of the process: ITK reads it once. ANTs samples the metric at randomly perturbed
regular points; the seed (``--random-seed``) fixes them, and with one thread a run is repeated bit
for bit. With several threads ITK's dynamic work splitting sums the Mattes mutual information in
a varying order, so repeated runs differ slightly (measured: mean tract Dice between two runs
about 0.9 at 4 mm); use one thread where exact repetition matters.

References
----------
Avants B.B. et al., "Symmetric diffeomorphic image registration with cross-correlation: evaluating
automated labeling of elderly and neurodegenerative brain", Med Image Anal 12, 26-41 (2008).
Avants B.B. et al., "A reproducible evaluation of ANTs similarity metric performance in brain image
registration", NeuroImage 54, 2033-2044 (2011).
Fonov V. et al., "Unbiased average age-appropriate atlases for pediatric studies", NeuroImage 54,
313-327 (2011).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", str(os.cpu_count() or 1))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from napari_myelin.utils.errors import InputError  # noqa: E402
from napari_myelin.utils.progress import ProgressFn, step, subrange  # noqa: E402
from napari_myelin.io.volume import Volume, atomic_write_bytes, check_output_folder  # noqa: E402

#: Preset name -> ANTs ``type_of_transform``.
PRESETS = {
    "fast": "antsRegistrationSyNQuick[s]",
    "accurate": "SyN",
    "affine": "Affine",
}

#: Interpolations accepted by :meth:`Registration.apply` / :meth:`Registration.to_native`.
#: ``"mask"`` interpolates linearly and keeps voxels >= 0.5 (a binary mask, uint8).
INTERPOLATIONS = ("linear", "genericLabel", "nearestNeighbor", "bSpline", "mask")

#: Below this normalised mutual information (0 = independent, 1 = identical) a registration is
#: reported as failed (:class:`~napari_myelin.utils.errors.InputError`).
MIN_SIMILARITY = 0.02
#: Between :data:`MIN_SIMILARITY` and this value a :class:`RegistrationWarning` is issued.
WARN_SIMILARITY = 0.08
#: Fraction of the template brain that the warped image must cover.
MIN_OVERLAP = 0.5
#: The same for co-registration (a slab acquisition may cover a small part of the reference).
MIN_OVERLAP_COREGISTER = 0.1

_F = np.diag([-1.0, -1.0, 1.0])  # RAS <-> LPS
_LOCK = threading.Lock()  # ants.config's random seed is global: one registration at a time
_STATE = {"ran": False}  # whether ANTs ran in this process (ITK has read its thread count)


def set_threads(n: int | None = None) -> int:
    """Set the ITK thread count (default ``os.cpu_count()``) for the registrations of this process.

    Effective only before the first registration of the process (ITK reads it once); returns
    the count set.
    """
    n = int(n or os.cpu_count() or 1)
    if n < 1:
        raise InputError(f"threads={n}: must be at least 1.")
    if _STATE["ran"] and os.environ.get("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS") != str(n):
        warnings.warn("ITK read its thread count when ANTs first ran in this process; the new count applies "
                      "to new processes.", RuntimeWarning, stacklevel=2)
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(n)
    return n


class RegistrationWarning(UserWarning):
    """The registration finished but its similarity is low: check the result by eye."""


def _ants():
    import ants

    return ants


# --------------------------------------------------------------------------------------------------
# Volume <-> ANTsImage
# --------------------------------------------------------------------------------------------------
def ants_geometry(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ITK ``origin``, ``spacing`` and ``direction`` (LPS+) of a NIfTI ``affine`` (RAS+).

    Returns
    -------
    origin : ndarray, shape (3,)
        Physical position (mm, LPS) of voxel (0, 0, 0).
    spacing : ndarray, shape (3,)
        Voxel size (mm).
    direction : ndarray, shape (3, 3)
        Unit column vectors of the voxel axes in LPS.
    """
    affine = np.asarray(affine, dtype=float)
    lps = _F @ affine[:3, :3]
    spacing = np.sqrt((lps**2).sum(axis=0))
    if np.any(spacing <= 0):
        raise InputError("the image affine has a zero voxel size; fix the NIfTI header (qform/sform).")
    return _F @ affine[:3, 3], spacing, lps / spacing


def affine_from_ants(img) -> np.ndarray:
    """NIfTI affine (RAS+) of an ANTs image (inverse of :func:`ants_geometry`)."""
    direction = np.asarray(img.direction, dtype=float)
    spacing = np.asarray(img.spacing, dtype=float)
    affine = np.eye(4)
    affine[:3, :3] = _F @ (direction * spacing)
    affine[:3, 3] = _F @ np.asarray(img.origin, dtype=float)
    return affine


def to_ants(vol: Volume | np.ndarray, affine: np.ndarray | None = None):
    """A 3D ANTs image (float32) with the geometry of ``vol`` (its array is not reordered)."""
    if isinstance(vol, Volume):
        data, affine = vol.data, vol.affine
    else:
        data = vol
    data = np.asarray(data)
    if data.ndim != 3:
        raise InputError(f"the image has shape {data.shape}; registration needs one 3D volume.")
    origin, spacing, direction = ants_geometry(affine)
    arr = np.nan_to_num(np.asarray(data, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    return _ants().from_numpy(
        np.ascontiguousarray(arr), origin=origin.tolist(), spacing=spacing.tolist(), direction=direction
    )


def from_ants(img, **metadata: Any) -> Volume:
    """The :class:`Volume` of an ANTs image (affine restored to RAS+)."""
    return Volume(np.asarray(img.numpy()), affine_from_ants(img), None, dict(metadata), None)


# --------------------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------------------
def _name(vol: Volume, default: str) -> str:
    return str(vol.path) if vol.path is not None else default


def reference_image(vol: Volume) -> Volume:
    """The 3D image a (possibly 4D) acquisition is registered with.

    The first volume of a series: the first echo of a multi-echo series, the first flip angle of
    an SPGR series, and for DWI the first b=0 volume (b < 50 s/mm^2) when the b-values are known.
    """
    data = np.asarray(vol.data)
    if data.ndim == 3:
        return vol
    if data.ndim != 4:
        raise InputError(f"{_name(vol, 'image')}: has shape {data.shape}; registration needs a 3D or 4D image.")
    index = 0
    if vol.bvals is not None and np.any(np.asarray(vol.bvals) < 50):
        index = int(np.flatnonzero(np.asarray(vol.bvals) < 50)[0])
    out = Volume(data[..., index], vol.affine, vol.header, dict(vol.metadata), vol.path)
    return out


def check_image(vol: Volume, what: str) -> None:
    """Refuse an image registration cannot use: not 3D, empty (constant), or without finite voxels."""
    data = np.asarray(vol.data)
    name = _name(vol, what)
    if data.ndim != 3:
        raise InputError(f"{name}: has shape {data.shape}; registration needs one 3D volume.")
    finite = data[np.isfinite(data)] if data.dtype.kind == "f" else data
    if finite.size == 0:
        raise InputError(f"{name}: has no finite voxel; it holds no image to register.")
    if np.ptp(finite) == 0:
        raise InputError(f"{name}: is empty (every voxel is {finite.flat[0]:g}); there is nothing to register.")
    if np.count_nonzero(finite != np.median(finite)) < 64:
        raise InputError(f"{name}: has fewer than 64 voxels of signal; give an image of the head.")


def normalized_mutual_information(a: np.ndarray, b: np.ndarray, bins: int = 32) -> float:
    """Normalised mutual information ``(H(a) + H(b)) / H(a, b) - 1`` of two samples (0 to 1).

    Entropies of 32-bin histograms between the 1st and 99th percentiles; 0 for independent
    samples (or a constant one), 1 for a one-to-one relation (Studholme et al. 1999).
    """
    a = np.asarray(a, dtype=float).ravel()
    b = np.asarray(b, dtype=float).ravel()
    if a.size < 2:
        return 0.0

    def _edges(x):
        lo, hi = np.percentile(x, [1, 99])
        return np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)

    joint, _, _ = np.histogram2d(np.clip(a, *_edges(a)[[0, -1]]), np.clip(b, *_edges(b)[[0, -1]]),
                                 bins=(_edges(a), _edges(b)))
    p = joint / joint.sum()

    def _h(q):
        q = q[q > 0]
        return float(-(q * np.log(q)).sum())

    h_ab = _h(p)
    if h_ab == 0:
        return 0.0
    return (_h(p.sum(axis=1)) + _h(p.sum(axis=0))) / h_ab - 1.0


def brain_mask(template: Volume) -> np.ndarray:
    """Voxels of a template above 20 % of its 99th percentile (the head/brain, not the background)."""
    data = np.nan_to_num(np.asarray(template.data, dtype=float))
    return data > 0.2 * np.percentile(data, 99)


def similarity(warped: Volume, fixed: Volume, mask: np.ndarray | None = None) -> tuple[float, float]:
    """Normalised mutual information and coverage of a warped image with the fixed image.

    Returns
    -------
    nmi : float
        :func:`normalized_mutual_information` inside ``mask`` (default :func:`brain_mask` of ``fixed``).
    overlap : float
        Fraction of ``mask`` where the warped image is non-zero.
    """
    mask = brain_mask(fixed) if mask is None else np.asarray(mask, bool)
    w = np.nan_to_num(np.asarray(warped.data, dtype=float))[mask]
    f = np.asarray(fixed.data, dtype=float)[mask]
    overlap = float(np.count_nonzero(w) / max(mask.sum(), 1))
    return normalized_mutual_information(w, f), overlap


def _digest(vol: Volume) -> str:
    h = hashlib.sha256()
    arr = np.ascontiguousarray(np.asarray(vol.data, dtype=np.float32))
    h.update(str(arr.shape).encode())
    h.update(np.round(np.asarray(vol.affine, dtype=float), 4).tobytes())
    h.update(arr.tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------
# result
# --------------------------------------------------------------------------------------------------
@dataclass
class Registration:
    """Transforms between a subject image (``moving``) and a target space (``fixed``).

    Attributes
    ----------
    fixed : Volume
        Target image (its grid is where :meth:`apply` resamples to).
    moving : Volume
        3D image that was registered (its grid is where :meth:`to_native` resamples to).
    warped : Volume
        ``moving`` resampled on the fixed grid.
    forward : list of Path
        ANTs transform files, moving -> fixed (in ``antsApplyTransforms`` order: last applied first).
    inverse : list of Path
        Transform files for fixed -> moving.
    inverse_flags : list of bool
        Which files of ``inverse`` are inverted (affine matrices are).
    preset : str
        Preset or ANTs transform type used.
    similarity : float
        Normalised mutual information of ``warped`` with ``fixed`` inside the fixed brain (0-1).
    overlap : float
        Fraction of the fixed brain covered by ``warped``.
    reused : bool
        True when the transforms were read from a previous run instead of computed.
    """

    fixed: Volume
    moving: Volume
    warped: Volume
    forward: list[Path]
    inverse: list[Path]
    inverse_flags: list[bool]
    preset: str
    similarity: float
    overlap: float
    reused: bool = False
    seed: int = 0
    _tmp: Any = field(default=None, repr=False)

    @property
    def transforms(self) -> dict[str, list[str]]:
        """Transform file paths: ``{"forward": [...], "inverse": [...]}``."""
        return {"forward": [str(p) for p in self.forward], "inverse": [str(p) for p in self.inverse]}

    def _resample(self, vol: Volume, reference: Volume, transforms, flags, interpolation: str) -> Volume:
        if interpolation not in INTERPOLATIONS:
            raise InputError(f"interpolation '{interpolation}': unknown; use one of {', '.join(INTERPOLATIONS)}.")
        ants = _ants()
        data = np.asarray(vol.data)
        if data.ndim not in (3, 4):
            raise InputError(f"{_name(vol, 'image')}: has shape {data.shape}; only 3D or 4D images can be resampled.")
        interp = "linear" if interpolation == "mask" else interpolation
        fixed = to_ants(np.zeros(reference.shape[:3], np.float32), reference.affine)
        vols = [data] if data.ndim == 3 else [data[..., i] for i in range(data.shape[3])]
        out = []
        for v in vols:
            moved = ants.apply_transforms(
                fixed=fixed, moving=to_ants(v, vol.affine), transformlist=[str(t) for t in transforms],
                interpolator=interp, whichtoinvert=list(flags), defaultvalue=0,
            )
            out.append(moved.numpy())
        arr = out[0] if data.ndim == 3 else np.stack(out, axis=-1)
        if interpolation == "mask":
            arr = (arr >= 0.5).astype(np.uint8)
        elif interpolation in ("genericLabel", "nearestNeighbor") and data.dtype.kind in "iub":
            arr = np.rint(arr).astype(data.dtype if data.dtype != bool else np.uint8)
        return Volume(arr, reference.affine.copy(), None, dict(vol.metadata), None)

    def apply(self, volume: Volume, interpolation: str = "linear") -> Volume:
        """Resample a volume on the moving image's space onto the fixed grid.

        Parameters
        ----------
        volume : Volume
            3D map/label/mask (or 4D series, resampled volume by volume) in the moving image's
            physical space (any grid: co-registered maps of the same subject qualify).
        interpolation : {"linear", "genericLabel", "nearestNeighbor", "bSpline", "mask"}
            ``linear`` for maps, ``genericLabel`` for label images, ``mask`` for binary masks.
        """
        return self._resample(volume, self.fixed, self.forward, [False] * len(self.forward), interpolation)

    def to_native(self, volume: Volume, interpolation: str = "genericLabel") -> Volume:
        """Bring a volume in the fixed space (e.g. the tract atlas) onto the moving image's grid."""
        return self._resample(volume, self.moving, self.inverse, self.inverse_flags, interpolation)


# --------------------------------------------------------------------------------------------------
# registration
# --------------------------------------------------------------------------------------------------
_STAGE_NAMES = {"0GenericAffine.mat": "0GenericAffine.mat", "1Warp.nii.gz": "1Warp.nii.gz",
                "1InverseWarp.nii.gz": "1InverseWarp.nii.gz"}


def _ordered(files: dict[str, Path]) -> tuple[list[Path], list[Path], list[bool]]:
    affine = files.get("0GenericAffine.mat")
    warp, inverse_warp = files.get("1Warp.nii.gz"), files.get("1InverseWarp.nii.gz")
    forward = [p for p in (warp, affine) if p is not None]
    inverse = [p for p in (affine, inverse_warp) if p is not None]
    flags = [p is affine for p in inverse]
    return forward, inverse, flags


def _load_previous(out_dir: Path, name: str, key: dict) -> dict | None:
    record = out_dir / f"{name}.json"
    if not record.exists():
        return None
    try:
        previous = json.loads(record.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if any(previous.get(k) != v for k, v in key.items()):
        return None
    files = {stage: out_dir / fname for stage, fname in previous.get("Files", {}).items()}
    if not files or not all(p.exists() for p in files.values()):
        return None
    previous["_files"] = files
    return previous


def _run_ants(fixed: Volume, moving: Volume, transform: str, seed: int, kwargs: dict, tmp: Path) -> dict[str, Path]:
    ants = _ants()
    fi, mi = to_ants(fixed), to_ants(moving)
    prefix = str(tmp / "xfm_")
    with _LOCK:
        saved = ants.config._random_seed
        ants.config._random_seed = int(seed)
        _STATE["ran"] = True
        try:
            ants.registration(fi, mi, type_of_transform=transform, outprefix=prefix, **kwargs)
        finally:
            ants.config._random_seed = saved
    files = {}
    for stage in _STAGE_NAMES:
        p = Path(prefix + stage)
        if p.exists():
            files[stage] = p
    if not files:
        raise RuntimeError(f"ANTs wrote no transform for '{transform}'")
    return files


def _register(
    fixed: Volume,
    moving: Volume,
    *,
    transform: str,
    preset: str,
    name: str,
    out_dir,
    seed: int,
    kwargs: dict,
    check: bool,
    progress: ProgressFn | None,
    cancel,
    mask: np.ndarray | None = None,
    min_overlap: float = MIN_OVERLAP,
) -> Registration:
    step(progress, cancel, 0.0, "checking images")
    moving = reference_image(moving)
    check_image(moving, "moving image")
    check_image(fixed, "template")
    key = {"Transform": transform, "Seed": int(seed), "Moving": _digest(moving), "Fixed": _digest(fixed),
           "Options": json.loads(json.dumps(kwargs, default=str))}
    out = check_output_folder(out_dir) if out_dir is not None else None
    previous = _load_previous(out, name, key) if out is not None else None
    if previous is not None:
        step(progress, cancel, 0.1, f"reusing the transforms in {out}")
        files = previous["_files"]
        forward, inverse, flags = _ordered(files)
        reg = Registration(fixed, moving, moving, forward, inverse, flags, preset, float("nan"), float("nan"),
                           reused=True, seed=int(seed))
        reg.warped = reg.apply(moving, "linear")
    else:
        step(progress, cancel, 0.05, f"registering ({preset}); this takes a while")
        tmp = Path(tempfile.mkdtemp(prefix="napari-myelin-reg-"))
        try:
            files = _run_ants(fixed, moving, transform, seed, kwargs, tmp)
            step(progress, cancel, 0.85, "registration done; saving transforms")
            if out is not None:
                stable = {}
                for stale in _STAGE_NAMES:  # a previous preset's files must not linger beside these
                    (out / f"{name}_{stale}").unlink(missing_ok=True)
                (out / f"{name}.json").unlink(missing_ok=True)
                for stage, src in files.items():
                    dst = out / f"{name}_{stage}"
                    atomic_write_bytes(dst, src.read_bytes())
                    stable[stage] = dst
                files = stable
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        forward, inverse, flags = _ordered(files)
        reg = Registration(fixed, moving, moving, forward, inverse, flags, preset, float("nan"), float("nan"),
                           seed=int(seed))
        if out is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        else:  # the transforms live as long as the result
            reg._tmp = weakref.finalize(reg, shutil.rmtree, str(tmp), True)
        # resampled here rather than taken from ANTs' output, so a reused run gives the same image
        reg.warped = reg.apply(moving, "linear")
    step(progress, cancel, 0.92, "checking the similarity with the target")
    reg.similarity, reg.overlap = similarity(reg.warped, fixed, mask)
    if check:
        try:
            _check_result(reg, moving, min_overlap)
        except InputError:
            if out is not None:  # leave no transforms of a failed registration behind
                for p in files.values():
                    Path(p).unlink(missing_ok=True)
                (out / f"{name}.json").unlink(missing_ok=True)
            raise
    if out is not None and previous is None:
        record = dict(key, Preset=preset, Files={stage: p.name for stage, p in files.items()},
                      Similarity=reg.similarity, Overlap=reg.overlap,
                      Description="ANTs transforms (antsApplyTransforms order: forward = moving -> fixed); "
                                  "reused by napari-myelin when the same image is registered again.")
        atomic_write_bytes(out / f"{name}.json", json.dumps(record, indent=2).encode("utf-8"))
    step(progress, cancel, 1.0, f"registered (similarity {reg.similarity:.3f})")
    return reg


def _check_result(reg: Registration, moving: Volume, min_overlap: float = MIN_OVERLAP) -> None:
    name = _name(moving, "the moving image")
    if reg.overlap < min_overlap or reg.similarity < MIN_SIMILARITY:
        raise InputError(
            f"{name}: registration failed (it covers {100 * reg.overlap:.0f}% of the target brain, "
            f"normalised mutual information {reg.similarity:.3f}); check that the image is a head image "
            "with a correct orientation in its header."
        )
    if reg.similarity < WARN_SIMILARITY:
        warnings.warn(
            f"{name}: low similarity with the target after registration (normalised mutual information "
            f"{reg.similarity:.3f} < {WARN_SIMILARITY}); check the result by eye.",
            RegistrationWarning,
            stacklevel=3,
        )


def _preset_transform(preset: str) -> tuple[str, dict]:
    if preset not in PRESETS:
        raise InputError(f"preset '{preset}': unknown; use one of {', '.join(PRESETS)}.")
    transform = PRESETS[preset]
    kwargs: dict = {}
    if preset == "accurate":
        kwargs = {"syn_metric": "mattes", "reg_iterations": (100, 70, 50, 20)}
    return transform, kwargs


def register_to_template(
    moving: Volume,
    *,
    preset: str = "fast",
    template: Volume | None = None,
    resolution_mm: int = 2,
    out_dir: str | os.PathLike | None = None,
    name: str = "to_template",
    seed: int = 0,
    check: bool = True,
    progress: ProgressFn | None = None,
    cancel=None,
) -> Registration:
    """Register a subject image to the MNI ICBM152 2009a template.

    Parameters
    ----------
    moving : Volume
        Subject reference image (3D; for a 4D series the first volume, for DWI the first b0).
    preset : {"fast", "accurate", "affine"}
        ``fast``: ANTs ``antsRegistrationSyNQuick[s]`` (rigid + affine + SyN, mutual information);
        ``accurate``: ``SyN`` with a full-resolution level; ``affine``: 12 parameters only.
    template : Volume, optional
        Target image; default :func:`napari_myelin.align.atlas.load_template` at ``resolution_mm``.
    resolution_mm : int
        Template grid spacing (mm) when ``template`` is not given.
    out_dir : path, optional
        Folder where the transforms are saved (``{name}_0GenericAffine.mat``, ``{name}_1Warp.nii.gz``,
        ``{name}_1InverseWarp.nii.gz`` and ``{name}.json``) and reused when the same image is
        registered again with the same preset and seed. Without it they live in a temporary
        folder as long as the result.
    seed : int
        Random seed of the metric sampling (same seed, same machine: same result).
    check : bool
        Refuse a registration that covers < 50 % of the template brain or whose normalised mutual
        information is below :data:`MIN_SIMILARITY`, and warn below :data:`WARN_SIMILARITY`.
    progress, cancel
        See :mod:`napari_myelin.utils.progress`. The ANTs call itself cannot be interrupted; a
        cancel takes effect when it returns.

    Returns
    -------
    Registration
        ``.warped`` (moving on the template grid), ``.transforms``, ``.apply(volume, interpolation)``
        and ``.to_native(labels)``.

    Raises
    ------
    InputError
        Unknown preset, empty or non-3D image, or a failed registration (``check``).
    """
    transform, kwargs = _preset_transform(preset)
    mask = None
    if template is None:
        from napari_myelin.align.atlas import load_brain_mask, load_template

        template = load_template(resolution_mm=resolution_mm)
        mask = load_brain_mask(resolution_mm=resolution_mm).data
    return _register(template, moving, transform=transform, preset=preset, name=name, out_dir=out_dir,
                     seed=seed, kwargs=kwargs, check=check, mask=mask, progress=progress, cancel=cancel)


def coregister(
    fixed: Volume,
    moving: Volume,
    *,
    out_dir: str | os.PathLike | None = None,
    name: str | None = None,
    seed: int = 0,
    check: bool = True,
    progress: ProgressFn | None = None,
    cancel=None,
) -> Registration:
    """Rigidly align one modality of a subject to the subject's reference image.

    Six-parameter rigid transform maximising the Mattes mutual information (32 bins; images of
    different contrast align), multi-resolution 8/4/2/1 from a centre-of-mass initialisation.

    Parameters
    ----------
    fixed : Volume
        Subject reference (e.g. the first spin echo); 4D series use their first volume.
    moving : Volume
        Image of another modality (DWI b0 or FA, GRE magnitude, SPGR).
    out_dir, name, seed, check, progress, cancel
        As for :func:`register_to_template`; ``name`` defaults to ``coreg_<moving name>``.

    Returns
    -------
    Registration
        ``.apply(map)`` puts a map of the moving modality on the reference grid.
    """
    fixed = reference_image(fixed)
    if name is None:
        name = f"coreg_{moving.name}" if moving.path is not None else "coreg"
    return _register(fixed, moving, transform="antsRegistrationSyNQuick[r]", preset="rigid", name=name,
                     out_dir=out_dir, seed=seed, kwargs={}, check=check, progress=progress, cancel=cancel,
                     min_overlap=MIN_OVERLAP_COREGISTER)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap ``2|A∩B| / (|A| + |B|)`` of two boolean masks (1 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2.0 * np.logical_and(a, b).sum() / total)


def mean_label_dice(a: np.ndarray, b: np.ndarray, labels: Sequence[int] | None = None) -> float:
    """Mean :func:`dice` over the labels present in ``a`` or ``b`` (0 = background excluded)."""
    a, b = np.asarray(a), np.asarray(b)
    if labels is None:
        labels = np.union1d(np.unique(a), np.unique(b))
    scores = [dice(a == k, b == k) for k in labels if k != 0]
    return float(np.mean(scores)) if scores else 1.0


# --------------------------------------------------------------------------------------------------
# atlases and one subject end to end (what the CLI and the widget call)
# --------------------------------------------------------------------------------------------------
#: Atlas choices: the shipped HCP842-derived tracts, FSL's JHU labels (when $FSLDIR has them).
ATLASES = {"hcp842": "HCP842-derived tracts (shipped)", "jhu": "FSL JHU ICBM-DTI-81 labels ($FSLDIR)"}


def available_atlases() -> dict[str, str]:
    """The atlas choices usable on this machine (``jhu`` only when FSL's atlas files are found)."""
    from napari_myelin.align.atlas import load_jhu_labels

    found = {"hcp842": ATLASES["hcp842"]}
    try:
        load_jhu_labels(1)
    except InputError:
        pass
    else:
        found["jhu"] = ATLASES["jhu"]
    return found


def load_atlas(
    atlas: str | os.PathLike = "hcp842",
    lut: str | os.PathLike | pd.DataFrame | None = None,
    *,
    resolution_mm: int = 2,
) -> tuple[Volume, pd.DataFrame]:
    """A tract label atlas in template space and its lookup table.

    Parameters
    ----------
    atlas : {"hcp842", "jhu"} or path
        ``hcp842``: :func:`napari_myelin.align.atlas.load_tract_atlas`; ``jhu``:
        :func:`napari_myelin.align.atlas.load_jhu_labels` (needs FSL); a path: a user label image in
        MNI ICBM152 space, read with :func:`napari_myelin.align.atlas.load_labels` and ``lut``.
    """
    from napari_myelin.align import atlas as _atlas

    if isinstance(atlas, str) and atlas.lower() == "hcp842":
        return _atlas.load_tract_atlas(resolution_mm)
    if isinstance(atlas, str) and atlas.lower() == "jhu":
        return _atlas.load_jhu_labels(1)
    return _atlas.load_labels(atlas, lut)


def default_interpolation(vol: Volume) -> str:
    """``mask`` for 0/1 images, ``genericLabel`` for other integer ones, ``linear`` otherwise."""
    data = np.asarray(vol.data)
    if data.dtype.kind == "b":
        return "mask"
    if data.dtype.kind in "iuf" and data.size and np.all(np.isin(np.unique(data), (0, 1))):
        return "mask"
    return "genericLabel" if data.dtype.kind in "iu" else "linear"


@dataclass
class SubjectRegistration:
    """Result of :func:`register_subject`.

    Attributes
    ----------
    registration : Registration
        The subject-to-template transforms.
    warped : dict of str to Volume
        The subject image (``"warped"``) and each carried volume, on the template grid.
    tracts : Volume or None
        Atlas labels on the subject image's grid (int32), when an atlas was asked for.
    lut : DataFrame or None
        Lookup table of ``tracts``.
    """

    registration: Registration
    warped: dict[str, Volume]
    tracts: Volume | None = None
    lut: pd.DataFrame | None = None


def register_subject(
    moving: Volume,
    *,
    carry: Mapping[str, Volume] | None = None,
    interpolations: Mapping[str, str] | None = None,
    atlas: str | os.PathLike | tuple[Volume, pd.DataFrame] | None = None,
    lut: str | os.PathLike | pd.DataFrame | None = None,
    preset: str = "fast",
    template: Volume | None = None,
    resolution_mm: int = 2,
    out_dir: str | os.PathLike | None = None,
    seed: int = 0,
    check: bool = True,
    progress: ProgressFn | None = None,
    cancel=None,
) -> SubjectRegistration:
    """Register a subject image to the template, warp other volumes, bring an atlas to native space.

    Parameters
    ----------
    moving : Volume
        Subject reference image.
    carry : mapping of name to Volume, optional
        Maps/labels/masks in the subject's space to warp to the template (``interpolations[name]``
        or :func:`default_interpolation`).
    atlas : {"hcp842", "jhu"}, path, (Volume, DataFrame) or None
        Tract atlas to bring onto the subject image's grid (``genericLabel``); see :func:`load_atlas`.
    lut : path or DataFrame, optional
        Lookup table of a user atlas.
    preset, template, resolution_mm, out_dir, seed, check, progress, cancel
        See :func:`register_to_template`.
    """
    carry = dict(carry or {})
    interpolations = dict(interpolations or {})
    for name, how in interpolations.items():
        if how not in INTERPOLATIONS:
            raise InputError(f"interpolation of '{name}': '{how}' is unknown; use one of {', '.join(INTERPOLATIONS)}.")
    labels = None
    if atlas is not None:
        labels = atlas if isinstance(atlas, tuple) else load_atlas(atlas, lut, resolution_mm=resolution_mm)
    n_after = len(carry) + (labels is not None)
    share = 0.8 if n_after else 1.0
    reg = register_to_template(moving, preset=preset, template=template, resolution_mm=resolution_mm,
                               out_dir=out_dir, seed=seed, check=check,
                               progress=subrange(progress, 0.0, share), cancel=cancel)
    warped = {"warped": reg.warped}
    done = 0
    for name, vol in carry.items():
        step(progress, cancel, share + (1 - share) * done / n_after, f"warping {name} to the template")
        warped[name] = reg.apply(vol, interpolations.get(name, default_interpolation(vol)))
        done += 1
    result = SubjectRegistration(reg, warped)
    if labels is not None:
        step(progress, cancel, share + (1 - share) * done / n_after, "bringing the atlas to native space")
        vol, table = labels
        native = reg.to_native(vol.with_data(np.asarray(vol.data, dtype=np.int32)), "genericLabel")
        native.data = native.data.astype(np.int32)
        result.tracts, result.lut = native, table
    step(progress, cancel, 1.0, "done")
    return result
