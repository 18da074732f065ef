"""The result every estimator returns: named maps with units and descriptions.

:class:`Maps` is a read-only mapping ``name -> numpy array`` (so ``result["mwf"]`` is an array),
carrying for each map its units and a one-line description, plus the method name and the
parameters used. Writers turn it into one NIfTI + JSON sidecar per map; widgets into layers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Maps(Mapping):
    """Named output maps of one estimator run.

    Parameters
    ----------
    arrays : dict of str to ndarray
        The maps, keyed by lower-case names (``"mwf"``, ``"fa"``, ``"chi"`` ...).
    units : dict of str to str
        Units of each map (``"fraction"``, ``"s"``, ``"mm^2/s"``, ``"ppm"``, ``"deg"`` ...).
    descriptions : dict of str to str
        One-line description of each map.
    method : str
        Name of the method that produced them (written in sidecars).
    parameters : dict
        Parameters used (JSON-serialisable; written in sidecars).
    """

    arrays: dict[str, np.ndarray]
    units: dict[str, str] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)
    method: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.arrays)

    def __len__(self) -> int:
        return len(self.arrays)

    @property
    def maps(self) -> dict[str, np.ndarray]:
        """The arrays themselves (``result.maps["mwf"]``)."""
        return self.arrays

    def info(self, name: str) -> dict[str, str]:
        """Units and description of one map, as written into its sidecar."""
        return {"units": self.units.get(name, ""), "description": self.descriptions.get(name, "")}
