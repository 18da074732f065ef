"""Dock widget "Susceptibility (QSM)": multi-echo GRE magnitude + phase layers -> field, local field, chi, R2*.

The magnitude and phase are preselected by meaning (:mod:`napari_myelin.widgets._choices`: the GRE magnitude,
never the MESE series). "Phase sign" is the ``--phase-sign`` of ``napari-myelin qsm`` (``phase_sign`` of
:func:`~napari_myelin.reconst.qsm.fit_qsm`): -1 for scanners whose phase decreases with a positive field. When
the result's high-R2* voxels (veins, iron) come out diamagnetic a notification names the option.
"""

from __future__ import annotations

import warnings

import numpy as np
from napari.layers import Image, Labels
from napari.utils.notifications import show_warning
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_myelin.utils.errors import InputError
from napari_myelin.reconst.qsm import (
    BFR_METHODS,
    INVERSION_METHODS,
    UNWRAP_METHODS,
    PhaseSignWarning,
    check_inputs,
    fit_qsm,
    phase_sign_result,
    phase_to_radians,
)
from ._base import layer_volume
from ._choices import RoleChoices, require
from ._display import add_maps_in_stages
from ._runner import Runner

_NONE = "(compute from magnitude)"
#: "Phase sign" entries -> ``phase_sign`` of :func:`fit_qsm`.
PHASE_SIGNS = {"+1": 1, "-1": -1}


def fit_qsm_quietly(**kwargs):
    """:func:`fit_qsm` without its :class:`PhaseSignWarning` (the dock names its own option instead)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PhaseSignWarning)
        return fit_qsm(**kwargs)


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
        self.colormap.addItems(["coolwarm", "gray"])
        self.phase_sign = QComboBox()
        self.phase_sign.addItems(list(PHASE_SIGNS))
        self.phase_sign.setToolTip("-1 when the scanner's phase decreases with a positive field (the --phase-sign "
                                   "of napari-myelin qsm); veins must come out paramagnetic (bright in chi)")
        self.run_button = QPushButton("Compute susceptibility")
        self.run_button.clicked.connect(self.run)
        self.runner = Runner(self)
        form = QFormLayout()
        form.addRow("Magnitude", self.magnitude)
        form.addRow("Phase", self.phase)
        form.addRow("Brain mask", self.mask)
        form.addRow("Phase sign", self.phase_sign)
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
        self.roles = RoleChoices(self.viewer)
        self.roles.bind_names(self.magnitude, "gre_magnitude", self._image_names)
        self.roles.bind_names(self.phase, "gre_phase", self._image_names)
        self.refresh()

    # -------------------------------------------------------------- layer choices
    def _image_names(self) -> list[str]:
        return [ly.name for ly in self.viewer.layers if isinstance(ly, Image) and not ly.rgb]

    def refresh(self, *_):
        """Re-read the layer lists: magnitude and phase by meaning, keeping the user's choices."""
        self.roles.refresh_names()
        masks = [ly.name for ly in self.viewer.layers if isinstance(ly, (Image, Labels))]
        current = self.mask.currentText()
        self.mask.blockSignals(True)
        self.mask.clear()
        self.mask.addItems([_NONE] + masks)
        if current in masks:
            self.mask.setCurrentText(current)
        self.mask.blockSignals(False)
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
        self._source = self.phase.currentText()
        self.runner.start(fit_qsm_quietly, self._add_layers, **kwargs)

    def _inputs(self) -> dict:
        if not self.magnitude.currentText() or not self.phase.currentText():
            raise InputError("Magnitude/Phase: choose the two layers of the multi-echo GRE series.")
        require(self.viewer.layers[self.magnitude.currentText()], "gre_magnitude", "Magnitude")
        require(self.viewer.layers[self.phase.currentText()], "gre_phase", "Phase")
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
            phase_sign=PHASE_SIGNS[self.phase_sign.currentText()], _reference=ph,
        )

    def _add_layers(self, maps):
        mask = np.asarray(maps["mask"]) > 0
        keys = [k for k in ("field", "local_field", "r2star", "chi") if k in maps]
        # one layer per event-loop turn (see napari_myelin.widgets._stage)
        layers = yield from add_maps_in_stages(self.viewer, self._reference, {k: maps[k] for k in keys},
                                               primary="chi", source=self._source, units=maps.units, mask=mask,
                                               action="QSM", metadata={"parameters": maps.parameters})
        for key, layer in layers.items():
            layer.metadata["description"] = maps.descriptions[key]
        if "chi" in layers:
            layers["chi"].colormap = self.colormap.currentText()
        self.layers = list(layers.values())
        self.phase_sign_warning = self._check_sign(maps.parameters)

    def _check_sign(self, parameters: dict) -> str | None:
        """Notify (and return the sentence) when the phase sign looks inverted, naming the "Phase sign" option."""
        check = parameters.get("PhaseSignCheck") or {}
        if phase_sign_result(check) != "inverted":
            return None
        flip = "-1" if self.phase_sign.currentText() == "+1" else "+1"
        text = (f"QSM: {check['Voxels'] - check['ParamagneticVoxels']} of the {check['Voxels']} high-R2* voxels "
                f"(veins, iron-rich nuclei) came out diamagnetic, so the phase sign is probably inverted; set "
                f"'Phase sign' to {flip} (--phase-sign {flip} on the command line) and compute again.")
        show_warning(text)
        return text
