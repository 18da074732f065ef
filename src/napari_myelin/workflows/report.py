"""Reports of a pipeline result that need no display: the subject report and the tract chart.

:func:`write_report` writes the subject report of a ``napari-myelin run`` results folder as PDF and/or
HTML (matplotlib only; the same bytes for the same results folder; written atomically): a summary; per
native grid the maps, each as three orthogonal views with a colorbar in its units; the tract table (mean
and SD per tract and map, with z-scores and flags when a normative comparison was made, labelled
SYNTHETIC when the table is the shipped synthetic one); quality control (SNR and fit residuals, noise,
phase sign, registration similarity with a tract-overlay check image, the brain masks' edges); and the
provenance (software versions, inputs with SHA-256, steps). Content: :mod:`.report_data`; pages:
:mod:`.report_pages`; HTML: :mod:`.report_html`.

``tracts.png`` (:func:`tract_chart`): mean MWF per tract (bar) with the integrated myelin map (and the truth,
when given). The napari screenshot (``report.png``) is an adapter: :func:`napari_myelin._screenshot.render_report`.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from napari_myelin import __version__
from napari_myelin.io.volume import atomic_write_bytes, check_output_folder
from napari_myelin.utils.errors import InputError
from napari_myelin.workflows import report_html
from napari_myelin.workflows import report_pages as pages
from napari_myelin.workflows.report_data import ResultsContent, flagged, read_results

#: Report formats by file suffix.
FORMATS = (".pdf", ".html")


@dataclass
class Page:
    """One page of the report: its title, section, what draws it, and the maps it shows."""

    title: str
    section: str
    draw: Callable
    maps: tuple = ()


@dataclass
class ReportResult:
    """The files :func:`write_report` wrote and the titles of the PDF's pages, in order."""

    written: list[Path]
    pages: list[str]


