"""Dock widget "Integrated myelin map (CNN)": MWF, FA, MK, QPM (and QSM, MTsat, chi_dia) layers in, iMWF (%) +
uncertainty out.

The computation is :func:`napari_myelin.fusion.inference.fuse`, run in a thread worker by
:class:`~napari_myelin.widgets._runner.Runner` (progress bar + Cancel). Layers are turned back into their
stored voxel order with :func:`~napari_myelin._layers.layer_to_volume`; their grids and units (layer
``metadata["units"]``) are checked by the core, and the results come back on the MWF layer's grid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, PushButton, SpinBox
from napari.layers import Image, Labels
from qtpy.QtWidgets import QVBoxLayout, QWidget

from napari_myelin.utils.errors import InputError
from napari_myelin.fusion.card import CHANNELS, OPTIONAL_CHANNELS
from napari_myelin.fusion.inference import fuse
from napari_myelin.fusion.inputs import check_grids
from ._base import layer_volume
from ._choices import RoleChoices, require
from ._display import add_maps_in_stages
from ._runner import Runner

NONE = "none"
CHOOSE = "(choose a map)"
SHIPPED = "shipped (phantom-trained)"
LABELS = {"mwf": "MWF", "fa": "FA", "mk": "MK", "qpm": "QPM myelin", "qsm": "QSM (optional)",
          "mtsat": "MTsat (optional)", "chi_dia": "chi_dia (optional)"}
#: Role of each channel (:mod:`napari_myelin.widgets._choices`): preselected by the layers' metadata (never a
#: truth layer; chi-separation maps are not the QSM), keeping the user's choices.
ROLES = {"mwf": "mwf", "fa": "fa", "mk": "mk", "qpm": "qpm_myelin", "qsm": "qsm", "mtsat": "mtsat",
         "chi_dia": "chi_dia"}


class FusionWidget(QWidget):
    """Pick the input layers and the weights, press "Fuse"."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.inputs = {
            c: ComboBox(label=LABELS[c], choices=(self._optional_choices if c in OPTIONAL_CHANNELS else self._choices))
            for c in CHANNELS
        }
        self.mask = ComboBox(label="mask", choices=self._mask_choices)
        self.weights = FileEdit(label="weights (.safetensors, optional)", mode="r", filter="*.safetensors")
        self.samples = SpinBox(label="MC-dropout samples", value=8, min=1, max=64)
        self.fuse_button = PushButton(text="Fuse")
        self.fuse_button.changed.connect(self.run)
        self.form = Container(widgets=[*self.inputs.values(), self.mask, self.weights, self.samples, self.fuse_button])
        self.runner = Runner()
        layout = QVBoxLayout(self)
        layout.addWidget(self.form.native)
        layout.addWidget(self.runner)
        layout.addStretch(1)
        self.roles = RoleChoices(self.viewer)
        for c, box in self.inputs.items():
            self.roles.bind(box, ROLES[c], optional=c in OPTIONAL_CHANNELS)
        self.viewer.layers.events.inserted.connect(self._refresh)
        self.viewer.layers.events.removed.connect(self._refresh)
        self._refresh()

    # ------------------------------------------------------------------ choices
    def _images(self):
        return [layer for layer in self.viewer.layers if isinstance(layer, Image) and layer.ndim == 3 and not layer.rgb]

    def _choices(self, _widget=None):
        return [(CHOOSE, None)] + self._layer_choices()

    def _layer_choices(self):
        return [(layer.name, layer) for layer in self._images()]

    def _optional_choices(self, _widget=None):
        return [(NONE, None)] + self._layer_choices()

    def _mask_choices(self, _widget=None):
        return [("automatic (FA > 0)", None)] + [
            (layer.name, layer) for layer in self.viewer.layers if isinstance(layer, (Labels, Image)) and layer.ndim == 3
        ]

    def _refresh(self, _event=None) -> None:
        """Re-read the choices; each input keeps the user's choice, else takes the map of its kind."""
        for box in self.inputs.values():
            box.reset_choices()
        self.mask.reset_choices()

    def _weights_path(self):
        w = self.weights.value
        if w is None or str(w) in ("", ".") or not Path(w).is_file():
            return None
        return str(w)

    # ------------------------------------------------------------------ run
    def run(self, _value=None):
        """Start the fusion in the background (returns the worker, or ``None`` when input is refused)."""
        try:
            layers = {c: box.value for c, box in self.inputs.items() if box.value is not None}
            missing = [LABELS[c] for c in CHANNELS if c not in OPTIONAL_CHANNELS and c not in layers]
            if missing:
                raise InputError(f"fusion: no layer chosen for {', '.join(missing)}; open the maps and pick them.")
            if len({id(v) for v in layers.values()}) != len(layers):
                raise InputError("fusion: the same layer is chosen for two inputs; pick one map per input.")
            for c, layer in layers.items():
                require(layer, ROLES[c], LABELS[c])
            vols = {c: layer_volume(l)
                    for c, l in layers.items()}
            check_grids({layers[c].name: v for c, v in vols.items()})
            units = {c: (l.metadata or {}).get("units") for c, l in layers.items()}
            mask = None
            if self.mask.value is not None:
                ml = self.mask.value
                mvol = layer_volume(ml)
                if mvol.shape != vols["mwf"].shape:
                    raise InputError(f"{ml.name}: its grid {mvol.shape} differs from the maps' {vols['mwf'].shape}; "
                                     "choose a mask on the same grid.")
                mask = np.asarray(mvol.data) > 0
        except InputError as exc:
            self.runner.refuse(exc)
            return None
        self._volume = vols["mwf"]
        self._name = layers["mwf"].name.split(" · ", 1)[-1]
        fa = np.asarray(vols["fa"].data, dtype=float)
        self._mask = (np.isfinite(fa) & (fa > 0)) if mask is None else mask
        # in a worker process: the network's Python glue and the GC pauses of a busy session stay off the window
        return self.runner.start_process(
            fuse, self._add_layers,
            **{c: (vols[c].data if c in vols else None) for c in CHANNELS},
            weights=self._weights_path(), mask=mask, voxel_size_mm=vols["mwf"].zooms, units=units,
            n_samples=int(self.samples.value),
        )

    def _add_layers(self, maps):
        """Add the integrated MWF (on top) and its uncertainty (hidden), one per event-loop turn."""
        yield from add_maps_in_stages(
            self.viewer, self._volume, {"imwf_sd": maps["imwf_sd"], "imwf": maps["imwf"]}, primary="imwf",
            source=self._name, units=maps.units, mask=self._mask, action="Integrated MWF",
            labels={"imwf": "integrated MWF (CNN, %)", "imwf_sd": "integrated MWF uncertainty (SD, %)"},
            metadata={"method": maps.method, "parameters": maps.parameters})
