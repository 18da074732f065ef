"""The subject report (PDF + HTML) of a pipeline result on the small phantom: pages, maps with units,
the tract table against tracts.csv / tracts_z.csv, SYNTHETIC labelling, determinism, refusals."""

from __future__ import annotations

import json
import math
import re
import shutil
from html.parser import HTMLParser

import nibabel as nib
import pandas as pd
import pytest

from napari_myelin.cli import main
from napari_myelin.sims.phantom import write_phantom
from napari_myelin.workflows.pipeline import run_subject
from napari_myelin.workflows.report import write_report


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """The small phantom (seed 3) through the pipeline, scored against the shipped SYNTHETIC table."""
    phantom = tmp_path_factory.mktemp("phantom")
    write_phantom(phantom, seed=3, size="small", snr=200.0)
    out = tmp_path_factory.mktemp("results")
    run_subject(phantom / "sub-03", out, preset="affine", normative="synthetic-demo")
    return phantom, out


@pytest.fixture(scope="module")
def report(results, tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    result = write_report(results[1], [folder / "report.pdf", folder / "report.html"])
    return result, folder


def pdf_page_count(data: bytes) -> int:
    """Page objects of a PDF (``/Type /Page``, not ``/Pages``), read from its uncompressed object headers."""
    return len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", data))


class TractTable(HTMLParser):
    """The rows of ``<table id="tracts">``: per cell its text and its ``data-value`` (or None)."""

    def __init__(self):
        super().__init__()
        self.rows, self._in, self._cell = [], False, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and attrs.get("id") == "tracts":
            self._in = True
        elif self._in and tag == "tr":
            self.rows.append([])
        elif self._in and tag in ("td", "th"):
            self._cell = ["", attrs.get("data-value")]

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[0] += data

    def handle_endtag(self, tag):
        if tag == "table":
            self._in = False
        elif self._in and tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(tuple(self._cell))
            self._cell = None


def _native_maps(sub):
    """(grid, name, units) of every 3D native-space map file, found here independently of the report."""
    found = []
    for path in sorted(sub.glob("*/sub-03_space-*_*.nii.gz")):
        grid, name = re.match(r"sub-03_space-([^_]+)_(.+)\.nii\.gz", path.name).groups()
        shape = nib.load(str(path)).shape
        if grid.startswith("MNI") or name in ("tracts", "mask") or len(shape) != 3:
            continue
        units = json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text()).get("Units", "")
        found.append((grid, name, units))
    return found


def test_pdf_has_the_expected_pages(report, results):
    result, folder = report
    sub = results[1] / "sub-03"
    maps = _native_maps(sub)
    grids = sorted({g for g, _, _ in maps})
    tracts = pd.read_csv(sub / "tracts.csv")
    tract_grids = {re.search(r"space-([^_]+)_", s).group(1) for s in tracts["source"]}
    assert tract_grids <= set(grids) and len(tract_grids) == 5
    expected = (["Summary"]
                + [t for g in grids for t in _map_titles(g, sum(m[0] == g for m in maps))]
                + [f"Tract statistics on the {g} grid" for g in tract_grids]
                + ["Quality control", "Quality control: brain masks", "Provenance"])
    assert sorted(result.pages) == sorted(expected)
    assert result.pages[0] == "Summary" and result.pages[-1] == "Provenance"
    data = (folder / "report.pdf").read_bytes()
    assert data.startswith(b"%PDF-") and pdf_page_count(data) == len(result.pages) == len(expected)
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # no temporary file left


def _map_titles(grid, n):
    pages = math.ceil(n / 4)
    return [f"Maps on the {grid} grid" + (f" ({i}/{pages})" if pages > 1 else "") for i in range(1, pages + 1)]


def test_html_names_every_map_with_its_units(report, results):
    html = (report[1] / "report.html").read_text(encoding="utf-8")
    maps = _native_maps(results[1] / "sub-03")
    assert len(maps) >= 25
    for grid, name, units in maps:
        assert f"<b>{name} ({units})</b>" in html, (grid, name)
    assert html.count("data:image/png;base64,") == len(report[0].pages) - 5 - 2  # no images for text/table pages


