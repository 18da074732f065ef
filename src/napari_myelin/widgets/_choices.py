"""Defaults by meaning: which open layer fits which input of a dock, read from the layers' metadata.

A layer's *kind* (:func:`layer_kind`) comes from what it carries, not from its position in the layer list:
the BIDS-like sidecar stored by the reader and the sample data (``metadata["napari_myelin"]["sidecar"]``:
``Units``, ``Description``, ``EchoTime``, ``FlipAngle``, ``RefocusingFlipAngle``, ``MTState`` ...), the
b-values, the number of volumes, the ``map`` key the docks and the results reader store with every map,
and, for layers made elsewhere, the BIDS suffix or the words of the layer's name. The phantom's truth
layers carry ``metadata["truth"]`` (and are named ``truth ...``): they are listed but never chosen by
default.

:class:`RoleChoices` binds a dock's combo boxes to *roles* (``"mese"``, ``"gre_magnitude"``, ``"b1"``,
``"mwf"`` ...): when layers are added or removed it keeps the user's choice while that layer is open and
otherwise picks the best layer by meaning. :func:`require` refuses, when Compute is pressed, a layer whose
metadata says it is another kind, with one sentence naming the layer and what the input expects.
"""

from __future__ import annotations

import re
from pathlib import Path

from napari.layers import Labels

from .._layers import META_KEY
from napari_myelin.utils.errors import InputError

#: What each kind is, in a sentence ("its metadata says it is ...").
KIND_TEXT = {
    "mese": "a multi-echo spin-echo series", "gre_magnitude": "a multi-echo GRE magnitude",
    "gre_phase": "a GRE phase", "dwi": "a diffusion-weighted series", "spgr": "a variable-flip-angle SPGR series",
    "mts": "an MT-weighted (MTS) volume", "b1": "a B1 map (ratio)", "mwf": "an MWF map (%)",
    "imwf": "an integrated MWF map (%)", "mwf_qpm": "an MWF map from QPM (%)", "iewf": "an IEWF map (%)",
    "qpm_myelin": "a QPM myelin map", "fa": "an FA map", "md": "an MD map", "mk": "an MK map",
    "ak": "an AK map", "rk": "an RK map", "chi": "a susceptibility map (ppm)", "t1": "a T1 map",
    "t2": "a T2 map", "r2": "an R2 map", "r2star": "an R2* map", "snr": "an SNR map",
    "mtsat": "an MTsat map", "mtr": "an MTR map", "chi_para": "a paramagnetic susceptibility map (chi_para)",
    "chi_dia": "a diamagnetic susceptibility map (chi_dia)", "r2prime": "an R2' map", "labels": "a labels layer",
}

#: role -> (kinds preferred as the default, other kinds accepted; a layer of any other known kind is refused)
ROLES = {
    "mese": ({"mese"}, {"series"}),
    "dwi": ({"dwi"}, {"series"}),
    "gre_magnitude": ({"gre_magnitude"}, {"series", "image", "mts"}),
    "gre_phase": ({"gre_phase"}, {"series", "image"}),
    "spgr": ({"spgr"}, {"series"}),
    "b1": ({"b1"}, {"image"}),
    "mwf": ({"mwf"}, {"imwf", "mwf_qpm", "image"}),
    "qpm_myelin": ({"qpm_myelin"}, {"image"}),
    "fa": ({"fa"}, {"image"}),
    "mk": ({"mk"}, {"image"}),
    "qsm": ({"chi"}, {"image"}),
    "mtsat": ({"mtsat"}, {"image"}),
    "mts": ({"mts"}, {"image"}),
    "chi_dia": ({"chi_dia"}, {"image"}),
    "r2": ({"r2", "t2", "mese"}, {"r2star", "image", "series"}),
}

#: What each role expects, for the refusal sentence ("choose ... for 'X'").
ROLE_TEXT = {
    "mese": "the multi-echo spin-echo series", "dwi": "a diffusion-weighted series with b-values",
    "gre_magnitude": "the multi-echo GRE magnitude", "gre_phase": "the GRE phase", "spgr": "the SPGR series",
    "b1": "a B1 map (ratio of actual to nominal flip angle)", "mwf": "an MWF map (%)",
    "qpm_myelin": "the QPM myelin map", "fa": "an FA map", "mk": "an MK map", "qsm": "a susceptibility map (ppm)",
    "r2": "an R2 or T2 map, or the multi-echo spin echo", "mtsat": "an MTsat map", "chi_dia": "a chi_dia map",
    "mts": "an MT-, PD- or T1-weighted volume",
}

