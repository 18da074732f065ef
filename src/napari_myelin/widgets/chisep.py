"""Dock widget "χ-separation": multi-echo GRE magnitude + phase and a spin-echo R2 layer in; chi_para,
chi_dia, R2', R2* and chi layers out.

The work is :func:`napari_myelin.workflows.chisep.chi_separation` (QSM, then
:func:`~napari_myelin.reconst.chisep.separate_susceptibility`), run in a thread worker by
:class:`~napari_myelin.widgets._runner.Runner`. The R2 layer is an R2 map (1/s), a T2 map (s or ms: the
MWF dock's geometric-mean T2, for example) or the 4D multi-echo spin echo (fitted mono-exponentially);
its units come from the layer's sidecar or metadata unless chosen. On another grid it is resampled to
the GRE grid by world coordinates (with a notification).
"""

from __future__ import annotations

import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSpinBox, LineEdit, PushButton
from napari.utils.notifications import show_info

from napari_myelin.utils.errors import InputError
from ._base import ActionDock, layer_volume, mask_on_grid, parse_floats, volume_layers
from ._choices import RoleChoices, require
from ._display import add_maps_in_stages
from ._jobs import check_overlap, chi_separation_from_r2

AUTO = "from the layer"

#: Maps added after a run (labels, colormaps: :data:`napari_myelin._styles.MAP_LABELS`); chi_para, the last, is
#: the primary (on top, visible).
DISPLAY = ("chi_dia", "r2prime", "r2star", "chi", "chi_para")


class ChiSepWidget(ActionDock):
    """Choose the GRE magnitude and phase (4D), the R2 layer, TEs, B0 and a mask; press Separate."""

    def __init__(self, napari_viewer) -> None:
        super().__init__(napari_viewer)
        self.magnitude = ComboBox(label="GRE magnitude", choices=self._series_choices)
        self.phase = ComboBox(label="GRE phase", choices=self._series_choices)
        self.r2 = ComboBox(label="R2 / T2 / spin echo", choices=self._r2_choices)
        self.r2_units = ComboBox(label="R2 layer units", choices=[AUTO, "1/s", "s", "ms"], value=AUTO)
        self.te = LineEdit(label="echo times (s)", value="")
        self.te.tooltip = "one per GRE echo, e.g. '0.004 0.01 0.016'; empty: from the phase layer's sidecar"
        self.b0 = FloatSpinBox(label="B0 (T; 0: sidecar)", value=0.0, min=0.0, max=20.0, step=0.5)
        self.dr = FloatSpinBox(label="Dr (Hz/ppm; 0: 137 x B0/3T)", value=0.0, min=0.0, max=2000.0, step=1.0)
        self.mask = ComboBox(label="mask", choices=self._mask_choices)
        self.run_button = PushButton(text="Separate susceptibility")
        self.run_button.changed.connect(self.run)
        self.form = Container(widgets=[self.magnitude, self.phase, self.r2, self.r2_units, self.te, self.b0,
                                       self.dr, self.mask, self.run_button])
        self.roles = RoleChoices(self.viewer)
        self.roles.bind(self.magnitude, "gre_magnitude")
        self.roles.bind(self.phase, "gre_phase")
        self.roles.bind(self.r2, "r2")
        self._assemble(self.form)

    # ------------------------------------------------------------------ choices
    def _series_choices(self, _widget=None):
        return volume_layers(self.viewer, 4)

    def _r2_choices(self, _widget=None):
        return volume_layers(self.viewer, 3) + volume_layers(self.viewer, 4)

    def _mask_choices(self, _widget=None):
        return [("automatic", None)] + volume_layers(self.viewer, 3, labels=True)

    # ------------------------------------------------------------------ run
    def _r2(self, gre):
        """The chosen R2 / T2 / spin-echo volume, its name and units (the worker makes it R2 on the GRE grid)."""
        layer = self.r2.value
        if layer is None:
            raise InputError("R2: open an R2 map, a T2 map or the multi-echo spin echo, and choose it.")
        require(layer, "r2", "R2 / T2 / spin echo")
        vol = layer_volume(layer)
        units = None if self.r2_units.value == AUTO else self.r2_units.value
        if units is None and "Units" not in vol.metadata:
            units = (layer.metadata or {}).get("units")  # maps made by the other docks
        if vol.shape[:3] != gre.shape[:3] or not np.allclose(vol.affine, gre.affine, atol=1e-3):
            check_overlap(vol, gre, layer.name)  # refused now; the R2 itself is computed in the worker
            show_info(f"{layer.name}: on another grid than the GRE; resampled to it by world coordinates.")
        return {"r2": vol, "r2_name": layer.name, "r2_units": units}

    def _inputs(self) -> dict:
        if self.magnitude.value is None or self.phase.value is None:
            raise InputError("χ-separation: open the 4D GRE magnitude and phase, and choose them.")
        require(self.magnitude.value, "gre_magnitude", "GRE magnitude")
        require(self.phase.value, "gre_phase", "GRE phase")
        mag, ph = layer_volume(self.magnitude.value), layer_volume(self.phase.value)
        te = parse_floats(self.te.value, "echo times") or ph.metadata.get("EchoTime") or mag.metadata.get("EchoTime")
        b0 = self.b0.value or ph.metadata.get("MagneticFieldStrength") or mag.metadata.get("MagneticFieldStrength")
        mask = None if self.mask.value is None else mask_on_grid(self.mask.value, ph, "GRE")
        return dict(magnitude=mag.data, phase=ph.data, echo_times=te, **self._r2(ph), field_strength=b0,
                    affine=ph.affine, mask=mask, relaxometric_constant=self.dr.value or None)

    def run(self, _value=None):
        """Start the separation in the background (returns the worker, or ``None`` when input is refused)."""
        try:
            kwargs = self._inputs()
        except InputError as exc:
            self.runner.refuse(exc)
            return None
        self._volume = layer_volume(self.phase.value)
        self._name = self.phase.value.name
        return self.runner.start_process(chi_separation_from_r2, self._add_layers, **kwargs)

    def _add_layers(self, maps):
        """Add the maps (chi_para on top), one per event-loop turn."""
        self.maps = maps
        layers = yield from add_maps_in_stages(
            self.viewer, self._volume, {key: maps[key] for key in DISPLAY}, primary="chi_para", source=self._name,
            units=maps.units, mask=np.asarray(maps["mask"]) > 0, action="chi-separation",
            metadata={"method": maps.method}, show=self.show_map)
        for key, layer in layers.items():
            layer.metadata["description"] = maps.descriptions[key]
