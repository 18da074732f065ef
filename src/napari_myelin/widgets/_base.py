"""What every estimator dock shares: the viewer, a :class:`~napari_myelin.widgets._runner.Runner`,
the layout (form, progress bar and Cancel, optional panels) and choice lists that follow the layers."""

from __future__ import annotations

import numpy as np
from napari.layers import Image, Labels, Layer
from qtpy.QtWidgets import QVBoxLayout, QWidget

from .._layers import META_KEY, from_display, layer_to_volume, volume_to_layer
from napari_myelin.utils.errors import InputError
from napari_myelin.io.volume import Volume
from ._runner import Runner


def layer_volume(layer) -> Volume:
    """The stored-orientation :class:`Volume` of a layer (see :func:`napari_myelin._layers.layer_to_volume`)."""
    return layer_to_volume(layer.data, layer.metadata, scale=layer.scale, translate=layer.translate)


def mask_on_grid(layer, reference: Volume, what: str) -> np.ndarray:
    """Boolean mask (stored voxel order of ``reference``) from a mask/labels layer.

    A layer read from a file is turned back into its stored order; one drawn in napari on the
    reference's display grid has no stored affine and is reordered like the reference.

    Raises
    ------
    InputError
        The layer is not on the grid of ``reference`` (``what`` names it in the message).
    """
    if META_KEY in (layer.metadata or {}):
        mask = layer_volume(layer).data
    else:
        mask = from_display(np.asarray(layer.data), reference.affine)
    if mask.shape != reference.shape[:3]:
        raise InputError(f"{layer.name}: its grid {mask.shape} differs from the {what} {reference.shape[:3]}; "
                         f"choose a mask on the {what} grid.")
    return np.asarray(mask) > 0


def parse_floats(text: str, what: str) -> list[float] | None:
    """Numbers typed in a text field (separated by spaces or commas), or ``None`` when it is empty.

    Raises
    ------
    InputError
        The text is not a list of numbers (``what`` names the field).
    """
    text = (text or "").replace(",", " ").strip()
    if not text:
        return None
    try:
        return [float(t) for t in text.split()]
    except ValueError:
        raise InputError(f"{what}: '{text}' is not a list of numbers; type e.g. 3 10 20.") from None


def volume_layers(viewer, ndim: int = 3, *, labels: bool = False) -> list[tuple[str, object]]:
    """``(name, layer)`` choices of the viewer's non-RGB image layers of ``ndim`` dimensions
    (and Labels layers with ``labels=True``)."""
    kinds = (Image, Labels) if labels else (Image,)
    return [(layer.name, layer) for layer in viewer.layers
            if isinstance(layer, kinds) and layer.ndim == ndim and not getattr(layer, "rgb", False)]


class ActionDock(QWidget):
    """Base class of the dock widgets: ``self.viewer``, ``self.runner`` and :meth:`_assemble`."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.runner = Runner()

    def _assemble(self, form, *panels) -> QVBoxLayout:
        """Lay out ``form`` (a magicgui Container or a QWidget), the runner and ``panels``; refresh the
        choice lists now and whenever layers are added or removed."""
        layout = QVBoxLayout(self)
        for widget in (form, self.runner, *panels):
            layout.addWidget(getattr(widget, "native", widget))
        layout.addStretch(1)
        self.viewer.layers.events.inserted.connect(self._refresh)
        self.viewer.layers.events.removed.connect(self._refresh)
        self._refresh()
        return layout

    def show_map(self, vol: Volume, arr, name: str, colormap: str, contrast_limits, metadata: dict):
        """Add ``arr`` (stored order, on the grid of ``vol``) as the image layer ``name``, or replace the data of the
        layer of that name; returns the layer."""
        kwargs = {"colormap": colormap, "metadata": metadata}
        if contrast_limits is not None:
            kwargs["contrast_limits"] = contrast_limits
        data, attrs, kind = volume_to_layer(vol.with_data(np.asarray(arr, dtype=np.float32)), name=name, **kwargs)
        if attrs["name"] in self.viewer.layers:
            self.viewer.layers[attrs["name"]].data = data
            return self.viewer.layers[attrs["name"]]
        return self.viewer.add_layer(Layer.create(data, attrs, kind))

    def _refresh(self, _event=None) -> None:
        """Re-read the layer choices of every combo box in ``self.form``."""
        for widget in self.form:
            if hasattr(widget, "reset_choices"):
                widget.reset_choices()
