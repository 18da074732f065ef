"""Dock widget "Relaxometry (QPM)": SPGR (+ B1) layers in; T1, PD, MTV, QPM myelin and MWF (%) layers out.

The computation is :func:`napari_myelin.reconst.qpm.qpm` (DESPOT1 + myelin map), run in a thread worker by
:class:`~napari_myelin.widgets._runner.Runner`. Flip angles and TR come from the SPGR layer's sidecar
(``FlipAngle``, ``RepetitionTime``) unless typed in. A B1 layer on another grid is resampled to the
SPGR grid by world coordinates (with a notification). The calibration panel fits
``MWF[%] = c0 + c1 M + c2 M^2`` between an MWF layer and the QPM myelin layer over a white-matter
mask (or tract means), scatters MWF against the QPM map with the fitted quadratic, and adds the
calibrated map; calibrations are saved to / loaded from JSON.
"""

from __future__ import annotations

import warnings

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, LineEdit, PushButton
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from napari.layers import Labels
from napari.utils.notifications import show_info, show_warning
from qtpy.QtWidgets import QGroupBox, QVBoxLayout

from napari_myelin.io.resample import b1_on_grid
from napari_myelin.reconst import qpm
from napari_myelin.io.resample import resample_like
from napari_myelin.utils.errors import InputError
from ._base import ActionDock, layer_volume, mask_on_grid, parse_floats, volume_layers
from ._choices import RoleChoices, require
from ._display import add_maps_in_stages

FROM_SIDECAR = ""
NONE = "none"
CHOOSE = "(choose a map)"

#: Maps added after a fit (labels, colormaps: :data:`napari_myelin._styles.MAP_LABELS`); the last one present
#: is the primary (on top, visible).
DISPLAY = ("t1", "pd", "mtv", "qpm_myelin", "mwf_qpm")
#: Label of the map the calibration panel adds.
CALIBRATED = "MWF calibrated here (%)"


