"""napari adapter: a screenshot of a pipeline result (three orthogonal views).

``report.png``: the MNI ICBM152 T1 template with the subject's MWF (warped to the template) as a
colour overlay and the tract atlas as outlines, axial, coronal and sagittal views through the
centre, side by side, rendered by napari in a real window (a hidden canvas renders black), so it needs
a display; ``make demo`` runs it under ``xvfb-run``. The tract chart that goes with it is
:func:`napari_myelin.workflows.report.tract_chart` (no Qt).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_myelin._layers import volume_to_layer
from napari_myelin.align.atlas import load_template, load_tract_atlas
from napari_myelin.io.volume import atomic_write_bytes, load_volume


def _png_bytes(image: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def render_report(mwf_template: str | Path, out_png: str | Path, *, size: int = 480) -> Path:
    """Screenshot the template with the MWF overlay and tract outlines in three orthogonal views."""
    import napari

    template = load_template(2)
    labels, _ = load_tract_atlas(2)
    mwf = load_volume(mwf_template)
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)  # a hidden canvas renders black; under CI this runs in Xvfb
    try:
        qt_viewer = viewer.window._qt_viewer
        qt_viewer.dockLayerList.setVisible(False)
        qt_viewer.dockLayerControls.setVisible(False)
        viewer.window._qt_window.resize(size, size + 60)
        QApplication.processEvents()
        data, kw, _ = volume_to_layer(template, name="MNI T1", colormap="gray")
        viewer.add_image(data, **kw)
        scale = 100.0 if np.nanmax(mwf.data) <= 1.5 else 1.0
        data, kw, _ = volume_to_layer(mwf.with_data(np.where(mwf.data > 0, mwf.data * scale, np.nan)),
                                      name="MWF (%)", colormap="magma", contrast_limits=(0, 25), opacity=0.75)
        viewer.add_image(data, **kw)
        data, kw, _ = volume_to_layer(labels.with_data(labels.data.astype(np.int32)), name="tracts")
        tracts = viewer.add_labels(data, **kw)
        tracts.contour = 1
        tracts.opacity = 0.6
        shots = []
        centre = [s // 2 for s in viewer.layers[0].data.shape]
        for axis in range(3):
            order = [axis] + [a for a in range(3) if a != axis]
            viewer.dims.order = tuple(order)
            viewer.dims.set_point(axis, viewer.layers[0].data_to_world(centre)[axis])
            viewer.reset_view()
            QApplication.processEvents()
            shot = viewer.screenshot(canvas_only=True, flash=False)
            shots.append(np.flipud(shot) if axis > 0 else shot)
        height = max(s.shape[0] for s in shots)
        padded = [np.pad(s, ((0, height - s.shape[0]), (0, 0), (0, 0))) for s in shots]
        image = np.concatenate(padded, axis=1)
    finally:
        viewer.close()
    out = Path(out_png)
    atomic_write_bytes(out, _png_bytes(image[..., :3]))
    return out
