"""Dock widget "Susceptibility (QSM)": multi-echo GRE magnitude + phase layers -> field, local field, chi, R2*."""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .._layers import volume_to_layer
from napari_myelin.utils.errors import InputError
from napari_myelin.reconst.qsm import BFR_METHODS, INVERSION_METHODS, UNWRAP_METHODS, check_inputs, fit_qsm, phase_to_radians
from ._base import layer_volume
from ._runner import Runner

_NONE = "(compute from magnitude)"


class QSMWidget(QWidget):
    """Choose the GRE magnitude/phase layers, TEs, B0, mask and methods; run :func:`fit_qsm`."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.magnitude = QComboBox()
        self.phase = QComboBox()
        self.mask = QComboBox()
        self.te = QLineEdit()
        self.te.setPlaceholderText("echo times in s, e.g. 0.004 0.01 0.016 (from the sidecar)")
        self.b0 = QDoubleSpinBox()
        self.b0.setRange(0.0, 20.0)
        self.b0.setDecimals(2)
        self.b0.setSuffix(" T")
        self.b0.setSpecialValueText("from sidecar")
        self.unwrap = QComboBox()
        self.unwrap.addItems(UNWRAP_METHODS)
        self.bfr = QComboBox()
        self.bfr.addItems(BFR_METHODS)
        self.inversion = QComboBox()
        self.inversion.addItems(INVERSION_METHODS)
        self.colormap = QComboBox()
        self.colormap.addItems(["gray", "coolwarm"])
        self.run_button = QPushButton("Compute susceptibility")
        self.run_button.clicked.connect(self.run)
        self.runner = Runner(self)
        form = QFormLayout()
        form.addRow("Magnitude", self.magnitude)
        form.addRow("Phase", self.phase)
        form.addRow("Brain mask", self.mask)
        form.addRow("Echo times (s)", self.te)
        form.addRow("Field strength", self.b0)
        form.addRow("Unwrapping", self.unwrap)
        form.addRow("Background removal", self.bfr)
        form.addRow("Dipole inversion", self.inversion)
        form.addRow("chi colormap", self.colormap)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.run_button)
        layout.addWidget(self.runner)
        layout.addStretch(1)
        self.viewer.layers.events.inserted.connect(self.refresh)
        self.viewer.layers.events.removed.connect(self.refresh)
        self.phase.currentTextChanged.connect(self._fill_from_sidecar)
        self.refresh()

    # -------------------------------------------------------------- layer choices
    def refresh(self, *_):
        images = [ly.name for ly in self.viewer.layers if ly._type_string == "image"]
        masks = [ly.name for ly in self.viewer.layers if ly._type_string in ("labels", "image")]
        for combo, names in ((self.magnitude, images), (self.phase, images), (self.mask, [_NONE] + masks)):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(names)
            if current in names:
                combo.setCurrentText(current)
            combo.blockSignals(False)
        if self.phase.currentText() == self.magnitude.currentText() and len(images) > 1:
            guess = [n for n in images if "phase" in n.lower()]
            self.phase.setCurrentText(guess[0] if guess else images[1])
        self._fill_from_sidecar()

    def _fill_from_sidecar(self, *_):
        name = self.phase.currentText()
        if not name or name not in self.viewer.layers:
            return
        side = (self.viewer.layers[name].metadata.get("napari_myelin") or {}).get("sidecar") or {}
        if not self.te.text() and side.get("EchoTime") is not None:
            self.te.setText(" ".join(f"{t:g}" for t in np.atleast_1d(side["EchoTime"])))
        if self.b0.value() == 0 and side.get("MagneticFieldStrength"):
            self.b0.setValue(float(side["MagneticFieldStrength"]))

    def _volume(self, name):
        layer = self.viewer.layers[name]
        return layer_volume(layer)

    # -------------------------------------------------------------- run
    def run(self):
        try:
            kwargs = self._inputs()
        except InputError as exc:
            self.runner.refuse(exc)
            self.runner.finished.emit(False)
            return
        self._reference = kwargs.pop("_reference")
        self.runner.start(fit_qsm, self._add_layers, **kwargs)

    def _inputs(self) -> dict:
        if not self.magnitude.currentText() or not self.phase.currentText():
            raise InputError("Magnitude/Phase: choose the two layers of the multi-echo GRE series.")
        mag = self._volume(self.magnitude.currentText())
        ph = self._volume(self.phase.currentText())
        try:
            te = [float(t) for t in self.te.text().replace(",", " ").split()]
        except ValueError:
            raise InputError(f"Echo times: '{self.te.text()}' is not a list of numbers; give TEs in seconds.") from None
        check_inputs(mag.data, ph.data, te or None, self.b0.value() or None)  # before the worker starts
        phase_to_radians(ph.data, name=self.phase.currentText())
        mask = None
        if self.mask.currentText() not in ("", _NONE):
            mask = self._volume(self.mask.currentText()).data
            if mask.shape != ph.shape[:3]:
                raise InputError(f"Brain mask: shape {mask.shape} differs from the phase {ph.shape[:3]}; "
                                 "choose a mask on the GRE grid.")
        return dict(
            magnitude=mag.data, phase=ph.data, echo_times=te or None,
            field_strength=self.b0.value() or None, affine=ph.affine, mask=mask,
            unwrap=self.unwrap.currentText(), bfr=self.bfr.currentText(), inversion=self.inversion.currentText(),
            _reference=ph,
        )

    def _add_layers(self, maps):
        ref = self._reference
        chi = maps["chi"]
        lim = float(np.percentile(np.abs(chi[maps["mask"] > 0]), 99)) if (maps["mask"] > 0).any() else 0.1
        lim = lim or 0.1
        specs = [
            ("field", "QSM field (Hz)", "gray", None),
            ("local_field", "QSM local field (ppm)", "gray", None),
            ("chi", "chi (ppm)", self.colormap.currentText(), (-lim, lim)),
            ("r2star", "R2* (1/s)", "magma", (0.0, 50.0)),
        ]
        self.layers = []
        for key, name, cmap, clim in (spec for spec in specs if spec[0] in maps):
            extra = {"contrast_limits": clim} if clim else {}
            data, attrs, kind = volume_to_layer(
                ref.with_data(maps[key]), name=name, colormap=cmap,
                metadata={"units": maps.units[key], "description": maps.descriptions[key],
                          "parameters": maps.parameters}, **extra)
            self.layers.append(self.viewer._add_layer_from_data(data, attrs, kind)[0])
