"""One ANTs registration, its transforms saved and reused, its result checked.

:func:`run_registration` is what :func:`~napari_myelin.align.registration.register_to_template`
and :func:`~napari_myelin.align.registration.coregister` call once they have chosen the ANTs
transform type. It

1. checks both images (:func:`~napari_myelin.align.quality.check_image`);
2. reuses the transforms saved by a previous run in ``out_dir`` when its record (``{name}.json``)
   has the same transform type, seed, options and image digests (SHA-256 of the float32 voxels,
   the shape and the affine rounded to 1e-4 mm), so a subject is never registered twice;
3. otherwise runs ``ants.registration`` (``fast``: the same stages through
   :func:`~napari_myelin.align.ants_io.register_stages`, transform files only) under a fixed seed
   (:func:`~napari_myelin.align.ants_io.seeded`) in a temporary folder and copies the transform
   files next to the outputs with stable names (``{name}_0GenericAffine.mat``,
   ``{name}_1Warp.nii.gz``, ``{name}_1InverseWarp.nii.gz``);
4. resamples the moving image on the fixed grid and measures the normalised mutual information
   and coverage of the fixed brain (:func:`~napari_myelin.align.quality.similarity`): below
   :data:`MIN_SIMILARITY` or :data:`MIN_OVERLAP` the registration is refused (and its files are
   removed), below :data:`WARN_SIMILARITY` a :class:`RegistrationWarning` is issued.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import warnings
import weakref
from pathlib import Path

import numpy as np

from napari_myelin.utils.errors import InputError
from napari_myelin.utils.progress import ProgressFn, step
from napari_myelin.io.volume import Volume, atomic_write_bytes, check_output_folder
from napari_myelin.align.ants_io import register_stages, seeded, to_ants
from napari_myelin.align.quality import check_image, image_name, reference_image, similarity
from napari_myelin.align.transforms import Registration

#: Below this normalised mutual information (0 = independent, 1 = identical) a registration is
#: reported as failed (:class:`~napari_myelin.utils.errors.InputError`).
MIN_SIMILARITY = 0.02
#: Between :data:`MIN_SIMILARITY` and this value a :class:`RegistrationWarning` is issued.
WARN_SIMILARITY = 0.08
#: Fraction of the template brain that the warped image must cover.
MIN_OVERLAP = 0.5
#: The same for co-registration (a slab acquisition may cover a small part of the reference).
MIN_OVERLAP_COREGISTER = 0.1


class RegistrationWarning(UserWarning):
    """The registration finished but its similarity is low: check the result by eye."""


def _digest(vol: Volume) -> str:
    h = hashlib.sha256()
    arr = np.ascontiguousarray(np.asarray(vol.data, dtype=np.float32))
    h.update(str(arr.shape).encode())
    h.update(np.round(np.asarray(vol.affine, dtype=float), 4).tobytes())
    h.update(arr.tobytes())
    return h.hexdigest()


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


def saved_registration(out_dir: str | Path, name: str, fixed: Volume, moving: Volume) -> Registration:
    """The registration ``name`` saved in ``out_dir`` by an earlier run, without the images it was computed from.

    ``fixed`` and ``moving`` give the two grids (only their shapes and affines are used): ``apply`` resamples
    onto ``fixed``'s grid, ``to_native`` onto ``moving``'s.

    Raises
    ------
    InputError
        No record ``{name}.json`` or one of its transform files is missing.
    """
    out = Path(out_dir)
    record = out / f"{name}.json"
    try:
        files = {stage: out / f for stage, f in json.loads(record.read_text(encoding="utf-8"))["Files"].items()}
    except (OSError, ValueError, KeyError):
        raise InputError(f"{record}: no saved registration; run 'napari-myelin run' on the subject first.") from None
    if not all(p.exists() for p in files.values()):
        raise InputError(f"{record}: a transform file it lists is missing; run 'napari-myelin run' again.")
    forward, inverse, flags = _ordered(files)
    return Registration(fixed, moving, moving, forward, inverse, flags, "saved", float("nan"), float("nan"),
                        reused=True)


def _run_ants(fixed: Volume, moving: Volume, transform: str, seed: int, kwargs: dict, tmp: Path) -> dict[str, Path]:
    fi, mi = to_ants(fixed), to_ants(moving)
    prefix = str(tmp / "xfm_")
    with seeded(seed) as ants:
        if "stages" in kwargs:  # explicit stages, transform files only (the fast preset)
            register_stages(fi, mi, kwargs["stages"], prefix)
        else:
            ants.registration(fi, mi, type_of_transform=transform, outprefix=prefix, **kwargs)
    files = {}
    for stage in _STAGE_NAMES:
        p = Path(prefix + stage)
        if p.exists():
            files[stage] = p
    if not files:
        raise RuntimeError(f"ANTs wrote no transform for '{transform}'")
    return files


def _save_transforms(files: dict[str, Path], out: Path, name: str) -> dict[str, Path]:
    """Copy the transform files into ``out`` with stable names (removing a previous preset's files)."""
    stable = {}
    for stale in _STAGE_NAMES:  # a previous preset's files must not linger beside these
        (out / f"{name}_{stale}").unlink(missing_ok=True)
    (out / f"{name}.json").unlink(missing_ok=True)
    for stage, src in files.items():
        dst = out / f"{name}_{stage}"
        atomic_write_bytes(dst, src.read_bytes())
        stable[stage] = dst
    return stable


def _computed(fixed: Volume, moving: Volume, transform: str, preset: str, seed: int, kwargs: dict,
              out: Path | None, name: str, progress, cancel) -> tuple[Registration, dict[str, Path]]:
    """Register with ANTs; the transforms are saved in ``out`` or live in a temporary folder as long
    as the result."""
    step(progress, cancel, 0.05, f"registering ({preset}); this takes a while")
    tmp = Path(tempfile.mkdtemp(prefix="napari-myelin-reg-"))
    try:
        files = _run_ants(fixed, moving, transform, seed, kwargs, tmp)
        step(progress, cancel, 0.85, "registration done; saving transforms")
        if out is not None:
            files = _save_transforms(files, out, name)
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
    return reg, files


def _write_record(out: Path, name: str, key: dict, preset: str, files: dict[str, Path], reg: Registration) -> None:
    record = dict(key, Preset=preset, Files={stage: p.name for stage, p in files.items()},
                  Similarity=reg.similarity, Overlap=reg.overlap,
                  Description="ANTs transforms (antsApplyTransforms order: forward = moving -> fixed); "
                              "reused by napari-myelin when the same image is registered again.")
    atomic_write_bytes(out / f"{name}.json", json.dumps(record, indent=2).encode("utf-8"))


def run_registration(
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
    """Register ``moving`` to ``fixed`` with the ANTs ``transform`` type (steps in the module docstring).

    ``kwargs`` go to ``ants.registration``; ``mask`` is the fixed brain for the similarity check
    (default :func:`~napari_myelin.align.quality.brain_mask` of ``fixed``); ``min_overlap`` the
    fraction of it the warped image must cover when ``check``.
    """
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
        reg, files = _computed(fixed, moving, transform, preset, seed, kwargs, out, name, progress, cancel)
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
        _write_record(out, name, key, preset, files, reg)
    step(progress, cancel, 1.0, f"registered (similarity {reg.similarity:.3f})")
    return reg


def _check_result(reg: Registration, moving: Volume, min_overlap: float = MIN_OVERLAP) -> None:
    name = image_name(moving, "the moving image")
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
