"""Covariates of a normative model: the design matrix of the controls and of a new subject.

A normative model predicts a healthy value from covariates (age, sex, site, ...). Each covariate is
coded into columns of the design matrix :math:`X` (one row per subject):

* the intercept, a column of ones;
* a **numeric** covariate :math:`a` (e.g. age in years) is centred and scaled on the controls,
  :math:`(a - \\bar a) / s_a`, so the intercept is the prediction at the controls' mean age;
* a **categorical** covariate with levels :math:`L_0, L_1, \\dots` (e.g. sex, site) gets one
  indicator column per level after the first (treatment coding; :math:`L_0`, the alphabetically
  first level, is the reference).

A new subject is coded with the controls' centring, scaling and levels. A level the controls do not
have (a new site) cannot be predicted and is refused; a numeric value outside the controls' range is an
extrapolation and is warned about (:meth:`Design.check_subject`).

References
----------
Marquand A.F. et al., "Understanding heterogeneity in clinical cohorts using normative models: beyond
case-control studies", Biol Psychiatry 80:552-561 (2016).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from napari_myelin.utils.errors import InputError

#: Covariates used by default when ``participants.tsv`` has them (site only with two sites or more).
DEFAULT_COVARIATES = ("age", "sex", "site")


@dataclass(frozen=True)
class Covariate:
    """One covariate: ``kind`` is ``"numeric"`` (``center``, ``scale``, controls' range ``low``-``high``)
    or ``"categorical"`` (``levels``, the first one the reference)."""

    name: str
    kind: str
    center: float = 0.0
    scale: float = 1.0
    low: float = float("nan")
    high: float = float("nan")
    levels: tuple[str, ...] = ()

    @property
    def columns(self) -> list[str]:
        """Names of its design-matrix columns."""
        if self.kind == "numeric":
            return [self.name]
        return [f"{self.name}[{level}]" for level in self.levels[1:]]


@dataclass(frozen=True)
class Design:
    """The coding of the covariates (see the module docstring)."""

    covariates: tuple[Covariate, ...] = ()

    @property
    def columns(self) -> list[str]:
        """``intercept`` then each covariate's columns."""
        return ["intercept"] + [c for cov in self.covariates for c in cov.columns]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.covariates]

    def matrix(self, table: pd.DataFrame) -> np.ndarray:
        """Design matrix (subjects x columns) of the rows of ``table`` (one column per covariate).

        Raises
        ------
        InputError
            A covariate is missing or has a value the controls do not have (see :meth:`check_subject`).
        """
        cols = [np.ones(len(table))]
        for cov in self.covariates:
            values = table[cov.name] if cov.name in table.columns else pd.Series([np.nan] * len(table))
            if cov.kind == "numeric":
                cols.append((values.to_numpy(float) - cov.center) / cov.scale)
            else:
                text = values.astype(str).to_numpy()
                cols.extend((text == level).astype(float) for level in cov.levels[1:])
        return np.column_stack(cols)

    def check_subject(self, values: Mapping[str, object], who: str = "the subject") -> list[str]:
        """Check one subject's covariates; returns warnings (extrapolation), raises on what cannot be predicted.

        Raises
        ------
        InputError
            A covariate of the model is missing or not a number, or a categorical level (a site, a sex
            code) is not among the controls'.
        """
        notes = []
        for cov in self.covariates:
            value = values.get(cov.name)
            if value is None or (isinstance(value, float) and np.isnan(value)) or str(value) in ("", "n/a", "nan"):
                raise InputError(f"{who}: the normative model needs '{cov.name}'; add it to participants.tsv or "
                                 f"give --covariate {cov.name}=VALUE.")
            if cov.kind == "categorical":
                if str(value) not in cov.levels:
                    raise InputError(f"{who}: {cov.name} '{value}' is not among the controls' "
                                     f"({', '.join(cov.levels)}); the model cannot predict it.")
                continue
            try:
                x = float(value)
            except (TypeError, ValueError):
                raise InputError(f"{who}: {cov.name} '{value}' is not a number.") from None
            if not cov.low <= x <= cov.high:
                notes.append(f"{who}: {cov.name} {x:g} is outside the controls' range {cov.low:g}-{cov.high:g}; "
                             "its predictions are extrapolated.")
        return notes

    def to_dict(self) -> list[dict]:
        return [dict(asdict(c), levels=list(c.levels)) for c in self.covariates]

    @classmethod
    def from_dict(cls, items: Sequence[dict]) -> "Design":
        return cls(tuple(Covariate(**dict(item, levels=tuple(item.get("levels", ())))) for item in items))


def default_covariates(participants: pd.DataFrame) -> list[str]:
    """:data:`DEFAULT_COVARIATES` present in ``participants`` and not constant over its rows."""
    return [c for c in DEFAULT_COVARIATES
            if c in participants.columns and participants[c].dropna().astype(str).nunique() > 1]


def make_design(controls: pd.DataFrame, names: Sequence[str]) -> Design:
    """Code the covariates ``names`` of the controls (one row per control).

    Numeric columns (pandas numeric dtype) are centred on their mean and scaled by their SD; others are
    categorical with their sorted levels.

    Raises
    ------
    InputError
        A covariate absent from the table, with a missing value for some control, or constant over the
        controls (it cannot be estimated).
    """
    covariates = []
    for name in dict.fromkeys(names):
        if name not in controls.columns:
            raise InputError(f"covariate '{name}': not a column of participants.tsv "
                             f"(it has {', '.join(map(str, controls.columns[1:]))}).")
        values = controls[name]
        if values.isna().any():
            who = controls.loc[values.isna(), "subject"].iloc[0] if "subject" in controls else "a control"
            raise InputError(f"covariate '{name}': {who} has no value; fill it in or leave the covariate out.")
        if pd.api.types.is_numeric_dtype(values):
            x = values.to_numpy(float)
            sd = float(np.std(x, ddof=1)) if x.size > 1 else 0.0
            if not sd > 0:
                raise InputError(f"covariate '{name}': has the same value for every control; leave it out.")
            covariates.append(Covariate(name, "numeric", float(x.mean()), sd, float(x.min()), float(x.max())))
        else:
            levels = tuple(sorted(values.astype(str).unique()))
            if len(levels) < 2:
                raise InputError(f"covariate '{name}': every control has '{levels[0]}'; leave it out.")
            covariates.append(Covariate(name, "categorical", levels=levels))
    return Design(tuple(covariates))
