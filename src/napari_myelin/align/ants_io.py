"""ANTs (antspyx) in this process: ITK threads, the random seed, and Volume <-> ANTsImage.

Every registration and every resampling through ANTs transforms goes through this module: it
sets the default ITK thread count before ``ants`` is first imported, holds the lock around ANTs'
global random seed (:func:`seeded`) and converts geometries.

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
for bit. ANTs reads a seed of 0 as "seed from the clock", so seed ``s`` reaches ANTs as
``s mod (2^31 - 1) + 1`` (:func:`ants_seed`): every seed, 0 (the default) included, is repeatable.
With several threads ITK's dynamic work splitting sums the Mattes mutual information in
a varying order, so repeated runs differ slightly (measured: mean tract Dice between two runs
about 0.9 at 4 mm); use one thread where exact repetition matters.
"""

from __future__ import annotations

import os
import threading
import warnings
from contextlib import contextmanager
from typing import Any, Iterator

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", str(os.cpu_count() or 1))

import numpy as np  # noqa: E402

from napari_myelin.utils.errors import InputError  # noqa: E402
from napari_myelin.io.volume import Volume  # noqa: E402

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


def ants_module():
    """The ``ants`` package, imported on first use (after the thread count is set)."""
    import ants

    return ants


def ants_seed(seed: int) -> int:
    """The ``--random-seed`` given to ANTs for ``seed`` (never 0: ANTs would then seed from the clock)."""
    seed = int(seed)
    if seed < 0:
        raise InputError(f"seed={seed}: must be 0 or a positive integer.")
    return seed % (2**31 - 1) + 1


@contextmanager
def seeded(seed: int) -> Iterator[Any]:
    """Run ANTs with ``seed`` as its random seed, one registration at a time; yields ``ants``.

    ``ants.config``'s seed is global: it is set under a lock and restored on exit. Entering marks
    that ANTs ran in this process (ITK has then read its thread count, see :func:`set_threads`).
    """
    ants = ants_module()
    value = ants_seed(seed)
    with _LOCK:
        saved = ants.config._random_seed
        ants.config._random_seed = value
        _STATE["ran"] = True
        try:
            yield ants
        finally:
            ants.config._random_seed = saved


def register_stages(fixed, moving, stages, outprefix: str) -> None:
    """Run ``antsRegistration`` (the library ANTsPy wraps) with explicit stages, writing transforms only.

    ``ants.registration`` also resamples the moving image onto the fixed grid and the fixed image onto
    the moving grid; napari-myelin resamples the moving image itself
    (:class:`~napari_myelin.align.transforms.Registration`), so this call asks for the transform files
    alone. The initial transform aligns the intensity centres of mass (as ``ants.registration``); each
    stage maps ``transform``, ``metric`` (a format
    string with ``{fixed}`` and ``{moving}``), ``convergence``, ``shrink`` and ``sigmas`` to
    antsRegistration's options. Call it inside :func:`seeded`.
    """
    try:
        from ants.internal import get_lib_fn, get_pointer_string, process_arguments
    except ImportError:  # antspyx < 0.5
        from ants.utils import get_lib_fn, get_pointer_string, process_arguments
    ants = ants_module()
    fixed, moving = fixed.clone("float"), moving.clone("float")
    f, m = get_pointer_string(fixed), get_pointer_string(moving)
    args = ["--dimensionality", "3", "-r", f"[{f},{m},1]"]
    for st in stages:
        args += ["--metric", st["metric"].format(fixed=f, moving=m), "--transform", st["transform"],
                 "--convergence", st["convergence"], "--smoothing-sigmas", st["sigmas"],
                 "--shrink-factors", st["shrink"], "-x", "[NA,NA]"]
    args += ["-u", "0", "-z", "1", "--output", outprefix]
    if ants.config._random_seed is not None:
        args += ["--random-seed", str(ants.config._random_seed)]
    args += ["--float", "1", "--write-composite-transform", "0"]
    status = get_lib_fn("antsRegistration")(process_arguments(args))
    if status != 0:
        raise RuntimeError(f"antsRegistration failed with status {status}")


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
    return ants_module().from_numpy(
        np.ascontiguousarray(arr), origin=origin.tolist(), spacing=spacing.tolist(), direction=direction
    )


def from_ants(img, **metadata: Any) -> Volume:
    """The :class:`Volume` of an ANTs image (affine restored to RAS+)."""
    return Volume(np.asarray(img.numpy()), affine_from_ants(img), None, dict(metadata), None)
