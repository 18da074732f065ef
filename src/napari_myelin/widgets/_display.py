"""Maps that explain themselves: how the docks add the maps they computed.

:func:`add_maps` adds (or replaces) one layer per map with :func:`napari_myelin._styles.map_layer` (label with
units first in the name, robust contrast limits inside the mask, colormap by kind, NaN outside the mask),
shows napari's colorbar overlay of every map (public API: ``layer.colorbar.visible``), adds the auxiliary
maps hidden and the primary map last, so it is on top and selected, and turns the warnings of the whole action
(e.g. one "oblique image" per map) into one notification.
"""

from __future__ import annotations

import numpy as np
from napari.layers import Layer
from napari.utils.notifications import show_warning

from .._layers import collect_warnings, group_warnings, volume_to_layer
from .._styles import map_layer
from napari_myelin.io.volume import Volume


def _show(viewer, vol: Volume, data: np.ndarray, settings: dict):
    """Add ``data`` (stored order, grid of ``vol``) as an image layer, or replace the layer of that name."""
    name = settings["name"]
    if name in viewer.layers:
        layer = viewer.layers[name]
        d, attrs, _ = volume_to_layer(vol.with_data(data), **settings)
        layer.data = d
        layer.metadata = attrs["metadata"]
        layer.colormap = settings["colormap"]
        layer.contrast_limits = settings["contrast_limits"]
        return layer
    return viewer.add_layer(Layer.create(*volume_to_layer(vol.with_data(data), **settings)))


def add_maps(viewer, vol: Volume, maps: dict, **kwargs) -> dict:
    """Add the arrays of ``maps`` as styled layers, all at once (arguments: :func:`add_maps_in_stages`; returns its
    dict)."""
    stages = add_maps_in_stages(viewer, vol, maps, **kwargs)
    while True:
        try:
            next(stages)
        except StopIteration as end:
            return end.value


def add_maps_in_stages(viewer, vol: Volume, maps: dict, *, primary: str, source: str = "",
                       units: dict | None = None, mask=None, action: str = "", labels: dict | None = None,
                       metadata: dict | None = None, show=None):
    """A generator adding the arrays of ``maps`` (key -> stored-order array on the grid of ``vol``) as styled layers.

    Parameters
    ----------
    viewer : napari.Viewer
    vol : Volume
        Grid of the maps (affine, sidecar of the input).
    maps : dict
        Map key -> array, in the order the maps are listed; ``primary`` is added last (on top, selected,
        visible), the others hidden.
    primary : str
        Key of the primary map.
    source : str
        Name of the input layer, appended to each layer name.
    units : dict
        Map key -> units.
    mask : ndarray of bool, optional
        Voxels with values (stored order); the others become NaN, the contrast limits come from these.
    action : str
        What was done (starts the grouped notification), e.g. "MWF fit".
    labels : dict, optional
        Map key -> label replacing the default one.
    metadata : dict, optional
        Metadata shared by every map (method, parameters ...).
    show : callable, optional
        The dock's ``show_map(vol, arr, name, colormap, contrast_limits, metadata)`` (see
        :meth:`napari_myelin.widgets._base.ActionDock.show_map`); by default the layer is added here.

    Returns
    -------
    dict
        Map key -> layer (the generator's return value). The generator yields after each layer it adds: a
        dock's result handler ``yield from``\ s it, so that the layers are added one per event-loop turn
        (see :mod:`napari_myelin.widgets._stage`).
    """
    units = units or {}
    labels = labels or {}
    order = [k for k in maps if k != primary] + ([primary] if primary in maps else [])
    layers = {}
    messages: list[str] = []
    for key in order:
        # warnings are collected turn by turn (a catch_warnings held across a yield could interleave with another
        # dock's and leave the global warning state wrong)
        with collect_warnings() as caught:
            data, settings = map_layer(key, maps[key], units=units.get(key, ""), source=source, mask=mask,
                                       label=labels.get(key), metadata=metadata)
            if show is None:
                layer = _show(viewer, vol, data, settings)
            else:
                layer = show(vol, data, settings["name"], settings["colormap"], settings["contrast_limits"],
                             settings["metadata"])
            if layer is not None:  # None: added later (staged)
                layer.visible = key == primary
        messages.extend(caught)
        if layer is None:
            continue
        layers[key] = layer
        yield layer
        layer.colorbar.visible = True  # in its own turn: drawing a visible map's colorbar costs about as much
        yield layer
    if primary in layers:
        top = layers[primary]
        index = viewer.layers.index(top)
        if index != len(viewer.layers) - 1:
            viewer.layers.move(index, len(viewer.layers))
        viewer.layers.selection.active = top
    notify_warnings(action, messages)
    return layers


def notify_warnings(action: str, messages: list[str]) -> str | None:
    """Show the warnings of one action as one notification (returns its text, ``None`` when there were none)."""
    text = group_warnings(action, messages)
    if text:
        show_warning(text)
    return text
