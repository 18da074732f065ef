"""The pages of the subject report, drawn with matplotlib (no display, no pyplot state).

Each function returns one :class:`matplotlib.figure.Figure` (A4); :mod:`napari_myelin.workflows.report`
writes it as a PDF page and, for the HTML report, as a PNG. Images are shown in the voxel axes nearest
to RAS+ (``nibabel.as_closest_canonical``), neurological convention (the subject's right on the right),
through the centre of the map's non-zero voxels; colour limits are the 1st and 99th percentiles of those
voxels (symmetric with a diverging map when they straddle 0).
"""

from __future__ import annotations

import textwrap

import numpy as np

from napari_myelin.io.volume import Volume, load_volume

A4_PORTRAIT = (8.27, 11.69)
A4_LANDSCAPE = (11.69, 8.27)
#: Maps per map page, tract rows per table page.
MAPS_PER_PAGE = 4
TRACTS_PER_PAGE = 70
#: Text lines per page (wrapped at :data:`TEXT_WIDTH` characters).
TEXT_LINES_PER_PAGE, TEXT_WIDTH = 110, 110


def new_page(title: str, subject: str, *, landscape: bool = False):
    """An empty A4 figure with the report's header line."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=A4_LANDSCAPE if landscape else A4_PORTRAIT)
    fig.text(0.04, 0.975, f"napari-myelin subject report: {subject}", fontsize=8, color="0.4", va="top")
    fig.text(0.04, 0.955, title, fontsize=13, weight="bold", va="top")
    return fig


def canonical(vol: Volume) -> tuple[np.ndarray, np.ndarray]:
    """The volume's 3D data on the voxel axes nearest to RAS+ and its voxel size (mm)."""
    import nibabel as nib

    data = np.asarray(vol.data, dtype=np.float32).reshape(vol.shape[:3])
    img = nib.as_closest_canonical(nib.Nifti1Image(data, vol.affine))
    return np.asarray(img.dataobj, dtype=np.float32), np.asarray(img.header.get_zooms()[:3], float)


