"""Dock widget "Myelin water (MWF)": a multi-echo spin-echo layer in; MWF (%), IEWF (%), geometric-mean T2,
refocusing angle and SNR layers out; click a voxel to see its T2 distribution and its decay.

The computation is :func:`napari_myelin.reconst.mwf.myelin_water` (DECAES T2mapSEcorr + T2partSEcorr),
run in a thread worker by :class:`~napari_myelin.widgets._runner.Runner`. The echo spacing is
prefilled from the layer's sidecar (``EchoTime``); every other setting is shown with the common
value (nT2 40, T2 10 ms-2 s, SPWin 10-40 ms, MPWin 40-200 ms, chi2 factor 1.02). Without a mask
layer an automatic median-Otsu brain mask is used.
"""

from __future__ import annotations

import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSpinBox, Label, LineEdit, PushButton, SpinBox
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from napari.layers import Image
from qtpy.QtWidgets import QGroupBox, QVBoxLayout

from .._layers import to_display
from napari_myelin.reconst import mwf
from napari_myelin.utils.errors import InputError
from ._base import ActionDock, layer_volume, mask_on_grid, volume_layers
from ._choices import RoleChoices, require
from ._display import add_maps_in_stages

#: Maps added after a fit (labels, colormaps: :data:`napari_myelin._styles.MAP_LABELS`); MWF is the primary.
DISPLAY = ("iewf", "gmt2", "alpha", "snr", "mwf")


def _pair(text: str, what: str, scale: float = 1e-3):
    """Two numbers typed in ms -> a pair in seconds."""
    try:
        vals = [float(t) for t in (text or "").replace(",", " ").split()]
    except ValueError:
        vals = []
    if len(vals) != 2:
        raise InputError(f"{what}: '{text}' is not two numbers; type e.g. '10 40' (ms).")
    return (vals[0] * scale, vals[1] * scale)


