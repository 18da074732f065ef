"""Dock widget "NAWM abnormality": a subject's z-maps and abnormality map against a normative model.

Choose the subject's results folder (``DERIV/sub-XX`` of ``napari-myelin run``; filled in from a layer read
from such a folder), the model (a folder of ``napari-myelin normative build``), the subject's covariates
(``age=41 sex=F``) and the false-discovery rate, then *Compute*:
:func:`napari_myelin.workflows.abnormality.abnormality_map` runs in the
:class:`~napari_myelin.widgets._runner.Runner` thread worker. The z-maps are added with a diverging
colormap (-4 to 4) and a colorbar, the abnormality score likewise, the abnormal white matter as a Labels
layer; layer names start with SYNTHETIC when the model is synthetic. The table lists the tracts with
abnormal volume.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import Container, FileEdit, FloatSpinBox, LineEdit, PushButton
from napari.layers import Layer
from qtpy.QtWidgets import QTableWidget, QTableWidgetItem

from .._layers import META_KEY, collect_warnings, volume_to_layer
from napari_myelin.utils.errors import InputError
from napari_myelin.workflows.abnormality import abnormality_map
from ._base import ActionDock
from ._display import notify_warnings
from ._normative import parse_covariates  # the ModelSelector's parser, for the docks' covariates fields

#: Columns of the flagged-tract table.
TRACT_COLUMNS = ("label", "name", "abnormal_mm3", "fraction", "mean_score")
Z_LIMITS = (-4.0, 4.0)


class AbnormalityWidget(ActionDock):
    """Choose a subject results folder and a model, press Compute."""

    def __init__(self, napari_viewer) -> None:
        super().__init__(napari_viewer)
        self.results = FileEdit(label="subject results", mode="d")
        self.model = FileEdit(label="normative model", mode="d")
        self.covariates = LineEdit(label="covariates", value="")
        self.alpha = FloatSpinBox(label="FDR", value=0.05, min=0.001, max=0.5, step=0.01)
        self.compute_button = PushButton(text="Compute")
        self.compute_button.changed.connect(self.compute)
        self.form = Container(widgets=[self.results, self.model, self.covariates, self.alpha, self.compute_button])
        self.table = QTableWidget(0, len(TRACT_COLUMNS))
        self.table.setHorizontalHeaderLabels(list(TRACT_COLUMNS))
        self.table.setSortingEnabled(True)
        self.result = None
        self._assemble(self.form, self.table)

    def _refresh(self, _event=None) -> None:
        """Fill in the results folder from the first layer read from a ``sub-XX`` results folder."""
        if str(self.results.value) not in ("", "."):
            return
        for layer in self.viewer.layers:
            path = ((layer.metadata or {}).get(META_KEY) or {}).get("path")
            if path and Path(path).parent.parent.name.startswith("sub-"):
                self.results.value = Path(path).parent.parent
                return

    def compute(self, _value=None):
        """Start the computation in a thread worker (returns it, or ``None`` when input is refused)."""
        results, model = str(self.results.value), str(self.model.value)
        try:
            if results in ("", ".") or model in ("", "."):
                raise InputError("NAWM abnormality: choose the subject's results folder and a normative model.")
            covariates = parse_covariates(self.covariates.value)
        except InputError as exc:
            self.runner.refuse(exc)
            return None
        # in a worker process: the saved ANTs transforms are applied there (ANTs holds the GIL)
        return self.runner.start_process(abnormality_map, self._done, results=results, normative=model,
                                         covariates=covariates, alpha=float(self.alpha.value))

    def _add(self, result, arr, name: str, **kwargs):
        with collect_warnings() as caught:  # grouped into one notification by _done
            data, attrs, kind = volume_to_layer(result.reference.with_data(arr), name=name, **kwargs)
        self._messages.extend(caught)
        if attrs["name"] in self.viewer.layers:
            self.viewer.layers.remove(attrs["name"])
        return self.viewer.add_layer(Layer.create(data, attrs, kind))

    def _done(self, result):
        self.result = result
        self._messages: list[str] = []
        prefix = "SYNTHETIC " if result.model_label.startswith("SYNTHETIC") else ""
        if self.viewer.dims.ndim < 3:  # an empty viewer: napari's 3-D sliders in a turn of their own
            self.viewer.dims.ndim = 3
            yield
        for name, z in {**result.z, "abnormality": result.score}.items():
            layer = self._add(result, np.asarray(z, np.float32), f"{prefix}z {name}" if name != "abnormality"
                              else f"{prefix}abnormality", colormap="bwr", contrast_limits=Z_LIMITS,
                              metadata={"units": "z", "map": "z" if name != "abnormality" else "abnormality",
                                        "normative_model": result.model_label}, visible=name == "abnormality")
            yield  # one layer per event-loop turn
            layer.colorbar.visible = True  # in a turn of its own: drawing a colorbar costs about as much as a layer
            yield
        self._add(result, result.abnormal.astype(np.int32), f"{prefix}abnormal WM", layer_type="labels")
        self.viewer.layers.selection.active = layer  # the abnormality score
        notify_warnings("NAWM abnormality", self._messages)
        yield
        flagged = result.tracts[result.tracts["abnormal_voxels"] > 0].sort_values("abnormal_mm3", ascending=False)
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(flagged))
        for i, row in enumerate(flagged.itertuples(index=False)):
            for j, col in enumerate(TRACT_COLUMNS):
                value = getattr(row, col)
                self.table.setItem(i, j, QTableWidgetItem(f"{value:.3g}" if isinstance(value, float) else str(value)))
        self.table.setSortingEnabled(True)