def tract_chart(tracts_csv: str | Path, out_png: str | Path, *, truth: pd.Series | None = None,
                maps: tuple[str, ...] = ("mwf", "imwf", "mwf_qpm")) -> Path:
    """Bar chart of tract means (MWF %, integrated MWF %, calibrated QPM %) with optional truth dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = pd.read_csv(tracts_csv)
    table = table[table["map"].isin(maps) & (table["status"] == "ok")]
    wide = table.pivot_table(index="name", columns="map", values="mean").reindex(columns=list(maps)).dropna(how="all")
    order = wide.mean(axis=1).sort_values().index
    wide = wide.loc[order]
    fig, ax = plt.subplots(figsize=(8, max(4, 0.22 * len(wide))))
    height = 0.8 / max(1, wide.shape[1])
    y = np.arange(len(wide))
    for i, col in enumerate(wide.columns):
        ax.barh(y + i * height, wide[col].to_numpy(), height=height, label=col)
    if truth is not None:
        ax.plot(truth.reindex(order).to_numpy(), y + 0.4 - height / 2, "k|", markersize=10, label="truth")
    ax.set_yticks(y + 0.4 - height / 2)
    ax.set_yticklabels(order, fontsize=7)
    ax.set_xlabel("mean over tract (%)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    out = Path(out_png)
    atomic_write_bytes(out, buf.getvalue())
    return out


def report_outputs(outputs: Sequence[str | os.PathLike]) -> list[Path]:
    """The report files asked for: ``.pdf`` and/or ``.html`` paths (at most one of each).

    Raises
    ------
    InputError
        Another suffix, or two files of one format.
    """
    paths = [Path(p) for p in outputs]
    for p in paths:
        if p.suffix.lower() not in FORMATS:
            raise InputError(f"{p}: a report is written as .pdf or .html; name the file report.pdf or report.html.")
    if len({p.suffix.lower() for p in paths}) != len(paths) or not paths:
        raise InputError(f"{', '.join(map(str, paths)) or '--out'}: give one .pdf and/or one .html file.")
    return paths


def plan_pages(content: ResultsContent) -> list[Page]:
    """The report's pages in order: summary, maps (per grid, :data:`~.report_pages.MAPS_PER_PAGE` a page),
    tract tables (per grid, :data:`~.report_pages.TRACTS_PER_PAGE` tracts a page), quality control,
    brain masks, provenance."""
    sub = content.subject
    plan = _text_pages("Summary", "summary", sub, report_html.summary_lines(content))
    for grid in content.grids():
        maps = content.maps_on(grid)
        chunks = [maps[i:i + pages.MAPS_PER_PAGE] for i in range(0, len(maps), pages.MAPS_PER_PAGE)]
        for n, chunk in enumerate(chunks, start=1):
            title = f"Maps on the {grid} grid" + (f" ({n}/{len(chunks)})" if len(chunks) > 1 else "")
            plan.append(Page(title, "maps", lambda c=chunk, t=title: pages.map_page(c, sub, t), tuple(chunk)))
    note = report_html.normative_note(content)
    for title, header, rows in tract_table_pages(content):
        plan.append(Page(title, "tracts", lambda t=title, h=header, r=rows: pages.table_page(t, sub, h, r, note)))
    plan.append(Page("Quality control", "qc", lambda: _qc_page(content)))
    mask_rows = report_html.mask_rows(content)
    if mask_rows:
        plan.append(Page("Quality control: brain masks", "qc", lambda: pages.mask_page(mask_rows, sub)))
    return plan + _text_pages("Provenance", "provenance", sub, report_html.provenance_lines(content))


def _text_pages(title: str, section: str, subject: str, lines: list[str]) -> list[Page]:
    """Text pages of :data:`~.report_pages.TEXT_LINES_PER_PAGE` wrapped lines each."""
    wrapped, n = pages.wrap_lines(lines), pages.TEXT_LINES_PER_PAGE
    chunks = [wrapped[i:i + n] for i in range(0, len(wrapped), n)] or [[]]
    titles = [title + (f" ({i}/{len(chunks)})" if len(chunks) > 1 else "") for i in range(1, len(chunks) + 1)]
    return [Page(t, section, lambda t=t, c=c: pages.text_page(t, subject, c)) for t, c in zip(titles, chunks)]


def _qc_page(content: ResultsContent):
    """The quality lines with the registration check image (when the template-space reference exists)."""
    lines = report_html.qc_lines(content)
    if content.template_reference is None:
        return pages.text_page("Quality control", content.subject, lines)
    from napari_myelin.align.atlas import load_tract_atlas
    from napari_myelin.io.volume import load_volume

    reference = load_volume(content.template_reference)
    labels, _ = load_tract_atlas(2)
    return pages.overlay_page(reference, labels, content.subject, lines)


def tract_grid(source: str) -> str:
    """The grid (``space-`` entity) of the map a tracts.csv row came from ('' when unknown)."""
    name = Path(str(source)).name
    return name.split("space-", 1)[1].split("_", 1)[0] if "space-" in name else ""


def tract_table_pages(content: ResultsContent) -> list[tuple[str, list[list[str]], list[list[str]]]]:
    """(title, header rows, rows) of each tract-table page: per grid, tracts as rows and the grid's maps as
    columns (mean ± SD, in 1e-3 or 1e-6 of the units when the values are that small; then z when scored;
    ``*`` flagged map, ``†`` flagged tract); the header's second row holds the units."""
    table = content.tracts
    if table is None or table.empty:
        return []
    table = table.assign(grid=[tract_grid(s) for s in table.get("source", pd.Series([""] * len(table)))])
    scored = "z" in table.columns
    grids = [g for g in content.grids() if g in set(table["grid"])] + sorted(set(table["grid"]) - set(content.grids()))
    out = []
    for grid in grids:
        part = table[table["grid"] == grid]
        maps = {m: _display_scale(part.loc[part["map"] == m, "mean"]) for m in dict.fromkeys(part["map"])}
        header = [["tract"] + [h for m in maps for h in [m] + ["z"] * scored],
                  [""] + [h for m, e in maps.items() for h in [f"{'' if e == 0 else f'1e{e} '}{_units(part, m)}"]
                          + [""] * scored]]
        rows = [_tract_row(name, rows, maps, scored) for (label, name), rows in part.groupby(["label", "name"])]
        chunks = [rows[i:i + pages.TRACTS_PER_PAGE] for i in range(0, len(rows), pages.TRACTS_PER_PAGE)]
        for n, chunk in enumerate(chunks, start=1):
            part_of = f" ({n}/{len(chunks)})" if len(chunks) > 1 else ""
            out.append((f"Tract statistics on the {grid or 'native'} grid{part_of}", header, chunk))
    return out