class MWFWidget(ActionDock):
    """Pick the multi-echo layer, optional mask and B1 layers, the regularisation and windows; press Fit."""

    def __init__(self, napari_viewer) -> None:
        super().__init__(napari_viewer)
        self.maps = None
        self.series = ComboBox(label="multi-echo series", choices=self._series_choices)
        self.series.changed.connect(self._prefill)
        self.mask = ComboBox(label="mask", choices=self._mask_choices)
        self.te = LineEdit(label="echo spacing (ms)", value="")
        self.te.tooltip = "TE: echoes at TE, 2 TE, ...; prefilled from the sidecar EchoTime"
        self.reg = ComboBox(label="regularisation", choices=list(mwf.REGULARIZATIONS), value="chi2")
        self.chi2 = FloatSpinBox(label="chi2 factor", value=1.02, min=1.0001, max=2.0, step=0.005)
        self.noise = FloatSpinBox(label="noise level (mdp)", value=0.0, min=0.0, max=1e9)
        self.n_t2 = SpinBox(label="T2 bins (nT2)", value=40, min=2, max=200)
        self.t2_range = LineEdit(label="T2 range (ms)", value="10 2000")
        self.sp_window = LineEdit(label="myelin window SPWin (ms)", value="10 40")
        self.mp_window = LineEdit(label="IE window MPWin (ms)", value="40 200")
        self.flip = ComboBox(label="refocusing angle", choices=self._flip_choices)
        self.fit_button = PushButton(text="Fit MWF")
        self.fit_button.changed.connect(self.run)
        self.info = Label(value="click a voxel after the fit to see its T2 distribution")
        self.form = Container(widgets=[self.series, self.mask, self.te, self.reg, self.chi2, self.noise, self.n_t2,
                                       self.t2_range, self.sp_window, self.mp_window, self.flip, self.fit_button])
        self.roles = RoleChoices(self.viewer)
        self.roles.bind(self.series, "mese")
        self.figure = Figure(figsize=(3.5, 4.0), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.ax_dist = self.figure.add_subplot(211)
        self.ax_decay = self.figure.add_subplot(212)
        self.canvas.setMinimumHeight(300)
        box = QGroupBox("voxel: T2 distribution and decay")
        box_layout = QVBoxLayout(box)
        box_layout.addWidget(self.info.native)
        box_layout.addWidget(self.canvas)
        self._assemble(self.form, box)
        self.viewer.mouse_drag_callbacks.append(self._on_click)

    # ------------------------------------------------------------------ choices
    def _series_choices(self, _widget=None):
        return volume_layers(self.viewer, 4)

    def _volumes_3d(self):
        return volume_layers(self.viewer, 3, labels=True)

    def _mask_choices(self, _widget=None):
        return [("automatic", None)] + self._volumes_3d()

    def _flip_choices(self, _widget=None):
        return [("optimised per voxel", None)] + [(f"180 x B1 from {n}", layer) for n, layer in self._volumes_3d()
                                                  if isinstance(layer, Image)]

    def _refresh(self, _event=None) -> None:
        for combo in (self.series, self.mask, self.flip):
            combo.reset_choices()
        self._prefill()

    def _prefill(self, _value=None) -> None:
        layer = self.series.value
        if layer is None or self.te.value:
            return
        te = layer_volume(layer).echo_times
        if te is not None and te.size:
            self.te.value = f"{te[0] * 1000:.6g}"

    # ------------------------------------------------------------------ fit
    def run(self, _value=None):
        """Start the fit in the background (returns the worker, or ``None`` when input is refused)."""
        layer = self.series.value
        try:
            if layer is None:
                raise InputError("MWF: no 4D image layer is open; open the multi-echo spin-echo series first.")
            require(layer, "mese", "multi-echo series")
            vol = layer_volume(layer)
            n = vol.shape[3]
            try:
                spacing = float(self.te.value) * 1e-3
            except ValueError:
                raise InputError(f"echo spacing: '{self.te.value}' is not a number; type TE in ms, e.g. 10.") from None
            te = spacing * np.arange(1, n + 1)
            sidecar_te = vol.echo_times
            if sidecar_te is not None and sidecar_te.size != n:
                raise InputError(f"{layer.name}: the sidecar lists {sidecar_te.size} echo times for {n} echoes; "
                                 "fix the EchoTime list.")
            mask = "auto"
            if self.mask.value is not None:
                mask = mask_on_grid(self.mask.value, vol, "multi-echo series")
            flip = None
            if self.flip.value is not None:
                require(self.flip.value, "b1", "refocusing angle")
                bvol = layer_volume(self.flip.value)
                if bvol.shape != vol.shape[:3]:
                    raise InputError(f"{self.flip.value.name}: its grid {bvol.shape} differs from the series "
                                     f"{vol.shape[:3]}; choose a B1 map on the same grid.")
                flip = 180.0 * np.asarray(bvol.data, dtype=float)
            kwargs = dict(
                sp_window=_pair(self.sp_window.value, "SPWin"), mp_window=_pair(self.mp_window.value, "MPWin"),
                n_t2=int(self.n_t2.value), t2_range=_pair(self.t2_range.value, "T2 range"), reg=self.reg.value,
                chi2_factor=float(self.chi2.value), noise_level=float(self.noise.value) or None,
                flip_angle=flip, mask=mask,
            )
        except InputError as exc:
            self.runner.refuse(exc)
            return None
        self._volume = vol
        self._name = layer.name
        self._layer = layer
        self._te = te
        return self.runner.start_process(mwf.myelin_water, self._add_layers, signal=vol.data, echo_times=te, **kwargs)

    def _add_layers(self, maps):
        """Add the maps one per event-loop turn (a generator, see :mod:`napari_myelin.widgets._stage`)."""
        self.maps = mwf.to_percent(maps)
        yield from add_maps_in_stages(
            self.viewer, self._volume, {key: self.maps[key] for key in DISPLAY}, primary="mwf",
            source=self._name, units=self.maps.units, mask=np.isfinite(np.asarray(self.maps["mwf"])),
            action="MWF fit", metadata={"method": self.maps.method, "parameters": self.maps.parameters},
            show=self.show_map)
        # display-order copies for the voxel plot
        affine = self._volume.affine
        self._dist_display = to_display(np.asarray(maps["distribution"]), affine)  # (nT2, z, y, x)
        self._alpha_display = to_display(np.asarray(maps["alpha"]), affine)
        p = maps.parameters
        self.info.value = (f"{p['n_fitted']} voxels fitted, {p['n_skipped']} skipped (NaN/Inf or no signal); "
                           "click a voxel")
        self._refresh()

    # ------------------------------------------------------------------ voxel plot
    def _on_click(self, viewer, event):
        if self.maps is None or getattr(self, "_layer", None) is None or self._layer not in viewer.layers:
            return
        coords = np.round(self._layer.world_to_data(event.position)).astype(int)
        self.show_voxel(tuple(coords[-3:]))

    def _world_text(self, z: int, y: int, x: int) -> str:
        """The voxel's world position as the status bar shows it: RAS mm, (x, y, z)."""
        world = np.asarray(self._layer.data_to_world((0, z, y, x)), dtype=float)[-3:]
        return "voxel at ({:.1f}, {:.1f}, {:.1f}) mm".format(*world[::-1])

    def show_voxel(self, zyx) -> bool:
        """Plot the T2 distribution and the measured vs fitted decay at display index ``(z, y, x)``."""
        if self.maps is None:
            return False
        z, y, x = (int(v) for v in zyx)
        shape = self._alpha_display.shape
        if not all(0 <= v < s for v, s in zip((z, y, x), shape)):
            return False
        dist = self._dist_display[:, z, y, x]
        measured = np.asarray(self._layer.data)[:, z, y, x]
        t2 = np.asarray(self.maps["t2_times"])
        te = self._te
        self.ax_dist.clear()
        self.ax_decay.clear()
        if not np.all(np.isfinite(dist)):
            self.ax_dist.set_title("voxel not fitted (outside mask, NaN or no signal)", fontsize=8)
            self.canvas.draw_idle()
            return False
        alpha = float(self._alpha_display[z, y, x])
        self.fitted_decay = mwf.predict_decay(dist, alpha, te, t2)
        sp = self.maps.parameters.get("sp_window", (0.01, 0.04))
        self.ax_dist.semilogx(t2 * 1000, dist, "o-", ms=3)
        self.ax_dist.axvspan(sp[0] * 1000, sp[1] * 1000, color="tab:orange", alpha=0.2, label="SPWin")
        mwf_pct = self.voxel_mwf = float(np.sum(dist[(t2 >= sp[0]) & (t2 <= sp[1])]) / np.sum(dist) * 100)
        self.ax_dist.set_title(f"{self._world_text(z, y, x)}: MWF {mwf_pct:.1f} %, alpha {alpha:.1f} deg", fontsize=8)
        self.ax_dist.set_xlabel("T2 (ms)", fontsize=8)
        self.ax_dist.set_ylabel("amplitude (a.u.)", fontsize=8)
        self.ax_decay.plot(te * 1000, measured, "k.", label="measured")
        self.ax_decay.plot(te * 1000, self.fitted_decay, "r-", label="fitted")
        self.ax_decay.set_xlabel("echo time TE (ms)", fontsize=8)
        self.ax_decay.set_ylabel("signal (a.u.)", fontsize=8)
        self.ax_decay.legend(fontsize=7)
        for ax in (self.ax_dist, self.ax_decay):
            ax.tick_params(labelsize=7)
        self.canvas.draw_idle()
        return True
