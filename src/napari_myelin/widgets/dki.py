"""Dock widget "Diffusion kurtosis (DKI)": a DWI layer in, FA/MD/MK/AK/RK and colour-FA layers out.

The fit itself is :func:`napari_myelin.reconst.dki.fit_dki`, run in a thread worker by
:class:`~napari_myelin.widgets._runner.Runner` (progress bar + Cancel). The DWI layer is turned back
into its stored voxel order with :func:`~napari_myelin._layers.layer_to_volume` (the b-vectors refer
to the file's voxel axes), and the maps come back on the input's grid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, PushButton
from napari.layers import Image, Labels

from .._layers import display_geometry, to_display
from napari_myelin.reconst.dki import fit_dki
from napari_myelin.utils.errors import InputError
from napari_myelin.io.volume import read_bval_bvec
from ._base import ActionDock, layer_volume, mask_on_grid, volume_layers
from ._choices import RoleChoices, require
from ._display import add_maps_in_stages

AUTOMATIC = "automatic (median Otsu)"

#: Maps added after a fit (labels, colormaps: :data:`napari_myelin._styles.MAP_LABELS`); MK, the last, is the
#: primary (on top, visible), the others and the colour FA are added hidden.
DISPLAY = ("fa", "md", "ak", "rk", "mk")


class DKIWidget(ActionDock):
    """Choose a DWI layer (and optionally a mask, .bval/.bvec files, method, preprocessing), press Fit."""

    def __init__(self, napari_viewer) -> None:
        super().__init__(napari_viewer)
        self.dwi = ComboBox(label="DWI", choices=self._dwi_choices)
        self.mask = ComboBox(label="mask", choices=self._mask_choices)
        self.bval = FileEdit(label=".bval (optional)", mode="r", filter="*.bval")
        self.bvec = FileEdit(label=".bvec (optional)", mode="r", filter="*.bvec")
        self.method = ComboBox(label="method", choices=["WLS", "OLS"], value="WLS")
        self.denoise = CheckBox(text="MP-PCA denoising", value=False)
        self.degibbs = CheckBox(text="Gibbs unringing", value=False)
        self.fit_button = PushButton(text="Fit DKI")
        self.fit_button.changed.connect(self.run)
        self.form = Container(widgets=[self.dwi, self.mask, self.bval, self.bvec, self.method,
                                       self.denoise, self.degibbs, self.fit_button])
        self.roles = RoleChoices(self.viewer)
        self.roles.bind(self.dwi, "dwi")
        self._assemble(self.form)

    # ------------------------------------------------------------------ choices
    def _dwi_choices(self, _widget=None):
        return volume_layers(self.viewer, 4)

    def _mask_choices(self, _widget=None):
        return [(AUTOMATIC, None)] + [
            (layer.name, layer) for layer in self.viewer.layers if isinstance(layer, (Labels, Image)) and layer.ndim == 3
        ]

    # ------------------------------------------------------------------ run
    def _table(self, vol):
        bval, bvec = self.bval.value, self.bvec.value
        given = [p for p in (bval, bvec) if p is not None and str(p) not in ("", ".") and Path(p).is_file()]
        if given:
            if len(given) != 2:
                raise InputError("DKI: choose both the .bval and the .bvec file (or neither, to use the layer's).")
            return read_bval_bvec(bval, bvec)
        if vol.bvals is None:
            raise InputError(
                f"{self.dwi.value.name}: the layer carries no b-values/b-vectors; choose its .bval and .bvec files."
            )
        return vol.bvals, vol.bvecs

    def run(self, _value=None):
        """Start the fit in the background (returns the worker, or ``None`` when input is refused)."""
        layer = self.dwi.value
        try:
            if layer is None:
                raise InputError("DKI: no 4D image layer is open; open a DWI (with its .bval/.bvec) first.")
            require(layer, "dwi", "DWI")
            vol = layer_volume(layer)
            bvals, bvecs = self._table(vol)
            mask = None if self.mask.value is None else mask_on_grid(self.mask.value, vol, "DWI")
        except InputError as exc:
            self.runner.refuse(exc)
            return None
        self._volume = vol
        self._name = layer.name
        return self.runner.start_process(
            fit_dki, self._add_layers,
            dwi=vol.data, bvals=bvals, bvecs=bvecs, mask=mask, method=self.method.value,
            denoise=self.denoise.value, degibbs=self.degibbs.value, affine=vol.affine,
        )

    def _add_layers(self, maps):
        """Add the colour FA and the maps (MK on top), one per event-loop turn."""
        vol = self._volume
        rgb = np.stack([to_display(maps["fa_rgb"][..., c], vol.affine) for c in range(3)], axis=-1)
        scale, translate = display_geometry(vol.affine, vol.shape)
        name = f"colour FA · {self._name}"
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        self.viewer.add_image(
            rgb.astype(np.float32), rgb=True, name=name, scale=scale, translate=translate, visible=False,
            contrast_limits=(0.0, 1.0), metadata={"units": "fraction", "colour_axes": maps.parameters["colour_axes"]},
        )
        yield
        yield from add_maps_in_stages(
            self.viewer, vol, {key: maps[key] for key in DISPLAY}, primary="mk", source=self._name,
            units=maps.units, mask=np.asarray(maps["mask"]) > 0, action="DKI fit",
            metadata={"method": maps.method, "parameters": maps.parameters}, show=self.show_map)
