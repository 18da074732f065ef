"""Dock widget "Subject pipeline": run :func:`napari_myelin.workflows.pipeline.run_subject` on a subject
folder with per-step progress and Cancel, show the summary, and open the results as layers."""

from __future__ import annotations

from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, PushButton
from qtpy.QtWidgets import QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

from napari_myelin.utils.errors import InputError
from napari_myelin.workflows.steps import summary_rows
from ._jobs import pipeline_with_layers
from ._normative import ModelSelector, flag_summary
from ._runner import Runner
from ._stage import add_layer_data


class PipelineWidget(QWidget):
    """Choose a BIDS-like subject folder and an output folder, press Run."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.subject = FileEdit(label="subject folder", mode="d")
        self.out = FileEdit(label="output folder", mode="d")
        self.preset = ComboBox(label="registration", choices=["fast", "accurate", "affine"], value="fast")
        self.force = CheckBox(text="redo finished steps", value=False)
        self.open_results = CheckBox(text="open results when done", value=True)
        self.normative = ModelSelector()  # z-scores and flags (tracts_z.csv) only with a model chosen here
        self.run_button = PushButton(text="Run")
        self.run_button.changed.connect(self.run)
        self.form = Container(widgets=[self.subject, self.out, self.preset, self.force, self.open_results,
                                       self.normative, self.run_button])
        self.runner = Runner()
        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["step", "status", "seconds", "note"])
        layout = QVBoxLayout(self)
        layout.addWidget(self.form.native)
        layout.addWidget(self.runner)
        layout.addWidget(self.table)
        self.result = None

    def run(self, _value=None):
        """Start the pipeline in a worker process (returns the job, or ``None`` when input is refused)."""
        subject, out = str(self.subject.value), str(self.out.value)
        if subject in ("", ".") or out in ("", "."):
            self.runner.refuse(InputError("Subject pipeline: choose a subject folder and an output folder."))
            return None
        try:
            scoring = {"normative": self.normative.model, "covariates": self.normative.covariate_values()}
        except InputError as exc:
            self.runner.refuse(exc)
            return None
        # in a worker process: the registration step runs ANTs, which holds the GIL for seconds
        return self.runner.start_process(pipeline_with_layers, self._done, subject_dir=subject, out_dir=out,
                                         force=self.force.value, preset=self.preset.value,
                                         open_results=self.open_results.value, **scoring)

    def _done(self, outcome):
        """Fill the summary table, then add the results read by the worker, one layer per event-loop turn."""
        self.result = result = outcome.result
        rows = summary_rows(result.steps) + flag_summary(result.out_dir / f"sub-{result.subject}" / "tracts_z.csv")
        self.table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            for j, key in enumerate(("step", "status", "seconds", "note")):
                self.table.setItem(i, j, QTableWidgetItem(str(row[key])))
        yield from add_layer_data(self.viewer, outcome.layers)
