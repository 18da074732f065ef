"""Dock widget "ROI statistics": draw ROIs on NAWM or use atlas tracts, get a table per ROI and map.

Workflow
--------
1. *New ROI layer* creates a Labels layer with the chosen map's shape, scale, translate and stored
   affine, so a painted voxel is exactly a voxel of the map. Shapes (polygons, rectangles,
   ellipses drawn on a slice) can be turned into ROI labels with *Shapes -> ROI*.
2. Pick the maps (multi-select), the labels layer (drawn ROIs or atlas tracts) and optionally a WM
   probability layer, then *Compute*: :func:`napari_myelin.stats.roi.roi_statistics` runs in the
   :class:`~napari_myelin.widgets._runner.Runner` thread worker.
3. The sortable table shows one row per (label, map); the wide table (one row per label) is also
   stored in the labels layer's ``features`` (napari's own features table and the status-bar
   read-out show it). Selecting a row highlights its label. A box plot or histogram per ROI of one
   map, *Copy* (tab-separated, for spreadsheets) and *Export CSV* (long or wide layout) follow.

The widget computes nothing itself: layers are turned into :class:`~napari_myelin.io.volume.Volume`
objects with :func:`~napari_myelin._layers.layer_to_volume` and the numbers come from the core.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
from magicgui.widgets import ComboBox, Container, FloatSpinBox, LineEdit, PushButton, Select
from napari.layers import Image, Labels, Shapes
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView, QApplication, QFileDialog, QHBoxLayout, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget,
)

from .._layers import META_KEY
from napari_myelin.utils.errors import InputError
from napari_myelin.stats.roi import is_water_fraction, polygons_to_labels, roi_statistics, roi_values, write_csv
from ._base import layer_volume
from ._normative import ModelSelector
from ._runner import Runner
from ._jobs import roi_statistics_scored
from .workspace import fit_columns

#: Columns shown in the table (from the long layout).
#: Mean and SD come right after the names, so that they are in view in a narrow dock (see
#: :func:`napari_myelin.widgets.workspace.fit_columns`).
TABLE_COLUMNS = ("label", "name", "map", "mean", "sd", "units", "n_voxels", "volume_mm3", "median", "iqr",
                 "min", "max", "status")
#: Columns added with a normative model (headers prefixed SYNTHETIC for a synthetic model).
SCORE_COLUMNS = ("z", "q", "abnormal")
NO_LAYER = "none"


def _layer_units(layer) -> str:
    meta = layer.metadata or {}
    if meta.get("units"):
        return str(meta["units"])
    side = (meta.get(META_KEY) or {}).get("sidecar") or {}
    return str(side.get("Units", ""))


def _layer_source(layer) -> str:
    path = ((layer.metadata or {}).get(META_KEY) or {}).get("path")
    return str(path) if path else f"napari layer '{layer.name}'"


def _layer_method(layer) -> str:
    meta = layer.metadata or {}
    side = (meta.get(META_KEY) or {}).get("sidecar") or {}
    return str(meta.get("method") or side.get("Method") or "")


def _lut_of(layer) -> pd.DataFrame | None:
    """Region table of a Labels layer: the LUT read with the file, else its features (index, name)."""
    lut = (layer.metadata or {}).get("lut")
    if lut:
        return pd.DataFrame(lut)
    feats = layer.features
    if feats is not None and {"index", "name"} <= set(feats.columns) and len(feats):
        return feats[["index", "name"]]
    return None


class RoiStatsWidget(QWidget):
    """Dock widget: ROI layer creation, ROI/tract statistics table, plots, clipboard and CSV export."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.result = None
        self._inputs: dict = {}
        # ROI creation
        self.reference = ComboBox(label="reference map", choices=self._map_choices)
        self.new_roi_button = PushButton(text="New ROI layer")
        self.new_roi_button.changed.connect(self.new_roi_layer)
        self.shapes = ComboBox(label="shapes", choices=self._shapes_choices)
        self.shapes_button = PushButton(text="Shapes -> ROI labels")
        self.shapes_button.changed.connect(self.shapes_to_roi)
        # statistics inputs
        self.maps = Select(label="maps", choices=self._map_choices)
        self.labels = ComboBox(label="labels / ROIs", choices=self._labels_choices)
        self.wm = ComboBox(label="WM probability", choices=self._wm_choices)
        self.weighting = ComboBox(label="WM use", choices=["none", "weighted", "threshold"], value="none")
        self.threshold = FloatSpinBox(label="WM threshold", value=0.5, min=0.0, max=1.0, step=0.05)
        self.subject = LineEdit(label="subject", value="")
        self.normative = ModelSelector()  # z-scores and flags only with a model chosen here
        self.scores = None
        self.compute_button = PushButton(text="Compute")
        self.compute_button.changed.connect(self.compute)
        self.form = Container(widgets=[
            self.reference, self.new_roi_button, self.shapes, self.shapes_button, self.maps, self.labels,
            self.wm, self.weighting, self.threshold, self.subject, self.normative, self.compute_button,
        ])
        self.runner = Runner()
        # results
        self.table = QTableWidget(0, len(TABLE_COLUMNS))
        self.table.setHorizontalHeaderLabels(list(TABLE_COLUMNS))
        self.table.setSortingEnabled(True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.itemSelectionChanged.connect(self._on_row_selected)
        self.plot_map = ComboBox(label="plot map", choices=[])
        self.plot_kind = ComboBox(label="plot", choices=["box plot", "histogram"], value="box plot")
        self.plot_map.changed.connect(self.update_plot)
        self.plot_kind.changed.connect(self.update_plot)
        self.layout_choice = ComboBox(label="CSV layout", choices=["long", "wide"], value="long")
        self.copy_button = PushButton(text="Copy")
        self.copy_button.changed.connect(self.copy_to_clipboard)
        self.export_button = PushButton(text="Export CSV ...")
        self.export_button.changed.connect(lambda _=None: self.export_csv())
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(4, 2.6), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(180)
        layout = QVBoxLayout(self)
        layout.addWidget(self.form.native)
        layout.addWidget(self.runner)
        layout.addWidget(self.table, stretch=2)
        plot_row = Container(widgets=[self.plot_map, self.plot_kind], layout="horizontal", labels=True)
        layout.addWidget(plot_row.native)
        layout.addWidget(self.canvas, stretch=1)
        buttons = QHBoxLayout()
        buttons.addWidget(self.layout_choice.native)
        buttons.addWidget(self.copy_button.native)
        buttons.addWidget(self.export_button.native)
        layout.addLayout(buttons)
        self.viewer.layers.events.inserted.connect(self._refresh)
        self.viewer.layers.events.removed.connect(self._refresh)
        self._refresh()

    # ------------------------------------------------------------------ choices
    def _map_choices(self, _widget=None):
        return [(layer.name, layer) for layer in self.viewer.layers
                if isinstance(layer, Image) and layer.ndim == 3 and not layer.rgb]

    def _labels_choices(self, _widget=None):
        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, Labels) and layer.ndim == 3]

    def _wm_choices(self, _widget=None):
        return [(NO_LAYER, None)] + self._map_choices()

    def _shapes_choices(self, _widget=None):
        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, Shapes)]

    def _refresh(self, _event=None) -> None:
        for w in (self.reference, self.maps, self.labels, self.wm, self.shapes):
            w.reset_choices()

    # ------------------------------------------------------------------ ROI layers
    def new_roi_layer(self, _value=None) -> Labels | None:
        """Add an empty Labels layer on the grid of the reference map (shape, scale, translate, affine)."""
        ref = self.reference.value
        if ref is None:
            show_error("ROI statistics: open a map first; the new ROI layer takes its grid.")
            return None
        meta = {}
        info = (ref.metadata or {}).get(META_KEY)
        if info is not None:
            meta[META_KEY] = {**copy.deepcopy(info), "sidecar": {}, "path": None, "bvals": None, "bvecs": None}
        layer = Labels(
            np.zeros(ref.data.shape, dtype=np.int32), name=f"ROI on {ref.name}", scale=ref.scale,
            translate=ref.translate, metadata=meta,
        )
        self.viewer.add_layer(layer)
        layer.selected_label = 1
        layer.brush_size = 3
        layer.mode = "paint"
        self.labels.value = layer
        return layer

    def shapes_to_roi(self, _value=None) -> list[int] | None:
        """Paint every shape of the chosen Shapes layer into the labels layer, one new label per shape."""
        shapes, target = self.shapes.value, self.labels.value
        try:
            if shapes is None or len(shapes.data) == 0:
                raise InputError("Shapes -> ROI: choose a Shapes layer with at least one polygon drawn on a slice.")
            if target is None:
                raise InputError(
                    "Shapes -> ROI: choose (or create with 'New ROI layer') the labels layer to paint into."
                )
            point = np.asarray(self.viewer.dims.point, dtype=float)
            polygons = []
            for verts in shapes.data:
                verts = np.asarray(verts, dtype=float)
                if verts.shape[1] == 2:  # a 2D shapes layer: drawn on the slice shown now
                    world = [np.r_[point[-3], shapes.data_to_world(v)] for v in verts]
                else:
                    world = [shapes.data_to_world(v) for v in verts]
                polygons.append(np.array([target.world_to_data(w) for w in world]))
            start = int(np.max(target.data)) + 1
            values = list(range(start, start + len(polygons)))
            new = polygons_to_labels(polygons, target.data.shape, values, kinds=list(shapes.shape_type),
                                     out=np.array(target.data))
        except InputError as exc:
            show_error(str(exc))
            return None
        target.data = new
        show_info(f"Shapes -> ROI: labels {values[0]}..{values[-1]} painted into '{target.name}'.")
        return values

    # ------------------------------------------------------------------ compute
    def compute(self, _value=None):
        """Start the statistics in the background (returns the worker, or ``None`` when input is refused)."""
        try:
            layers = list(self.maps.value or [])
            lab_layer = self.labels.value
            if not layers:
                raise InputError("ROI statistics: select at least one map in the list.")
            if lab_layer is None:
                raise InputError("ROI statistics: choose a labels layer (press 'New ROI layer' and draw a ROI).")
            if not np.any(np.asarray(lab_layer.data)):
                raise InputError(f"{lab_layer.name}: no voxel is labelled yet; paint a ROI (or convert shapes) first.")
            names = {}
            for layer in layers:
                key = layer.name.strip().lower()
                if key in names:
                    raise InputError(f"ROI statistics: two maps are named '{layer.name}'; rename one layer.")
                names[key] = layer
            maps = {k: layer_volume(layer) for k, layer in names.items()}
            labels_vol = layer_volume(lab_layer)
            wm_layer = self.wm.value
            weighting = self.weighting.value if wm_layer is not None else "none"
            if self.weighting.value != "none" and wm_layer is None:
                raise InputError("ROI statistics: choose a WM probability layer, or set 'WM use' to none.")
            scoring = {"normative": self.normative.model, "covariates": self.normative.covariate_values()}
        except InputError as exc:
            self.runner.refuse(exc)
            return None
        units = {k: _layer_units(v) for k, v in names.items()}
        self._inputs = {"labels": labels_vol, "maps": maps, "labels_layer": lab_layer, "units": units}
        self._inputs["prefix"] = self.normative.prefix()
        # in a worker process: per-label statistics are Python code that holds the GIL (the window froze)
        return self.runner.start_process(
            roi_statistics_scored, self._show, **scoring,
            labels=labels_vol, maps=maps, lut=_lut_of(lab_layer),
            weights=layer_volume(wm_layer) if wm_layer is not None else None, weighting=weighting,
            threshold=float(self.threshold.value), subject=self.subject.value,
            units=units,
            sources={k: _layer_source(v) for k, v in names.items()},
            methods={k: _layer_method(v) for k, v in names.items()},
        )

    def _scored_table(self, table: pd.DataFrame) -> tuple[pd.DataFrame, list[str], list[str]]:
        """The table with the scores' columns when a model scored it, its columns and their headers
        (``SYNTHETIC z`` ... for a synthetic model)."""
        columns = list(TABLE_COLUMNS)
        if self.scores is None:
            return table, columns, columns
        scores = self.scores.rows[["label", "map", *SCORE_COLUMNS]]
        table = table.merge(scores, on=["label", "map"], how="left")
        prefix = self._inputs.get("prefix", "")
        return table, columns + list(SCORE_COLUMNS), columns + [f"{prefix}{c}" for c in SCORE_COLUMNS]

    def _show(self, outcome):
        """Fill the table, the labels layer's features and the plot, one per event-loop turn (a generator)."""
        result, self.scores = outcome
        self.result = result
        table, columns, headers = self._scored_table(result.table)
        self.table.setSortingEnabled(False)
        self.table.clearContents()
        self.table.setColumnCount(len(columns))
        self.table.setHorizontalHeaderLabels(headers)
        self.table.setRowCount(len(table))
        for r, row in enumerate(table[columns].itertuples(index=False)):
            for c, value in enumerate(row):
                item = QTableWidgetItem()
                if isinstance(value, (int, np.integer)):
                    item.setData(Qt.ItemDataRole.DisplayRole, int(value))
                elif isinstance(value, (float, np.floating)):
                    shown = float(f"{value:.6g}") if np.isfinite(value) else float("nan")  # full precision in CSV
                    item.setData(Qt.ItemDataRole.DisplayRole, shown)
                else:
                    item.setData(Qt.ItemDataRole.DisplayRole, str(value))
                item.setData(Qt.ItemDataRole.UserRole, int(row[0]))
                self.table.setItem(r, c, item)
        self.table.setSortingEnabled(True)
        fit_columns(self.table)  # long names elided (tooltip), mean and SD in view without scrolling
        yield
        layer = self._inputs.get("labels_layer")
        if layer is not None:  # napari's features table: the LUT's columns (if any) + statistics
            wide = result.wide()
            wide.insert(0, "index", wide["label"].astype(int))
            lut = _lut_of(layer) if (layer.metadata or {}).get("lut") else None
            if lut is not None:
                wide = lut.merge(wide.drop(columns=["name"]), on="index", how="left")
            layer.features = wide
            yield
        with self.plot_map.changed.blocked():  # plotted once, below, in a turn of its own
            self.plot_map.choices = list(dict.fromkeys(table["map"]))
        yield
        for message in result.messages:
            show_info(f"ROI statistics: {message}")
        yield
        self.update_plot()

    # ------------------------------------------------------------------ interaction
    def _on_row_selected(self) -> None:
        layer = self._inputs.get("labels_layer")
        rows = self.table.selectionModel().selectedRows()
        if layer is None or not rows:
            return
        label = self.table.item(rows[0].row(), 0).data(Qt.ItemDataRole.UserRole)
        layer.selected_label = int(label)
        layer.show_selected_label = True

    def update_plot(self, _value=None) -> None:
        """Box plot (or histograms) of the chosen map's voxel values per ROI."""
        self.figure.clear()
        if self.result is None or not self.plot_map.value:
            self.canvas.draw_idle()
            return
        key = self.plot_map.value
        vol = self._inputs["maps"].get(key)
        if vol is None:
            return
        values = roi_values(self._inputs["labels"], vol)
        rows = self.result.table[self.result.table["map"] == key]
        given = self._inputs.get("units", {}).get(key, "")
        scale = 100.0 if given == "fraction" and is_water_fraction(key) else 1.0  # as in the table
        names = dict(zip(rows["label"], rows["name"]))
        ax = self.figure.add_subplot(111)
        labels = [k for k in values if k in names]
        data = [values[k] * scale for k in labels]
        if data:
            if self.plot_kind.value == "box plot":
                ax.boxplot(data, showfliers=False)
                ax.set_xticks(range(1, len(labels) + 1), [str(names[k]) for k in labels], rotation=45,
                              ha="right", fontsize=7)
            else:
                for k, d in zip(labels, data):
                    ax.hist(d, bins=30, histtype="step", label=str(names[k]))
                ax.legend(fontsize=6)
        units = rows["units"].iloc[0] if len(rows) else ""
        ax.set_ylabel(f"{key} ({units})" if self.plot_kind.value == "box plot" else "voxels")
        if self.plot_kind.value != "box plot":
            ax.set_xlabel(f"{key} ({units})")
        self.canvas.draw_idle()

    def table_text(self, layout: str | None = None) -> str:
        """The current results as tab-separated text (long or wide layout)."""
        if self.result is None:
            return ""
        layout = layout or self.layout_choice.value
        frame = self.result.wide() if layout == "wide" else self._export_table()
        return frame.to_csv(sep="\t", index=False, lineterminator="\n")

    def _export_table(self) -> pd.DataFrame:
        """The long table, with the scores (and the ``normative_model`` column, SYNTHETIC when it is) when scored."""
        return self.scores.rows if self.scores is not None else self.result.table

    def copy_to_clipboard(self, _value=None) -> str:
        text = self.table_text()
        if not text:
            show_info("ROI statistics: compute the statistics first.")
            return ""
        QApplication.clipboard().setText(text)
        show_info("ROI statistics: table copied (tab-separated).")
        return text

    def export_csv(self, path: str | Path | None = None) -> Path | None:
        """Write the table to ``path`` (asks with a file dialog when ``None``); returns the path written."""
        if self.result is None:
            show_info("ROI statistics: compute the statistics first.")
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export ROI statistics", "roi_statistics.csv", "CSV (*.csv)")
            if not path:
                return None
        try:
            written = write_csv(self._export_table(), path, layout=self.layout_choice.value)
        except InputError as exc:
            show_error(str(exc))
            return None
        show_info(f"ROI statistics written to {written}.")
        return written