class QPMWidget(ActionDock):
    """Choose the SPGR series (4D), an optional B1 map and mask, the method; press Fit. Then calibrate."""

    def __init__(self, napari_viewer) -> None:
        super().__init__(napari_viewer)
        self.calibration: qpm.MwfCalibration | None = None
        self.spgr = ComboBox(label="SPGR series", choices=self._series_choices)
        self.b1 = ComboBox(label="B1 map", choices=self._map_choices)
        self.mask = ComboBox(label="mask", choices=self._mask_choices)
        self.flip_angles = LineEdit(label="flip angles (deg)", value=FROM_SIDECAR)
        self.flip_angles.tooltip = "one per volume, e.g. '3 10 20'; empty: from the sidecar (FlipAngle)"
        self.tr = LineEdit(label="TR (s)", value=FROM_SIDECAR)
        self.tr.tooltip = "repetition time in seconds; empty: from the sidecar (RepetitionTime)"
        self.method = ComboBox(label="myelin model", choices=["two-pool", "r1-pd"], value="two-pool")
        self.free_water = CheckBox(text="free-water pool from PD", value=True)
        self.fit_button = PushButton(text="Fit T1 / PD / myelin")
        self.fit_button.changed.connect(self.run)
        self.form = Container(widgets=[self.spgr, self.b1, self.mask, self.flip_angles, self.tr, self.method,
                                       self.free_water, self.fit_button])
        # calibration panel
        self.cal_mwf = ComboBox(label="MWF map", choices=self._map_choices_required)
        self.cal_qpm = ComboBox(label="QPM myelin", choices=self._map_choices_required)
        self.cal_mask = ComboBox(label="WM mask", choices=self._wm_choices)
        self.cal_labels = ComboBox(label="tract labels", choices=self._label_choices)
        self.cal_button = PushButton(text="Fit calibration")
        self.cal_button.changed.connect(self.calibrate)
        self.cal_file = FileEdit(label="calibration JSON", mode="w", filter="*.json")
        self.save_button = PushButton(text="Save calibration")
        self.save_button.changed.connect(self.save_calibration)
        self.load_button = PushButton(text="Load calibration")
        self.load_button.changed.connect(self.load_calibration)
        self.cal_text = Label(value="no calibration")
        self.cal_form = Container(widgets=[self.cal_mwf, self.cal_qpm, self.cal_mask, self.cal_labels, self.cal_button,
                                           self.cal_file, self.save_button, self.load_button, self.cal_text])
        self.figure = Figure(figsize=(3.5, 2.6), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.axes = self.figure.add_subplot(111)
        self.canvas.setMinimumHeight(200)
        box = QGroupBox("MWF calibration")
        box_layout = QVBoxLayout(box)
        box_layout.addWidget(self.cal_form.native)
        box_layout.addWidget(self.canvas)
        self.roles = RoleChoices(self.viewer)
        self.roles.bind(self.spgr, "spgr")
        self.roles.bind(self.b1, "b1", optional=True)
        self.roles.bind(self.cal_mwf, "mwf")
        self.roles.bind(self.cal_qpm, "qpm_myelin")
        self._assemble(self.form, box)

    # ------------------------------------------------------------------ choices
    def _series_choices(self, _widget=None):
        return volume_layers(self.viewer, 4)

    def _map_choices_required(self, _widget=None):
        return [(CHOOSE, None)] + volume_layers(self.viewer, 3)

    def _map_choices(self, _widget=None):
        return [(NONE, None)] + volume_layers(self.viewer, 3)

    def _volumes_3d(self):
        return volume_layers(self.viewer, 3, labels=True)

    def _mask_choices(self, _widget=None):
        return [("automatic", None)] + self._volumes_3d()

    def _wm_choices(self, _widget=None):
        return [("MWF > 0", None)] + self._volumes_3d()

    def _label_choices(self, _widget=None):
        return [("voxels (no tract means)", None)] + [
            (layer.name, layer) for layer in self.viewer.layers if isinstance(layer, Labels) and layer.ndim == 3
        ]

    def _refresh(self, _event=None) -> None:
        for combo in (self.spgr, self.b1, self.mask, self.cal_mwf, self.cal_qpm, self.cal_mask, self.cal_labels):
            combo.reset_choices()

    # ------------------------------------------------------------------ fit
    def run(self, _value=None):
        """Start the fit in the background (returns the worker, or ``None`` when input is refused)."""
        layer = self.spgr.value
        try:
            if layer is None:
                raise InputError("QPM: no 4D image layer is open; open the SPGR series (one volume per flip angle) first.")
            require(layer, "spgr", "SPGR series")
            require(self.b1.value, "b1", "B1 map")
            vol = layer_volume(layer)
            tr_text = parse_floats(self.tr.value, "TR")
            fa, tr = qpm.spgr_protocol(
                vol.metadata, vol.shape[3], flip_angles_deg=parse_floats(self.flip_angles.value, "flip angles"),
                tr=None if tr_text is None else tr_text[0], source=layer.name,
            )
            b1 = None
            if self.b1.value is not None:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    b1 = b1_on_grid(layer_volume(self.b1.value), vol)
                for w in caught:
                    show_warning(str(w.message))
            mask = None
            if self.mask.value is not None:
                mask = mask_on_grid(self.mask.value, vol, "SPGR")
        except InputError as exc:
            self.runner.refuse(exc)
            return None
        self._volume = vol
        self._name = layer.name
        return self.runner.start_process(
            qpm.qpm, self._add_layers, signals=vol.data, flip_angles_deg=fa, tr=tr, b1=b1,
            method=self.method.value, mask=mask, calibration=self.calibration,
            pd_tissue=qpm.PD_TISSUE if self.free_water.value else None,
        )

    def _add_layers(self, maps):
        """Add the maps (the myelin map on top), one per event-loop turn."""
        self.maps = maps
        keys = [key for key in DISPLAY if key in maps]
        t1 = np.asarray(maps["t1"])
        layers = yield from add_maps_in_stages(
            self.viewer, self._volume, {key: maps[key] for key in keys}, primary=keys[-1], source=self._name,
            units=maps.units, mask=np.isfinite(t1) & (t1 > 0), action="QPM fit",
            metadata={"method": maps.method, "parameters": maps.parameters}, show=self.show_map)
        self._refresh()
        if layers.get("qpm_myelin") is not None:
            self.cal_qpm.value = layers["qpm_myelin"]

    # ------------------------------------------------------------------ calibration
    def calibrate(self, _value=None):
        """Fit the quadratic MWF calibration in the background (returns the worker or ``None``)."""
        try:
            if self.cal_mwf.value is None or self.cal_qpm.value is None:
                raise InputError("calibration: choose an MWF layer and a QPM myelin layer (fit QPM first).")
            require(self.cal_mwf.value, "mwf", "MWF map")
            require(self.cal_qpm.value, "qpm_myelin", "QPM myelin")
            qvol = layer_volume(self.cal_qpm.value)
            mvol = layer_volume(self.cal_mwf.value)
            mwf = mvol.data
            if mvol.shape != qvol.shape or not np.allclose(mvol.affine, qvol.affine, atol=1e-3):
                show_warning(f"{self.cal_mwf.value.name}: on another grid than the QPM map; resampled to it by world "
                             "coordinates.")
                mwf = resample_like(mvol, qvol, order=1, name=self.cal_mwf.value.name)
            mask = labels = None
            if self.cal_mask.value is not None:
                mask = resample_like(layer_volume(self.cal_mask.value), qvol, order=0, name=self.cal_mask.value.name) > 0
            if self.cal_labels.value is not None:
                labels = resample_like(layer_volume(self.cal_labels.value), qvol, order=0,
                                               name=self.cal_labels.value.name).astype(int)
        except InputError as exc:
            self.runner.refuse(exc)
            return None
        self._cal_volume = qvol
        self._cal_name = self.cal_qpm.value.name.split(" · ", 1)[-1]
        return self.runner.start_process(qpm.fit_mwf_calibration, self._on_calibration, mwf=mwf, qpm=qvol.data,
                                         mask=mask, labels=labels)

    def _on_calibration(self, result):
        self.calibration = result.calibration
        self._show_calibration(result.points)
        yield from add_maps_in_stages(
            self.viewer, self._cal_volume, {"mwf_qpm": result["mwf_qpm"]}, primary="mwf_qpm", source=self._cal_name,
            units={"mwf_qpm": "%"}, labels={"mwf_qpm": CALIBRATED}, action="QPM calibration",
            metadata={"method": result.method, "parameters": result.parameters}, show=self.show_map)

    def _show_calibration(self, points=None) -> None:
        cal = self.calibration
        c0, c1, c2 = cal.coefficients
        self.cal_text.value = (f"MWF% = {c0:.3g} + {c1:.3g} M + {c2:.3g} M²\n"
                               f"R² = {cal.r2:.3f}, residual SD = {cal.residual_sd:.2f} %, n = {cal.n} {cal.basis}")
        ax = self.axes
        ax.clear()
        if points is not None:
            x, y = points
            if x.size > 5000:  # keep the plot responsive
                pick = np.random.default_rng(0).choice(x.size, 5000, replace=False)
                x, y = x[pick], y[pick]
            ax.scatter(x, y, s=3 if cal.basis == "voxels" else 20, alpha=0.4, color="tab:blue", label=cal.basis)
            grid = np.linspace(float(np.min(points[0])), float(np.max(points[0])), 100)
        else:
            grid = np.linspace(0.0, 0.3, 100)
        ax.plot(grid, cal.apply(grid), color="tab:red", label="quadratic fit")
        ax.set_xlabel("QPM myelin (fraction)")
        ax.set_ylabel("MWF (%)")
        ax.legend(loc="upper left", fontsize=7)
        self.canvas.draw_idle()

    def save_calibration(self, _value=None) -> None:
        try:
            if self.calibration is None:
                raise InputError("calibration: nothing to save yet; fit a calibration first.")
            path = self.cal_file.value
            if path is None or str(path) in ("", "."):
                raise InputError("calibration JSON: choose a file name to save to.")
            self.calibration.save(path)
            show_info(f"calibration saved to {path}")
        except InputError as exc:
            self.runner.refuse(exc)

    def load_calibration(self, _value=None) -> None:
        try:
            path = self.cal_file.value
            if path is None or str(path) in ("", "."):
                raise InputError("calibration JSON: choose the file to load.")
            self.calibration = qpm.MwfCalibration.load(path)
        except InputError as exc:
            self.runner.refuse(exc)
            return
        self._show_calibration()
        show_info(f"calibration loaded from {path}; the next QPM fit adds the MWF (%) layer")
