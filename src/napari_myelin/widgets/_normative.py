"""The normative-model selector of the docks: no model (no z-score, no flag), the SYNTHETIC demo model, or a
model folder of ``napari-myelin normative build``, with the subject's covariates.

:class:`ModelSelector` is a magicgui ``Container`` the Subject pipeline and ROI statistics docks put in
their forms. ``value`` is what the core takes as ``normative=`` (``None``, ``"synthetic-demo"`` or a folder
path); :meth:`ModelSelector.prefix` is ``"SYNTHETIC "`` when the chosen model is synthetic, so that the
docks' layer names and table columns say so. :func:`flag_summary` is the Subject pipeline dock's summary row of
``tracts_z.csv``. (The ROI dock's worker is :func:`napari_myelin.widgets._jobs.roi_statistics_scored`.)
"""

from __future__ import annotations

import json
from pathlib import Path

from magicgui.widgets import ComboBox, Container, FileEdit, LineEdit

from napari_myelin.utils.errors import InputError

#: Choices of the selector (label shown -> kind).
NO_MODEL = "none (no z-scores, no flags)"
DEMO = "SYNTHETIC demo model (phantom truth, demo only)"
FOLDER = "model folder ..."
#: What the core calls the shipped demo model.
DEMO_NAME = "synthetic-demo"


def parse_covariates(text: str) -> dict:
    """``"age=41 sex=F"`` (spaces or commas between entries) as ``{"age": 41.0, "sex": "F"}``.

    Raises
    ------
    InputError
        An entry without ``=``, a name or a value.
    """
    out: dict = {}
    for item in (text or "").replace(",", " ").split():
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise InputError(f"covariates: '{item}' is not NAME=VALUE; write them like age=41 sex=F.")
        try:
            out[name] = float(value)
        except ValueError:
            out[name] = value
    return out


class ModelSelector(Container):
    """Normative model (none, SYNTHETIC demo, folder) and the subject's covariates."""

    def __init__(self) -> None:
        self.kind = ComboBox(label="normative model", choices=[NO_MODEL, DEMO, FOLDER], value=NO_MODEL)
        self.folder = FileEdit(label="model folder", mode="d", visible=False)
        self.covariates = LineEdit(label="covariates", value="", visible=False,
                                   tooltip="the subject's covariates for the model, e.g. age=41 sex=F "
                                           "(default: its row of participants.tsv)")
        super().__init__(widgets=[self.kind, self.folder, self.covariates], labels=True)
        self.kind.changed.connect(self._show_fields)

    def _show_fields(self, _value=None) -> None:
        self.folder.visible = self.kind.value == FOLDER
        self.covariates.visible = self.kind.value != NO_MODEL

    @property
    def model(self) -> str | None:
        """``None`` (no model), ``"synthetic-demo"`` or the model folder.

        Raises
        ------
        InputError
            "model folder" chosen without a folder holding ``model.json``.
        """
        if self.kind.value == NO_MODEL:
            return None
        if self.kind.value == DEMO:
            return DEMO_NAME
        folder = str(self.folder.value)
        if folder in ("", ".") or not (Path(folder) / "model.json").is_file():
            raise InputError("normative model: choose a folder written by 'napari-myelin normative build' "
                             "(it holds model.json), or choose 'none'.")
        return folder

    def covariate_values(self) -> dict | None:
        """The covariates typed in (``None`` when empty: the core reads participants.tsv)."""
        return parse_covariates(self.covariates.value) or None if self.kind.value != NO_MODEL else None

    def prefix(self) -> str:
        """``"SYNTHETIC "`` for a synthetic model (the demo, or a folder whose model.json says so), else ``""``."""
        if self.kind.value == DEMO:
            return "SYNTHETIC "
        if self.kind.value == FOLDER:
            path = Path(str(self.folder.value)) / "model.json"
            try:
                return "SYNTHETIC " if json.loads(path.read_text(encoding="utf-8")).get("Synthetic") else ""
            except (OSError, ValueError):
                return ""
        return ""


def flag_summary(scored: str | Path) -> list[dict]:
    """The Subject pipeline dock's summary row for ``tracts_z.csv``: the model (``SYNTHETIC ...`` when it is)
    and the flagged rows and tracts; an empty list when the subject was not scored (no model chosen)."""
    import pandas as pd

    path = Path(scored)
    if not path.is_file():
        return []
    rows = pd.read_csv(path)
    model = str(rows["normative_model"].dropna().iloc[0]) if rows["normative_model"].notna().any() else ""
    flagged = rows[rows["abnormal"].fillna(False).astype(bool)]
    note = (f"{model}: {len(flagged)} of {int(rows['z'].notna().sum())} rows flagged (FDR), "
            f"{flagged['label'].nunique()} tracts; {path.name}")
    return [{"step": "normative", "status": "scored", "seconds": "", "note": note}]