#: Words of a layer's name (or file name) -> map kind, first match wins.
_NAME_MAPS = (
    ({"imwf"}, "imwf"), ({"integrated", "mwf"}, "imwf"), ({"mwf", "qpm"}, "mwf_qpm"), ({"mwf"}, "mwf"),
    ({"iewf"}, "iewf"), ({"qpm"}, "qpm_myelin"), ({"fa"}, "fa"), ({"md"}, "md"), ({"mk"}, "mk"), ({"ak"}, "ak"),
    ({"rk"}, "rk"), ({"chi", "dia"}, "chi_dia"), ({"chi", "para"}, "chi_para"), ({"chi"}, "chi"), ({"qsm"}, "chi"),
    ({"susceptibility"}, "chi"), ({"t1"}, "t1"), ({"r2star"}, "r2star"), ({"r2prime"}, "r2prime"), ({"r2"}, "r2"),
    ({"t2"}, "t2"), ({"gmt2"}, "t2"), ({"t2map"}, "t2"),
    ({"mtsat"}, "mtsat"), ({"mtr"}, "mtr"), ({"snr"}, "snr"), ({"b1"}, "b1"), ({"tb1map"}, "b1"),
)


def _words(text: str) -> set[str]:
    return set(re.split(r"[^a-z0-9*]+", text.lower().replace("r2*", "r2star"))) - {""}


def is_truth(layer) -> bool:
    """Whether ``layer`` is a ground-truth map of the phantom (never a default input)."""
    meta = layer.metadata or {}
    path = str((meta.get(META_KEY) or {}).get("path") or "")
    return bool(meta.get("truth")) or "truth" in _words(layer.name) or "/truth/" in path.replace("\\", "/")


def layer_kind(layer) -> str:
    """What ``layer`` holds, from its metadata: a key of :data:`KIND_TEXT`, or ``"series"`` (an unknown 4D
    series) or ``"image"`` (an unknown 3D image)."""
    if isinstance(layer, Labels):
        return "labels"
    meta = layer.metadata or {}
    if meta.get("map"):
        return str(meta["map"])
    info = meta.get(META_KEY) or {}
    side = info.get("sidecar") or {}
    text = " ".join([layer.name, Path(str(info.get("path") or "")).name, str(side.get("Description", "")),
                     str(side.get("PulseSequenceType", ""))])
    words = _words(text)
    units = str(side.get("Units") or meta.get("units") or "")
    if info.get("bvals") is not None or "dwi" in words or "diffusion" in words:
        return "dwi"
    if "MTState" in side or "mts" in words:
        return "mts"
    if units == "ratio" or "b1" in words or "tb1map" in words:
        return "b1"
    if layer.ndim == 4:
        return _series_kind(side, words, units, layer.data.shape[0])
    if units == "rad" or "phase" in words:
        return "gre_phase"
    return next((kind for need, kind in _NAME_MAPS if need <= words), "image")


def _series_kind(side: dict, words: set, units: str, volumes: int) -> str:
    """Kind of a 4D layer from its sidecar (echo and flip-angle lists) and the words of its names."""
    if units == "rad" or "phase" in words:
        return "gre_phase"
    if "RefocusingFlipAngle" in side or "mese" in words or {"spin", "echo"} <= words:
        return "mese"
    flips = side.get("FlipAngle")
    if (isinstance(flips, list) and len(flips) == volumes and len(set(flips)) > 1) or words & {"vfa", "spgr"}:
        return "spgr"
    echoes = side.get("EchoTime")
    multi_echo = isinstance(echoes, list) and len(echoes) == volumes > 1
    if words & {"megre", "gre", "magnitude", "mag"} or (multi_echo and flips is not None):
        return "gre_magnitude"
    return "series"


def score(layer, role: str) -> int:
    """How well ``layer`` fits ``role``: 2 a layer of the preferred kind, 1 an unknown kind that is accepted,
    0 a truth layer, -1 a layer of another kind."""
    preferred, accepted = ROLES[role]
    kind = layer_kind(layer)
    if kind not in preferred and kind not in accepted:
        return -1
    if is_truth(layer):
        return 0
    return 2 if kind in preferred else 1


def best(layers, role: str, *, optional: bool = False):
    """The layer to choose by default for ``role`` (first of the best), or ``None``.

    An optional input (a B1 map ...) is filled in only with a layer of the preferred kind; a required one also
    with an unknown layer; never with a truth layer or a layer of another kind.
    """
    least = 2 if optional else 1
    ranked = [(score(layer, role), i, layer) for i, layer in enumerate(layers)]
    good = [r for r in ranked if r[0] >= least]
    return max(good, key=lambda r: (r[0], -r[1]))[2] if good else None


def require(layer, role: str, what: str) -> None:
    """Refuse ``layer`` for the input ``what`` when its metadata says it is another kind than ``role`` expects.

    Raises
    ------
    InputError
        One sentence naming the layer, what it is and what the input expects.
    """
    if layer is None or score(layer, role) >= 0:
        return
    kind = layer_kind(layer)
    raise InputError(f"{layer.name}: its metadata says it is {KIND_TEXT.get(kind, kind)}; choose {ROLE_TEXT[role]} "
                     f"for '{what}'.")


