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
   ``fast``    ``SyN``                           affine (MI), SyN (MI, 40x20x0)
   ``accurate`` ``SyN``                          affine (MI), SyN (MI, 100x70x50x20)
   ``affine``  ``Affine``                        affine (MI) only
   ==========  ================================  =============================================

``fast`` is ANTsPy's plain ``SyN`` (affine on 4x, 2x, 2x, 1x shrunk grids, then SyN at 4x and 2x
and a full-resolution level of 0 iterations): with the same seed it gives the transforms of
``ants.registration(type_of_transform="SyN")`` itself. It runs those stages (:data:`SYN_STAGES`)
through ``antsRegistration`` asking for the transform files only, not the two resampled images
``ants.registration`` also makes, so the whole call, warped image and checks included, takes about
as long as the bare ``ants.registration`` (CPU time ratio 1.00 measured). In 0.2 and earlier it was
``antsRegistrationSyNQuick[s]`` (rigid and affine stages to full resolution, SyN up to 100x70x50
iterations), 1.8 times slower in ANTs for a similar result (``benchmarks/bench_registration.py``).

The returned :class:`Registration` carries the transform files (copied next to the outputs with
stable names and reused when present, so a subject is never registered twice), the warped image,
a similarity check, and applies the transforms to maps (linear), labels (``genericLabel``) and
masks, forwards (native -> template) or inverted (template -> native, e.g. the tract atlas, so
tract statistics are computed on the unresampled maps).

:func:`register_subject` does one subject end to end (what the CLI and the widget call): the
registration to the template, other volumes carried along, and a tract atlas brought back to the
subject's grid.

The work is split by what it does: :mod:`~napari_myelin.align.ants_io` (ITK threads, the seed,
RAS <-> LPS geometry), :mod:`~napari_myelin.align.quality` (input checks, similarity, Dice),
:mod:`~napari_myelin.align.transforms` (:class:`~napari_myelin.align.transforms.Registration`)
and :mod:`~napari_myelin.align.runner` (one ANTs run, reuse of saved transforms, the result check).

References
----------
----------
Avants B.B. et al., "Symmetric diffeomorphic image registration with cross-correlation: evaluating
automated labeling of elderly and neurodegenerative brain", Med Image Anal 12, 26-41 (2008).
Avants B.B. et al., "A reproducible evaluation of ANTs similarity metric performance in brain image
registration", NeuroImage 54, 2033-2044 (2011).
Fonov V. et al., "Unbiased average age-appropriate atlases for pediatric studies", NeuroImage 54,
313-327 (2011).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd

from napari_myelin.utils.errors import InputError
from napari_myelin.utils.progress import ProgressFn, step, subrange
from napari_myelin.io.volume import Volume
from napari_myelin.align.quality import reference_image
from napari_myelin.align.runner import MIN_OVERLAP_COREGISTER, run_registration
from napari_myelin.align.transforms import INTERPOLATIONS, Registration

#: Preset name -> ANTs ``type_of_transform``.
PRESETS = {
    "fast": "SyN",
    "accurate": "SyN",
    "affine": "Affine",
}


#: The stages of ANTsPy's ``ants.registration(type_of_transform="SyN")`` (antspyx 0.4-0.6), run by the
#: ``fast`` preset through :func:`~napari_myelin.align.ants_io.register_stages`.
SYN_STAGES = (
    {"metric": "mattes[{fixed},{moving},1,32,regular,0.2]", "transform": "Affine[0.25]",
     "convergence": "2100x1200x1200x0", "sigmas": "3x2x1x0", "shrink": "4x2x2x1"},
    {"metric": "mattes[{fixed},{moving},1,32]", "transform": "SyN[0.200000,3.000000,0.000000]",
     "convergence": "[40x20x0,1e-7,8]", "sigmas": "2x1x0", "shrink": "4x2x1"},
)


def _preset_transform(preset: str) -> tuple[str, dict]:
    """ANTs transform type and options of ``preset``: ``ants.registration`` keywords, or ``stages`` (``fast``)."""
    if preset not in PRESETS:
        raise InputError(f"preset '{preset}': unknown; use one of {', '.join(PRESETS)}.")
    transform = PRESETS[preset]
    kwargs: dict = {}
    if preset == "fast":  # ANTsPy's SyN, without the warped images ants.registration also computes
        kwargs = {"stages": [dict(st) for st in SYN_STAGES]}
    elif preset == "accurate":
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
        ``fast``: ANTs ``SyN`` (affine + SyN, mutual information, as ``ants.registration`` does it);
        ``accurate``: ``SyN`` with more iterations and a full-resolution level; ``affine``: 12 parameters only.
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
        information is below :data:`~napari_myelin.align.runner.MIN_SIMILARITY`, and warn below
        :data:`~napari_myelin.align.runner.WARN_SIMILARITY`.
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
    return run_registration(template, moving, transform=transform, preset=preset, name=name, out_dir=out_dir,
                            seed=seed, kwargs=kwargs, check=check, mask=mask, progress=progress,
                            cancel=cancel)


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
    return run_registration(fixed, moving, transform="antsRegistrationSyNQuick[r]", preset="rigid", name=name,
                            out_dir=out_dir, seed=seed, kwargs={}, check=check, progress=progress, cancel=cancel,
                            min_overlap=MIN_OVERLAP_COREGISTER)


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
