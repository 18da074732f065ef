"""The result of a registration: transform files between two images and resampling through them.

:class:`Registration` holds the ANTs transform files from a subject image (``moving``) to a target
space (``fixed``) and applies them to maps (linear), labels (``genericLabel``) and masks, forwards
(moving -> fixed, :meth:`Registration.apply`) or inverted (fixed -> moving,
:meth:`Registration.to_native`, e.g. the tract atlas, so tract statistics are computed on the
unresampled maps). 4D series are resampled volume by volume.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_myelin.utils.errors import InputError
from napari_myelin.io.volume import Volume
from napari_myelin.align.ants_io import ants_module, to_ants
from napari_myelin.align.quality import image_name

#: Interpolations accepted by :meth:`Registration.apply` / :meth:`Registration.to_native`.
#: ``"mask"`` interpolates linearly and keeps voxels >= 0.5 (a binary mask, uint8).
INTERPOLATIONS = ("linear", "genericLabel", "nearestNeighbor", "bSpline", "mask")


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

    def __getstate__(self) -> dict:
        """Pickled state: a copy (e.g. sent back from a worker process) does not own the transforms' temporary
        folder."""
        state = dict(self.__dict__)
        state["_tmp"] = None
        return state

    @property
    def transforms(self) -> dict[str, list[str]]:
        """Transform file paths: ``{"forward": [...], "inverse": [...]}``."""
        return {"forward": [str(p) for p in self.forward], "inverse": [str(p) for p in self.inverse]}

    def _resample(self, vol: Volume, reference: Volume, transforms, flags, interpolation: str) -> Volume:
        if interpolation not in INTERPOLATIONS:
            raise InputError(f"interpolation '{interpolation}': unknown; use one of {', '.join(INTERPOLATIONS)}.")
        ants = ants_module()
        data = np.asarray(vol.data)
        if data.ndim not in (3, 4):
            raise InputError(
                f"{image_name(vol, 'image')}: has shape {data.shape}; only 3D or 4D images can be resampled."
            )
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