def centre(data: np.ndarray) -> tuple[int, int, int]:
    """Centre of the bounding box of the finite non-zero voxels (the array centre when there is none)."""
    idx = np.argwhere(np.isfinite(data) & (data != 0))
    if not idx.size:
        return tuple(s // 2 for s in data.shape)
    return tuple(int(v) for v in (idx.min(0) + idx.max(0)) // 2)


def display_limits(data: np.ndarray) -> tuple[float, float, str]:
    """Colour limits and colormap: percentiles 1-99 of the non-zero voxels, symmetric when signed."""
    values = data[np.isfinite(data) & (data != 0)]
    if not values.size:
        return 0.0, 1.0, "magma"
    lo, hi = np.percentile(values, [1, 99])
    if lo < 0 < hi:
        v = float(max(-lo, hi))
        return -v, v, "RdBu_r"
    return float(lo), float(hi if hi > lo else lo + 1), "magma"


def _views(data: np.ndarray, zooms: np.ndarray, point) -> list[tuple[np.ndarray, float, str]]:
    """Axial, coronal and sagittal slices through ``point`` (rows = second axis, origin lower) and aspects."""
    i, j, k = point
    return [(data[:, :, k].T, zooms[1] / zooms[0], "axial"), (data[:, j, :].T, zooms[2] / zooms[0], "coronal"),
            (data[i, :, :].T, zooms[2] / zooms[1], "sagittal")]


def draw_orthogonal(fig, rect, data, zooms, *, title: str, units: str, contour=None, point=None,
                     gray: bool = False) -> None:
    """Three orthogonal views and a colorbar labelled with the units in ``rect`` (left, bottom, w, h);
    ``contour``: a 0/1 volume on the same grid outlined in cyan; ``gray``: a grey underlay."""
    left, bottom, width, height = rect
    shown = np.where(np.isfinite(data) & (data != 0), data, np.nan)
    lo, hi, cmap = display_limits(data)
    cmap = "gray" if gray else cmap
    point = centre(data) if point is None else point
    image = None
    for n, (plane, aspect, name) in enumerate(_views(shown, zooms, point)):
        ax = fig.add_axes((left + n * width * 0.3, bottom, width * 0.29, height * 0.8))
        ax.set_facecolor("black")
        image = ax.imshow(plane, origin="lower", cmap=cmap, vmin=lo, vmax=hi, aspect=aspect, interpolation="nearest")
        if contour is not None:
            ax.contour(_views(contour, zooms, point)[n][0], levels=[0.5], colors="cyan", linewidths=0.6)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(name, fontsize=7)
        if n < 2:
            ax.text(0.98, 0.02, "R", color="white", fontsize=6, transform=ax.transAxes, ha="right")
    cax = fig.add_axes((left + width * 0.91, bottom + height * 0.08, width * 0.02, height * 0.7))
    fig.colorbar(image, cax=cax).set_label(units or "value", fontsize=7)
    cax.tick_params(labelsize=6)
    fig.text(left, bottom + height * 0.97, title, fontsize=9, weight="bold")


def map_page(entries, subject: str, title: str):
    """Up to :data:`MAPS_PER_PAGE` maps of one grid, one row each: name (units), description, three views."""
    fig = new_page(title, subject)
    row = 0.9 / MAPS_PER_PAGE
    for n, m in enumerate(entries):
        data, zooms = canonical(load_volume(m.path))
        bottom = 0.92 - (n + 1) * row
        draw_orthogonal(fig, (0.05, bottom + 0.02, 0.9, row * 0.82), data, zooms, title=m.title, units=m.units)
        fig.text(0.05, bottom + 0.012, textwrap.shorten(f"{m.description}. {m.method}", 150), fontsize=6.5,
                 color="0.3")
    return fig


def wrap_lines(lines: list[str]) -> list[str]:
    """Text lines wrapped at :data:`TEXT_WIDTH` characters (continuations indented)."""
    return [w for line in lines for w in (textwrap.wrap(line, TEXT_WIDTH, subsequent_indent="    ") or [""])]


def text_page(title: str, subject: str, lines: list[str]):
    """A page of monospaced text lines (wrapped; at most :data:`TEXT_LINES_PER_PAGE` fit)."""
    fig = new_page(title, subject)
    fig.text(0.05, 0.92, "\n".join(wrap_lines(lines)), fontsize=7, family="monospace", va="top")
    return fig


def table_page(title: str, subject: str, header: list[list[str]], rows: list[list[str]], note: str):
    """A landscape page holding one table as aligned monospaced columns (first column left-aligned; the
    header may span several rows) and a note under the title."""
    fig = new_page(title, subject, landscape=True)
    fig.text(0.04, 0.915, "\n".join(textwrap.wrap(note, 190)), fontsize=7.5, va="top")
    widths = [max(len(r[c]) for r in [*header, *rows]) for c in range(len(header[0]))]
    lines = ["  ".join(cell.ljust(w) if c == 0 else cell.rjust(w) for c, (cell, w) in enumerate(zip(r, widths)))
             for r in [*header, *rows]]
    lines.insert(len(header), "-" * len(lines[0]))
    fig.text(0.04, 0.86, "\n".join(lines), fontsize=5.5, family="monospace", va="top")
    return fig


def overlay_page(reference: Volume, labels: Volume, subject: str, qc_lines: list[str]):
    """QC: the quality lines, then the subject reference warped to the template with the tract atlas
    outlines (the registration check)."""
    fig = text_page("Quality control", subject, qc_lines)
    data, zooms = canonical(reference)
    atlas, _ = canonical(labels)
    draw_orthogonal(fig, (0.05, 0.05, 0.9, 0.3), data, zooms, units="a.u.", contour=(atlas > 0).astype(float),
                    gray=True, title="registration check: the subject reference in template space with the tract "
                    "atlas outlines (cyan)")
    return fig


def mask_page(rows, subject: str):
    """Mask edges: per grid, the underlay (the raw image when it is still there, else a map of the grid)
    with the outline of the brain mask the estimator used; ``rows`` holds (grid, underlay path, its
    description, mask path)."""
    fig = new_page("Quality control: brain masks", subject)
    row = 0.9 / MAPS_PER_PAGE
    for n, (grid, underlay, what, mask) in enumerate(rows):
        vol = load_volume(underlay)
        first = vol.with_data(vol.data[..., 0] if vol.data.ndim == 4 else vol.data)
        data, zooms = canonical(first)
        outline, _ = canonical(load_volume(mask))
        draw_orthogonal(fig, (0.05, 0.92 - (n + 1) * row + 0.02, 0.9, row * 0.82), data, zooms,
                        title=f"{grid}: {what} with the edge of the brain mask (cyan)", units="a.u.",
                        contour=(outline > 0).astype(float), point=centre(outline), gray=True)
    return fig