def _display_scale(values: pd.Series) -> int:
    """Power of ten (0, -3, -6, ...) the tract means of a map are shown in, so that they read as 0.1-1000."""
    typical = float(np.nanmedian(np.abs(values))) if len(values) else 0.0
    if not np.isfinite(typical) or typical == 0 or typical >= 0.01:
        return 0
    return -3 * int(np.floor((1 - np.log10(typical)) / 3))


def _number(value: float, digits: int) -> str:
    """``value`` to ``digits`` significant digits, without an exponent below 1e5."""
    if abs(value) >= 1e5 or (value != 0 and abs(value) < 1e-3):
        return f"{value:.{digits - 1}e}"
    return np.format_float_positional(value, precision=digits, unique=False, fractional=False, trim="-")


def _units(part: pd.DataFrame, name: str) -> str:
    units = part.loc[part["map"] == name, "units"].dropna().astype(str)
    return units.iloc[0] if len(units) else ""


def _tract_row(name: str, rows: pd.DataFrame, maps: dict[str, int], scored: bool) -> list[str]:
    """One table row: the tract (``†`` when its multivariate distance is flagged) and per map its cells."""
    flag = scored and any(flagged(v) for v in rows.get("D_abnormal", []))
    cells = [f"{name}{' †' if flag else ''}"]
    by_map = rows.set_index("map")
    for m, exponent in maps.items():
        if m not in by_map.index:
            cells += ["", ""] if scored else [""]
            continue
        r = by_map.loc[m]
        mean, sd = r["mean"] / 10.0 ** exponent, r["sd"] / 10.0 ** exponent
        cells.append(_number(mean, 3) + ("" if pd.isna(sd) else f" ± {_number(sd, 2)}"))
        if scored:
            z = r.get("z")
            cells.append("" if z is None or pd.isna(z) else f"{z:.2f}{'*' if flagged(r.get('abnormal')) else ''}")
    return cells


def write_report(results_dir: str | os.PathLike, outputs: Sequence[str | os.PathLike]) -> ReportResult:
    """Write the subject report of a results folder as PDF and/or HTML (see the module docstring).

    Parameters
    ----------
    results_dir : path
        The ``--out`` folder of ``napari-myelin run`` (one subject) or its ``sub-XX`` folder.
    outputs : paths
        ``report.pdf`` and/or ``report.html`` (any names with these suffixes).

    Returns
    -------
    ReportResult

    Raises
    ------
    InputError
        Not a results folder (see :func:`~.report_data.subject_folder`), or bad output names.
    """
    from matplotlib.backends.backend_pdf import PdfPages

    paths = report_outputs(outputs)
    content = read_results(results_dir)
    suffixes = {p.suffix.lower() for p in paths}
    pdf_buffer, images = io.BytesIO(), []
    plan = plan_pages(content)
    metadata = {"Creator": f"napari-myelin {__version__}", "Producer": None, "CreationDate": None,
                "Title": f"napari-myelin report {content.subject}"}  # no date: the same bytes for the same results
    with PdfPages(pdf_buffer, metadata=metadata) as pdf:
        for page in plan:
            in_html = ".html" in suffixes and page.section != "tracts"  # the HTML has the table as a table
            if ".pdf" not in suffixes and not in_html:
                continue
            fig = page.draw()
            if ".pdf" in suffixes:
                pdf.savefig(fig)
            if in_html:
                png = io.BytesIO()
                fig.savefig(png, format="png", dpi=80, metadata={"Software": None})
                images.append((page, png.getvalue()))
    written = []
    for path in paths:
        check_output_folder(path.parent)
        payload = pdf_buffer.getvalue() if path.suffix.lower() == ".pdf" else \
            report_html.render_html(content, images).encode("utf-8")
        atomic_write_bytes(path, payload)
        written.append(path)
    return ReportResult(written, [p.title for p in plan])