def test_tract_table_is_tracts_csv_with_synthetic_z(report, results):
    sub = results[1] / "sub-03"
    parser = TractTable()
    parser.feed((report[1] / "report.html").read_text(encoding="utf-8"))
    header = [cell[0] for cell in parser.rows[0]]
    assert header == ["label", "tract", "map", "units", "voxels", "mean", "SD", "z (SYNTHETIC)", "flag", "tract flag"]
    shown = pd.DataFrame([[c[0] for c in r[:5]] + [c[1] for c in r[5:8]] + [r[8][0], r[9][0]] for r in parser.rows[1:]],
                         columns=["label", "name", "map", "units", "n_voxels", "mean", "sd", "z", "flag", "D_flag"])
    stats = pd.read_csv(sub / "tracts.csv")
    stats = stats[stats["status"] == "ok"].reset_index(drop=True)
    scored = pd.read_csv(sub / "tracts_z.csv").set_index(["label", "map"])
    assert len(shown) == len(stats) > 1000
    assert shown["label"].astype(int).tolist() == stats["label"].tolist()
    assert shown["map"].tolist() == stats["map"].tolist() and shown["name"].tolist() == stats["name"].tolist()
    for column in ("mean", "sd"):  # exact (repr round-trips); an empty cell for a missing SD (one voxel)
        pd.testing.assert_series_equal(shown[column].astype(float), stats[column], check_exact=True)
    z = scored.loc[list(zip(stats["label"], stats["map"]))].reset_index(drop=True)
    pd.testing.assert_series_equal(shown["z"].astype(float), z["z"], check_exact=True)
    assert (shown["flag"] == "*").tolist() == z["abnormal"].tolist()
    assert (shown["D_flag"] == "†").tolist() == z["D_abnormal"].tolist()
    html = (report[1] / "report.html").read_text(encoding="utf-8")
    assert '<p class="synthetic">' in html and "SYNTHETIC normative table (phantom truth maps, not human data)" in html


def test_report_is_deterministic(report, results, tmp_path):
    again = write_report(results[1] / "sub-03", [tmp_path / "r.pdf", tmp_path / "r.html"])
    assert again.pages == report[0].pages
    assert (tmp_path / "r.pdf").read_bytes() == (report[1] / "report.pdf").read_bytes()
    assert (tmp_path / "r.html").read_text() == (report[1] / "report.html").read_text()


def test_report_without_normative_comparison_has_no_z(results, tmp_path):
    sub = tmp_path / "sub-03"
    shutil.copytree(results[1] / "sub-03", sub)
    (sub / "tracts_z.csv").unlink()
    write_report(sub, [tmp_path / "report.html"])
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "SYNTHETIC" not in html and "no normative comparison was made" in html
    parser = TractTable()
    parser.feed(html)
    assert [c[0] for c in parser.rows[0]] == ["label", "tract", "map", "units", "voxels", "mean", "SD"]
    assert not (tmp_path / "report.pdf").exists()


def test_cli_run_writes_the_report_and_report_refuses_bad_folders(results, tmp_path, capsys):
    phantom, out = results
    argv = ["run", str(phantom / "sub-03"), "--out", str(out), "--preset", "affine", "--normative", "synthetic-demo"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for name in ("report.pdf", "report.html"):
        assert (out / "sub-03" / name).stat().st_size > 10_000 and str(out / "sub-03" / name) in printed
    two = tmp_path / "two"
    for s in ("sub-01", "sub-02"):
        (two / s / ".napari-myelin").mkdir(parents=True)
    cases = [
        ([str(tmp_path / "missing")], "not a folder"),
        ([str(phantom)], "holds no subject written by 'napari-myelin run'"),
        ([str(two)], "holds 2 subjects"),
    ]
    for folder, message in cases:
        assert main(["report", *folder, "--out", str(tmp_path / "r.pdf"), str(tmp_path / "r.html")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("napari-myelin report: error: ") and message in err and err.count("\n") == 1, err
    assert main(["report", str(out), "--out", str(tmp_path / "r.docx")]) == 2
    assert ".pdf or .html" in capsys.readouterr().err
    assert not (tmp_path / "r.pdf").exists() and not (tmp_path / "r.html").exists()
