"""Dock widget "Register to template": a subject layer to the MNI template, layers warped along,
or the atlas tracts brought to the subject's native space.

The work is :func:`napari_myelin.align.registration.register_subject`, run in a separate process by
:meth:`~napari_myelin.widgets._runner.Runner.start_process` (ANTs holds the GIL: in a thread it would
freeze the window for the whole registration). The progress bar follows it, and Cancel ends the
process (nothing is added). Warped layers are added on the template grid, one per event-loop turn; the tract labels as a Labels layer (names in its ``features``) with the subject layer's
scale and translate. Transforms go to the chosen folder and are reused on the next run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, PushButton, Select, SpinBox
from napari.layers import Image, Labels, Layer

from .._layers import META_KEY, from_display, volume_to_layer
from napari_myelin.utils.errors import InputError
from napari_myelin.align.quality import check_image, reference_image
from napari_myelin.align.registration import PRESETS, available_atlases, register_subject
from ._base import ActionDock, layer_volume
from ._stage import layer_from_data

USER_ATLAS = "user labels file + LUT"


def _given(path) -> Path | None:
    return Path(path) if path is not None and str(path) not in ("", ".") else None


class RegistrationWidget(ActionDock):
    """Choose the subject image, layers to carry, preset and outputs; press Register."""

    def __init__(self, napari_viewer) -> None:
        super().__init__(napari_viewer)
        self.moving = ComboBox(label="subject image", choices=self._image_choices)
        self.carry = Select(label="carry along", choices=self._carry_choices)
        self.preset = ComboBox(label="preset", choices=list(PRESETS), value="fast")
        self.warp = CheckBox(text="add warped layers (template space)", value=True)
        self.to_native = CheckBox(text="add atlas tracts (native space)", value=False)
        atlases = available_atlases()
        self.atlas = ComboBox(label="atlas", choices=[(label, key) for key, label in atlases.items()]
                              + [(USER_ATLAS, "user")], value="hcp842")
        self.labels_file = FileEdit(label="labels (MNI space)", mode="r", filter="*.nii *.nii.gz")
        self.lut_file = FileEdit(label="LUT (.tsv/.txt)", mode="r", filter="*.tsv *.txt")
        self.out_dir = FileEdit(label="transforms folder (optional)", mode="d")
        self.seed = SpinBox(label="seed", value=0, min=0, max=2**31 - 1)
        self.run_button = PushButton(text="Register")
        self.run_button.changed.connect(self.run)
        self.atlas.changed.connect(self._atlas_changed)
        self.form = Container(widgets=[self.moving, self.carry, self.preset, self.warp, self.to_native, self.atlas,
                                       self.labels_file, self.lut_file, self.out_dir, self.seed, self.run_button])
        self._assemble(self.form)
        self._atlas_changed()

    # ------------------------------------------------------------------ choices
    def _image_choices(self, _widget=None):
        return [(layer.name, layer) for layer in self.viewer.layers
                if isinstance(layer, Image) and layer.ndim in (3, 4) and not layer.rgb]

    def _carry_choices(self, _widget=None):
        return [(layer.name, layer) for layer in self.viewer.layers
                if isinstance(layer, (Image, Labels)) and layer.ndim in (3, 4) and not getattr(layer, "rgb", False)]

    def _atlas_changed(self, _value=None) -> None:
        user = self.atlas.value == "user"
        self.labels_file.visible = user
        self.lut_file.visible = user

    # ------------------------------------------------------------------ run
    def _volume(self, layer, reference=None):
        if META_KEY in (layer.metadata or {}) or reference is None:
            return layer_volume(layer)
        # drawn in napari on the subject's display grid: undo the subject's display reordering
        return reference.with_data(from_display(np.asarray(layer.data), reference.affine))

    def run(self, _value=None):
        """Start the registration in the background (returns the worker, or ``None`` when input is refused)."""
        layer = self.moving.value
        try:
            if layer is None:
                raise InputError("Register: no 3D image layer is open; open the subject image first.")
            if not (self.warp.value or self.to_native.value):
                raise InputError("Register: tick 'add warped layers' or 'add atlas tracts' (or both).")
            moving = self._volume(layer)
            check_image(reference_image(moving), layer.name)  # refuse an empty image before starting
            carry = {}
            for other in self.carry.value or []:
                if other is layer:
                    continue
                vol = self._volume(other, moving)
                if isinstance(other, Labels):
                    vol.data = np.asarray(vol.data).astype(np.int32)
                carry[other.name] = vol
            atlas, lut = None, None
            if self.to_native.value:
                atlas = self.atlas.value
                if atlas == "user":
                    atlas, lut = _given(self.labels_file.value), _given(self.lut_file.value)
                    if atlas is None or not atlas.is_file():
                        raise InputError("Register: choose the user atlas label image (a NIfTI in MNI space).")
            out_dir = _given(self.out_dir.value)
        except InputError as exc:
            self.runner.refuse(exc)
            return None
        self._name = layer.name
        self._moving_layer = layer
        self._carry_layers = {name: other for other in (self.carry.value or []) for name in [other.name]}
        return self.runner.start_process(
            register_subject, self._add_layers,
            moving=moving, carry=carry if self.warp.value else {}, atlas=atlas, lut=lut,
            preset=self.preset.value, out_dir=out_dir, seed=int(self.seed.value),
        )

    def _add_layers(self, result):
        """Add the warped layers and the native-space tracts, one per event-loop turn (a generator)."""
        reg = result.registration
        if self.warp.value:
            for key, vol in result.warped.items():
                name = self._name if key == "warped" else key
                source = self._moving_layer if key == "warped" else self._carry_layers.get(key)
                if isinstance(source, Labels):
                    data, attrs, _ = volume_to_layer(vol.with_data(vol.data.astype(np.int32)),
                                                     name=f"{name} (template)", layer_type="labels")
                    if len(source.features):
                        attrs["features"] = source.features
                    self.viewer.add_layer(Layer.create(data, attrs, "labels"))
                    yield
                    continue
                kwargs = {}
                if source is not None and getattr(source, "colormap", None) is not None:
                    kwargs = {"colormap": source.colormap.name, "contrast_limits": tuple(source.contrast_limits)}
                meta = {"units": (source.metadata or {}).get("units", "")} if source is not None else {}
                meta.update(space="MNI152NLin2009aSym", similarity_nmi=reg.similarity, transforms=reg.transforms)
                data, attrs, kind = volume_to_layer(vol.with_data(np.asarray(vol.data, np.float32)),
                                                    name=f"{name} (template)", metadata=meta, **kwargs)
                self.viewer.add_layer(layer_from_data(data, attrs, kind))
                yield
        if result.tracts is not None:
            data, attrs, _ = volume_to_layer(result.tracts, name=f"{self._name} tracts (native)", layer_type="labels",
                                             metadata={"lut": result.lut.to_dict(orient="list"),
                                                       "transforms": reg.transforms})
            attrs["features"] = result.lut
            # the subject layer's display geometry, so the labels overlay it exactly
            attrs["scale"] = np.asarray(self._moving_layer.scale)[-3:]
            attrs["translate"] = np.asarray(self._moving_layer.translate)[-3:]
            self.viewer.add_layer(Layer.create(data, attrs, "labels"))