class _Binding:
    """One combo box bound to a role: the adapter to its value and choices, and the user's choice."""

    def __init__(self, role, optional, get, put, values, empty_ok):
        self.role, self.optional = role, optional
        self.get, self.put, self.values, self.empty_ok = get, put, values, empty_ok
        self.user = None  # ("layer", layer) or ("none",) once the user chose
        self.shown = ("unset",)  # what the combo showed after the last apply

    def note(self) -> None:
        """Take what the combo shows as the user's choice when it changed since the last apply."""
        if self.shown[0] == "unset":
            return
        current = self.get()
        if current is not self.shown[1]:
            self.user = ("none",) if current is None else ("layer", current)


class RoleChoices:
    """Defaults by meaning for a dock's combo boxes that keep the user's choices.

    Bind magicgui ``ComboBox`` widgets whose choices are ``(name, layer)`` pairs with :meth:`bind` (their
    ``reset_choices`` is wrapped, so every refresh, the dock's or magicgui's, goes through here), Qt
    ``QComboBox`` widgets listing layer names with :meth:`bind_names` (refilled by :meth:`refresh_names`). After
    the choices were re-read, the user's choice is put back while its layer is open, else :func:`best` is
    chosen. A choice is the user's when the combo shows another value than the one set here last (or its
    ``changed`` signal fired outside a refresh).
    """

    def __init__(self, viewer) -> None:
        self.viewer = viewer
        self._bindings: list[_Binding] = []
        self._busy = False

    def _open(self, layer) -> bool:
        return any(layer is other for other in self.viewer.layers)

    def bind(self, combo, role: str, *, optional: bool = False) -> None:
        """Bind a magicgui ``ComboBox`` to ``role``.

        ``optional``: only a layer of the preferred kind is chosen by default (else the ``None`` entry). A
        required input shows its ``None`` entry (a "choose ..." placeholder), if it has one, when no layer fits.
        """
        def values():
            return [c[1] if isinstance(c, tuple) else c for c in combo.choices]

        def put(layer):
            combo.value = layer

        binding = _Binding(role, optional, lambda: combo.value, put, values,
                           lambda: any(v is None for v in values()))
        combo.changed.connect(lambda value: self._chosen(binding, value))
        original = combo.reset_choices

        def reset_choices(*args):
            binding.note()
            self._busy = True
            try:
                original(*args)
            finally:
                self._busy = False
            self._apply(binding)

        combo.reset_choices = reset_choices
        self._bindings.append(binding)
        self._apply(binding)

    def bind_names(self, combo, role: str, names, *, optional_text: str | None = None) -> _Binding:
        """Bind a ``QComboBox`` of layer names to ``role``; ``names()`` lists the names it offers
        (``optional_text``: the entry meaning "none", listed first)."""
        def layer_of(text):
            return self.viewer.layers[text] if text and text in self.viewer.layers else None

        def put(layer):
            combo.setCurrentText(layer.name if layer is not None else (optional_text or ""))
            if layer is None and optional_text is None:
                combo.setCurrentIndex(-1)

        def values():
            return [layer_of(n) for n in names()]

        binding = _Binding(role, optional_text is not None, lambda: layer_of(combo.currentText()), put, values,
                           lambda: True)
        combo.currentTextChanged.connect(lambda text: self._chosen(binding, layer_of(text)))
        binding.refill = lambda: self._refill(combo, binding, names, optional_text)
        self._bindings.append(binding)
        return binding

    def _refill(self, combo, binding, names, optional_text) -> None:
        binding.note()
        self._busy = True
        combo.blockSignals(True)  # no "current text changed" for the intermediate states of the refill
        try:
            combo.clear()
            combo.addItems(([optional_text] if optional_text else []) + list(names()))
        finally:
            combo.blockSignals(False)
            self._busy = False
        self._apply(binding)

    def refresh_names(self) -> None:
        """Re-read the names of every bound ``QComboBox`` and choose (see :meth:`bind_names`)."""
        for binding in self._bindings:
            if hasattr(binding, "refill"):
                binding.refill()

    def _chosen(self, binding: _Binding, value) -> None:
        if self._busy:
            return
        binding.user = ("none",) if value is None else ("layer", value)

    def _apply(self, binding: _Binding) -> None:
        """Put the user's choice back (while its layer is open), else the default by meaning."""
        offered = [v for v in binding.values() if v is not None]
        target = None
        if binding.user is not None:
            if binding.user[0] == "none" and binding.optional:
                target = ("none",)
            elif binding.user[0] == "layer" and self._open(binding.user[1]) and any(binding.user[1] is v
                                                                                   for v in offered):
                target = binding.user
            else:
                binding.user = None
        if target is None:
            layer = best(offered, binding.role, optional=binding.optional)
            target = ("none",) if layer is None else ("layer", layer)
        value = None if target[0] == "none" else target[1]
        self._busy = True
        try:
            if binding.get() is not value and (value is not None or binding.empty_ok()):
                binding.put(value)  # else: no layer of a fitting kind and no empty entry; leave what is shown
        finally:
            self._busy = False
        binding.shown = ("shown", binding.get())
