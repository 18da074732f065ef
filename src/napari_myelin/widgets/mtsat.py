"""Dock widget "Magnetization transfer (MTsat)": MT-, PD- and T1-weighted layers (+ B1) in; MTsat, MTR, T1 out.

The computation is :func:`napari_myelin.reconst.mtsat.fit_mtsat` (Helms' equations, small-angle or exact), run in
a thread worker by :class:`~napari_myelin.widgets._runner.Runner`. Layers named as a BIDS MTS trio
(``*_flip-1_mt-on_MTS``, ``*_flip-1_mt-off_MTS``, ``*_flip-2_mt-off_MTS``) are assigned to their roles
when opened. Flip angles and repetition times come from the layers' sidecars (``FlipAngle``,
``RepetitionTimeExcitation`` or ``RepetitionTime``) unless typed in. A B1 layer on another grid is
resampled to the MTS grid by world coordinates (with a notification).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, LineEdit, PushButton
from napari.utils.notifications import show_warning

from napari_myelin.io.bids import mts_roles
from napari_myelin.io.resample import b1_on_grid
from napari_myelin.reconst import mtsat
from napari_myelin.utils.errors import InputError
from ._base import ActionDock, layer_volume, mask_on_grid, parse_floats, volume_layers
from ._choices import RoleChoices, require
from ._display import add_maps_in_stages

NONE = "none"

#: Maps added after a fit (labels, colormaps: :data:`napari_myelin._styles.MAP_LABELS`); MTsat, the last, is the
#: primary (on top, visible).
DISPLAY = ("mtr", "t1", "a", "mtsat")


class MTsatWidget(ActionDock):
    """Choose the MT-, PD- and T1-weighted volumes, an optional B1 map and mask; press Fit."""

    def __init__(self, napari_viewer) -> None:
        super().__init__(napari_viewer)
        self.mtw = ComboBox(label="MT-weighted", choices=self._image_choices)
        self.pdw = ComboBox(label="PD-weighted", choices=self._image_choices)
        self.t1w = ComboBox(label="T1-weighted", choices=self._image_choices)
        self.b1 = ComboBox(label="B1 map", choices=self._b1_choices)
        self.mask = ComboBox(label="mask", choices=self._mask_choices)
        self.flip_angles = LineEdit(label="flip angles (deg)", value="")
        self.flip_angles.tooltip = "MTw PDw T1w, e.g. '6 6 20'; empty: from the sidecars (FlipAngle)"
        self.tr = LineEdit(label="TR (s)", value="")
        self.tr.tooltip = "MTw PDw T1w in seconds, e.g. '0.028 0.028 0.018'; empty: from the sidecars"
        self.b1_correction = FloatSpinBox(label="B1 correction factor", value=mtsat.B1_CORRECTION, min=0.0,
                                          max=0.95, step=0.05)
        self.b1_correction.tooltip = ("MTsat (1 - f)/(1 - f B1) with a B1 map (Weiskopf 2013: 0.4); 0: no empirical "
                                      "factor, the MTw angle is B1-scaled instead")
        self.exact = CheckBox(text="exact SPGR equations (not small-angle)", value=False)
        self.fit_button = PushButton(text="Fit MTsat / MTR / T1")
        self.fit_button.changed.connect(self.run)
        self.form = Container(widgets=[self.mtw, self.pdw, self.t1w, self.b1, self.mask, self.flip_angles, self.tr,
                                       self.b1_correction, self.exact, self.fit_button])
        self.roles = RoleChoices(self.viewer)
        for combo in (self.mtw, self.pdw, self.t1w):
            self.roles.bind(combo, "mts")  # never a B1 map, a computed map or a truth layer by default
        self.roles.bind(self.b1, "b1", optional=True)
        self._assemble(self.form)

    # ------------------------------------------------------------------ choices
    def _image_choices(self, _widget=None):
        return volume_layers(self.viewer, 3)

    def _b1_choices(self, _widget=None):
        return [(NONE, None)] + volume_layers(self.viewer, 3)

    def _mask_choices(self, _widget=None):
        return [("every voxel with signal", None)] + volume_layers(self.viewer, 3, labels=True)

    def _refresh(self, _event=None) -> None:
        super()._refresh()
        self._assign_bids_roles()

    def _assign_bids_roles(self) -> None:
        """Put the layers of a BIDS MTS trio in their roles, unless three different layers are chosen already."""
        chosen = (self.mtw.value, self.pdw.value, self.t1w.value)
        if None not in chosen and len(set(map(id, chosen))) == 3:
            return
        named = {Path(layer.name): layer for _, layer in self._image_choices() if layer.name.endswith("_MTS")}
        if len(named) != 3:
            return
        try:
            ordered = mts_roles(list(named))
        except InputError:
            return
        self.mtw.value, self.pdw.value, self.t1w.value = (named[p] for p in ordered)

    # ------------------------------------------------------------------ fit
    def _inputs(self):
        """The three volumes and the keyword arguments of :func:`~napari_myelin.reconst.mtsat.fit_mtsat`."""
        layers = (self.mtw.value, self.pdw.value, self.t1w.value)
        if None in layers:
            raise InputError("MTsat: open the MT-, PD- and T1-weighted volumes first (three 3D image layers).")
        if len(set(map(id, layers))) < 3:
            raise InputError("MTsat: the MT-, PD- and T1-weighted choices must be three different layers.")
        for layer, what in zip(layers, ("MT-weighted", "PD-weighted", "T1-weighted")):
            require(layer, "mts", what)
        vols = [layer_volume(layer) for layer in layers]
        for layer, vol in zip(layers[1:], vols[1:]):
            if vol.shape != vols[0].shape or not np.allclose(vol.affine, vols[0].affine, atol=1e-4):
                raise InputError(f"{layer.name}: its grid differs from {layers[0].name}; choose three volumes of one "
                                 "acquisition grid.")
        fa, tr = mtsat.mts_protocol([v.metadata for v in vols], [layer.name for layer in layers],
                                    flip_angles=parse_floats(self.flip_angles.value, "flip angles"),
                                    repetition_times=parse_floats(self.tr.value, "TR"))
        b1 = None
        if self.b1.value is not None:
            require(self.b1.value, "b1", "B1 map")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                b1 = b1_on_grid(layer_volume(self.b1.value), vols[0])
            for w in caught:
                show_warning(str(w.message))
        mask = None if self.mask.value is None else mask_on_grid(self.mask.value, vols[0], "MT-weighted")
        kwargs = dict(flip_angles=fa, repetition_times=tr, b1=b1, b1_correction=float(self.b1_correction.value),
                      mask=mask, exact=bool(self.exact.value))
        return vols, kwargs

    def run(self, _value=None):
        """Start the fit in the background (returns the worker, or ``None`` when input is refused)."""
        try:
            vols, kwargs = self._inputs()
        except InputError as exc:
            self.runner.refuse(exc)
            return None
        self._volume = vols[0]
        self._name = self.mtw.value.name
        signal = np.all([np.isfinite(v.data) & (np.asarray(v.data) > 0) for v in vols], axis=0)
        self._fit_mask = signal if kwargs["mask"] is None else signal & kwargs["mask"]
        return self.runner.start_process(mtsat.fit_mtsat, self._add_layers, mtw=vols[0].data, pdw=vols[1].data,
                                         t1w=vols[2].data, **kwargs)

    def _add_layers(self, maps):
        """Add the maps (MTsat on top), one per event-loop turn."""
        self.maps = maps
        yield from add_maps_in_stages(
            self.viewer, self._volume, {key: maps[key] for key in DISPLAY}, primary="mtsat", source=self._name,
            units=maps.units, mask=self._fit_mask, action="MTsat fit",
            metadata={"method": maps.method, "parameters": maps.parameters}, show=self.show_map)
        self._refresh()
