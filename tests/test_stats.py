"""ROI statistics, correlations, normative z-scores and CSV export against hand-computed numpy values."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import stats as sstats

from napari_myelin.cli import main
from napari_myelin.utils.errors import InputError
from napari_myelin.stats.normative import build_normative, compare_to_normative, read_normative
from napari_myelin.io.resample import resample_to_grid
from napari_myelin.stats.grouped import grouped_statistics
from napari_myelin.stats.roi import correlation_table, roi_statistics, roi_values
from napari_myelin.stats.tables import LONG_COLUMNS, read_stats_csv, wide_table, write_csv
from napari_myelin.io.volume import Volume

ZOOMS = (1.2, 0.8, 2.5)


def _affine(zooms=ZOOMS, origin=(-10.0, 5.0, 3.0)):
    aff = np.eye(4)
    aff[:3, :3] = np.diag(zooms)
    aff[:3, 3] = origin
    return aff


@pytest.fixture
def random_subject():
    rng = np.random.default_rng(42)
    shape = (17, 19, 13)
    labels = rng.integers(0, 6, shape)
    labels[labels == 4] = 0  # label 4 absent: an empty ROI when the LUT lists it
    fa = rng.random(shape)
    mwf = rng.normal(0.12, 0.03, shape)
    mwf[0, 0, :] = np.nan  # NaNs are left out
    wm = rng.random(shape)
    aff = _affine()
    return labels, fa, mwf, wm, aff


def _numpy_stats(v):
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return {"n_used": v.size, "mean": v.mean(), "sd": v.std(ddof=1), "median": med, "q1": q1, "q3": q3,
            "iqr": q3 - q1, "min": v.min(), "max": v.max()}


def test_statistics_equal_numpy_anisotropic(random_subject):
    labels, fa, mwf, _, aff = random_subject
    lut = pd.DataFrame({"index": [1, 2, 3, 4, 5], "name": ["CC", "CST L", "CST R", "absent", "SLF"]})
    res = roi_statistics(
        Volume(labels, aff), {"FA": Volume(fa, aff, metadata={"Units": "ratio", "Method": "DKI WLS"}),
                              "MWF": Volume(mwf, aff, metadata={"Units": "fraction"})},
        lut=lut, subject="sub-01",
    )
    t = res.table
    assert list(t.columns) == list(LONG_COLUMNS)
    assert len(t) == 2 * 5
    voxel_volume = np.prod(ZOOMS)
    for name, arr, scale, units in (("fa", fa, 1.0, "ratio"), ("mwf", mwf, 100.0, "%")):
        for lab in (1, 2, 3, 5):
            row = t[(t["map"] == name) & (t["label"] == lab)].iloc[0]
            sel = arr[labels == lab] * scale
            expected = _numpy_stats(sel[np.isfinite(sel)])
            for key, value in expected.items():
                assert row[key] == pytest.approx(value, rel=1e-12, abs=1e-12), (name, lab, key)
            assert row["n_voxels"] == (labels == lab).sum()
            assert row["volume_mm3"] == pytest.approx((labels == lab).sum() * voxel_volume, rel=1e-12)
            assert row["units"] == units and row["status"] == "ok" and row["subject"] == "sub-01"
    assert (t[t["map"] == "fa"]["method"] == "DKI WLS").all()
    # the empty ROI is reported, with its reason, not a silent NaN row
    empty = res.empty
    assert set(empty["label"]) == {4} and (empty["n_voxels"] == 0).all()
    assert empty["status"].str.startswith("empty").all() and np.isnan(empty["mean"]).all()
    assert any("absent" in m for m in res.messages)


def test_estimator_maps_object(random_subject):
    from napari_myelin.io.maps import Maps

    labels, _, mwf, _, _ = random_subject
    maps = Maps({"mwf": mwf, "t2_times": np.linspace(0.01, 2, 40)}, units={"mwf": "fraction"}, method="NNLS")
    t = roi_statistics(labels, maps).table
    assert set(t["map"]) == {"mwf"} and (t["units"] == "%").all() and (t["method"] == "NNLS").all()
    assert t["mean"].iloc[0] == pytest.approx(100 * np.nanmean(mwf[labels == 1]), rel=1e-12)


def test_grouped_statistics_weighted_and_percentiles():
    rng = np.random.default_rng(1)
    g = rng.integers(0, 4, 5000)
    v = rng.normal(size=5000)
    w = rng.random(5000)
    st = grouped_statistics(g, v, 5, w)
    for k in range(4):
        x, wk = v[g == k], w[g == k]
        m = np.average(x, weights=wk)
        v1, v2 = wk.sum(), (wk ** 2).sum()
        assert st["mean"][k] == pytest.approx(m, rel=1e-12)
        assert st["sd"][k] == pytest.approx(np.sqrt((wk * (x - m) ** 2).sum() / (v1 - v2 / v1)), rel=1e-12)
        assert st["weight_sum"][k] == pytest.approx(v1)
        assert st["median"][k] == pytest.approx(np.median(x), rel=1e-12)
    assert st["n"][4] == 0 and np.isnan(st["mean"][4]) and np.isnan(st["median"][4])
    one = grouped_statistics(np.array([0]), np.array([3.0]), 1)
    assert one["mean"][0] == 3.0 and np.isnan(one["sd"][0]) and one["iqr"][0] == 0.0


def test_wm_weighting_and_threshold(random_subject):
    labels, fa, _, wm, aff = random_subject
    weighted = roi_statistics(Volume(labels, aff), {"fa": Volume(fa, aff)}, weights=Volume(wm, aff),
                              weighting="weighted").table
    thr = roi_statistics(labels, {"fa": fa}, weights=wm, weighting="threshold", threshold=0.7,
                         voxel_size=ZOOMS).table
    for lab in (1, 2, 3, 5):
        sel, w = fa[labels == lab], wm[labels == lab]
        row = weighted[weighted["label"] == lab].iloc[0]
        assert row["mean"] == pytest.approx(np.average(sel, weights=w), rel=1e-12)
        assert row["weight_sum"] == pytest.approx(w.sum(), rel=1e-12)
        row = thr[thr["label"] == lab].iloc[0]
        assert row["mean"] == pytest.approx(sel[w >= 0.7].mean(), rel=1e-12)
        assert row["n_used"] == (w >= 0.7).sum() and row["n_voxels"] == sel.size
        assert row["volume_mm3"] == pytest.approx(sel.size * np.prod(ZOOMS))
    with pytest.raises(InputError, match="WM probability"):
        roi_statistics(labels, {"fa": fa}, weighting="weighted")
    with pytest.raises(InputError, match="0..1"):
        roi_statistics(labels, {"fa": fa}, weights=wm * 3, weighting="weighted")


def test_map_on_another_grid_is_resampled_linearly():
    # a map linear in world coordinates is reproduced exactly by trilinear interpolation
    lab_aff = _affine((2.0, 2.0, 3.0), (0.0, 0.0, 0.0))
    labels = np.zeros((10, 9, 8), int)
    labels[2:5, 2:6, 2:4] = 1
    labels[6:9, 3:7, 4:7] = 2
    fine_aff = _affine((0.7, 0.9, 1.1), (-1.3, -2.1, -0.4))
    ijk = np.indices((40, 30, 30)).reshape(3, -1)
    xyz = fine_aff[:3, :3] @ ijk + fine_aff[:3, 3:4]
    coef = np.array([0.5, -0.25, 0.75])
    fine = (coef @ xyz + 3.0).reshape(40, 30, 30)
    res = roi_statistics(Volume(labels, lab_aff), {"t1": Volume(fine, fine_aff, metadata={"Units": "s"})})
    lab_xyz = lab_aff[:3, :3] @ np.indices(labels.shape).reshape(3, -1) + lab_aff[:3, 3:4]
    truth = (coef @ lab_xyz + 3.0).reshape(labels.shape)
    for lab in (1, 2):
        row = res.table[res.table["label"] == lab].iloc[0]
        assert row["mean"] == pytest.approx(truth[labels == lab].mean(), rel=1e-9)
        assert row["max"] == pytest.approx(truth[labels == lab].max(), rel=1e-9)
    assert any("resampled" in m for m in res.messages)
    # labels on the map grid: nearest neighbour keeps integer labels, volumes use the map voxels
    res2 = roi_statistics(Volume(labels, lab_aff), {"t1": Volume(fine, fine_aff)}, grid="maps")
    lab_on_fine, _ = resample_to_grid(Volume(labels, lab_aff), fine_aff, fine.shape, order=0, cval=0)
    assert set(np.unique(lab_on_fine)) <= {0, 1, 2}
    row = res2.table[res2.table["label"] == 1].iloc[0]
    assert row["n_voxels"] == (lab_on_fine == 1).sum()
    assert row["mean"] == pytest.approx(fine[lab_on_fine == 1].mean(), rel=1e-12)
    assert row["volume_mm3"] == pytest.approx((lab_on_fine == 1).sum() * 0.7 * 0.9 * 1.1)


def test_grid_mismatch_and_bad_labels_refused(random_subject):
    labels, fa, _, _, aff = random_subject
    far = aff.copy()
    far[:3, 3] += 500.0
    with pytest.raises(InputError, match="does not overlap"):
        roi_statistics(Volume(labels, aff), {"fa": Volume(fa, far)})
    with pytest.raises(InputError, match="shape"):
        roi_statistics(labels, {"fa": fa[:-1]})
    with pytest.raises(InputError, match="non-integer"):
        roi_statistics(labels + 0.5, {"fa": fa})
    with pytest.raises(InputError, match="no voxel is labelled"):
        roi_statistics(np.zeros_like(labels), {"fa": fa})
    with pytest.raises(InputError, match="3D"):
        roi_statistics(labels, {"fa": np.stack([fa, fa], -1)})
    # float labels holding integers are accepted
    t = roi_statistics(labels.astype(np.float32), {"fa": fa}).table
    assert t.loc[t["label"] == 1, "mean"].iloc[0] == pytest.approx(fa[labels == 1].mean())


def test_progress_and_cancel(random_subject):
    import threading

    from napari_myelin.utils.progress import Cancelled

    labels, fa, _, _, _ = random_subject
    seen = []
    roi_statistics(labels, {"fa": fa, "md": fa}, progress=lambda f, m: seen.append(f))
    assert seen[-1] == 1.0 and seen == sorted(seen)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        roi_statistics(labels, {"fa": fa}, cancel=cancel)


def test_roi_without_finite_values_is_reported(random_subject):
    labels, fa, _, _, _ = random_subject
    fa = fa.copy()
    fa[labels == 2] = np.nan
    res = roi_statistics(labels, {"fa": fa})
    row = res.table[res.table["label"] == 2].iloc[0]
    assert row["status"] == "empty: no finite map value in the ROI" and row["n_used"] == 0
    assert row["n_voxels"] == (labels == 2).sum()
    assert any("no usable voxel" in m for m in res.messages)


def test_roi_values_and_correlation(random_subject):
    labels, fa, mwf, _, _ = random_subject
    vals = roi_values(labels, fa)
    assert sorted(vals) == [1, 2, 3, 5]
    assert np.array_equal(np.sort(vals[3]), np.sort(fa[labels == 3]))
    mk = 2 * fa + 0.1 * np.random.default_rng(3).normal(size=fa.shape)
    corr = correlation_table(labels, {"fa": fa, "mk": mk, "mwf": mwf}, across="voxels")
    assert len(corr) == 3
    row = corr[(corr["map_x"] == "fa") & (corr["map_y"] == "mk")].iloc[0]
    inside = labels > 0
    assert row["n"] == inside.sum()
    assert row["pearson_r"] == pytest.approx(np.corrcoef(fa[inside], mk[inside])[0, 1], rel=1e-10)
    rank = lambda a: sstats.rankdata(a)  # noqa: E731
    assert row["spearman_rho"] == pytest.approx(np.corrcoef(rank(fa[inside]), rank(mk[inside]))[0, 1], rel=1e-10)
    # across labels: the correlation of the per-label means
    corr_l = correlation_table(labels, {"fa": fa, "mk": mk}, across="labels")
    means_fa = [fa[labels == k].mean() for k in (1, 2, 3, 5)]
    means_mk = [mk[labels == k].mean() for k in (1, 2, 3, 5)]
    assert corr_l["n"].iloc[0] == 4
    assert corr_l["pearson_r"].iloc[0] == pytest.approx(np.corrcoef(means_fa, means_mk)[0, 1], rel=1e-10)


def test_csv_round_trip_and_wide_layout(random_subject, tmp_path):
    labels, fa, mwf, _, aff = random_subject
    maps = {"fa": Volume(fa, aff), "mwf": Volume(mwf, aff, metadata={"Units": "fraction"})}
    res = roi_statistics(Volume(labels, aff), maps, lut={1: "Genu du corps calleux", 2: "Faisceau arqué"},
                         subject="sub-é")
    out = write_csv(res.table, tmp_path / "stats.csv")
    back = pd.read_csv(out, encoding="utf-8", keep_default_na=False, na_values=[""])
    assert list(back.columns) == list(LONG_COLUMNS)
    assert back["name"].tolist() == res.table["name"].tolist()  # UTF-8 names survive
    for col in ("mean", "sd", "median", "iqr", "min", "max", "volume_mm3"):
        np.testing.assert_array_equal(back[col].to_numpy(float), res.table[col].to_numpy(float))
    assert read_stats_csv(out)["subject"].eq("sub-é").all()
    wide = pd.read_csv(write_csv(res.table, tmp_path / "wide.csv", layout="wide"))
    assert wide["label"].tolist() == [1, 2, 3, 5]  # one row per label present (4 is absent and not in the LUT)
    assert wide.loc[wide["label"] == 3, "mwf_mean"].iloc[0] == pytest.approx(100 * np.nanmean(mwf[labels == 3]))
    assert (wide["mwf_units"] == "%").all()
    pd.testing.assert_frame_equal(wide, wide_table(pd.read_csv(out, keep_default_na=False, na_values=[""])),
                                  check_dtype=False)


def test_csv_bad_destination_writes_nothing(random_subject, tmp_path, monkeypatch):
    labels, fa, _, _, _ = random_subject
    table = roi_statistics(labels, {"fa": fa}).table
    with pytest.raises(InputError, match="does not exist"):
        write_csv(table, tmp_path / "missing" / "out.csv")
    assert not (tmp_path / "missing").exists()
    (tmp_path / "adir.csv").mkdir()
    with pytest.raises(InputError, match="is a folder"):
        write_csv(table, tmp_path / "adir.csv")
    monkeypatch.setattr("napari_myelin.stats.tables.os.access", lambda *a, **k: False)
    with pytest.raises(InputError, match="not writable"):
        write_csv(table, tmp_path / "ro.csv")
    monkeypatch.undo()

    def failing_write(path, payload):  # the disk fills up half-way
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("napari_myelin.stats.tables.atomic_write_bytes", failing_write)
    with pytest.raises(InputError, match="No space left"):
        write_csv(table, tmp_path / "full.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir.csv"]


def _subject_table(rng, subject, shift=0.0):
    labels = np.repeat(np.arange(1, 4), 20).reshape(3, 4, 5)
    fa = 0.5 + 0.05 * rng.normal(size=labels.shape) + shift
    mk = 1.0 + 0.05 * rng.normal(size=labels.shape) + shift
    return roi_statistics(labels, {"fa": fa, "mk": mk}, subject=subject).table


def test_normative_build_and_z_scores():
    rng = np.random.default_rng(7)
    healthy = [_subject_table(rng, f"hc{i}") for i in range(5)]
    norm = build_normative(healthy, source="test")
    assert len(norm) == 3 * 2 and (norm["n_subjects"] == 5).all()
    for (lab, m), row in norm.set_index(["label", "map"]).iterrows():
        values = [t[(t["label"] == lab) & (t["map"] == m)]["mean"].iloc[0] for t in healthy]
        assert row["mean"] == pytest.approx(np.mean(values), rel=1e-12)
        assert row["sd"] == pytest.approx(np.std(values, ddof=1), rel=1e-12)
    patient = _subject_table(rng, "pt", shift=0.2)
    scored, dist = compare_to_normative(patient, norm)
    merged = patient.merge(norm, on=["label", "map"], suffixes=("", "_n"))
    # predictive t of a new subject against n = 5 controls (Crawford & Howell), and its normal deviate
    t = (merged["mean"] - merged["mean_n"]) / (merged["sd_n"] * np.sqrt(1 + 1 / 5))
    z = np.sign(t) * sstats.norm.isf(sstats.t.sf(np.abs(t), 4))
    np.testing.assert_allclose(scored["t"].to_numpy(), t.to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(scored["z"].to_numpy(), z.to_numpy(), rtol=1e-9)
    p = 2 * sstats.t.sf(np.abs(t), 4)
    for m in ("fa", "mk"):  # Benjamini-Hochberg over the 3 labels of each map
        sel = (merged["map"] == m).to_numpy()
        ps = np.sort(p[sel])
        q = np.minimum.accumulate((ps * 3 / np.arange(1, 4))[::-1])[::-1]
        np.testing.assert_allclose(np.sort(scored.loc[sel, "q"]), q, rtol=1e-12)
        assert scored.loc[sel, "abnormal"].tolist() == (scored.loc[sel, "q"] <= 0.05).tolist()
    for lab in (1, 2, 3):
        zl = z[merged["label"] == lab].to_numpy()
        row = dist[dist["label"] == lab].iloc[0]
        assert row["D"] == pytest.approx(np.sqrt((zl ** 2).sum()), rel=1e-9)  # a table: independent maps
        assert row["n_maps"] == 2
        assert row["D_p"] == pytest.approx(sstats.chi2.sf(row["D"] ** 2, 2), rel=1e-9)
    with pytest.raises(InputError, match="at least 2"):
        build_normative(healthy[:1])
    bad_units = patient.assign(units="%")
    norm_units = norm.assign(units="ratio")
    with pytest.raises(InputError, match="units"):
        compare_to_normative(bad_units, norm_units)


def _write(path, data, affine, sidecar=None):
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))
    if sidecar:
        path.with_name(path.name.replace(".nii.gz", ".json")).write_text(json.dumps(sidecar))
    return path


def test_cli_stats_and_normative(random_subject, tmp_path, capsys):
    labels, fa, mwf, _, aff = random_subject
    mwf = np.nan_to_num(mwf)
    lab_p = _write(tmp_path / "tracts.nii.gz", labels.astype(np.int16), aff)
    (tmp_path / "tracts.tsv").write_text("index\tname\n1\tCC\n2\tCST L\n3\tCST R\n4\tabsent\n5\tSLF\n")
    fa_p = _write(tmp_path / "fa.nii.gz", fa.astype(np.float32), aff, {"Units": "ratio", "Method": "DKI"})
    mwf_p = _write(tmp_path / "mwf.nii.gz", mwf.astype(np.float32), aff, {"Units": "fraction", "Method": "NNLS"})
    csvs = []
    for i in range(3):
        out = tmp_path / f"sub-{i}.csv"
        rc = main(["stats", "--labels", str(lab_p), "--map", f"MWF={mwf_p}", "--map", f"FA={fa_p}",
                   "--csv", str(out), "--subject", f"sub-{i}"])
        assert rc == 0
        csvs.append(out)
    t = pd.read_csv(csvs[0], keep_default_na=False, na_values=[""])
    assert len(t) == 10 and set(t["map"]) == {"mwf", "fa"}
    row = t[(t["map"] == "mwf") & (t["label"] == 5)].iloc[0]
    assert row["units"] == "%" and row["name"] == "SLF" and row["method"] == "NNLS"
    assert row["source"].endswith("mwf.nii.gz")
    assert row["mean"] == pytest.approx(100 * mwf.astype(np.float32)[labels == 5].astype(float).mean(), rel=1e-6)
    assert t[t["label"] == 4]["status"].str.startswith("empty").all()
    assert "absent" in capsys.readouterr().err
    norm = tmp_path / "norm.csv"
    assert main(["normative", "table", *map(str, csvs), "--csv", str(norm)]) == 0
    nt = read_normative(norm)
    assert (nt["n_subjects"] == 3).all() and np.allclose(nt["sd"], 0.0, atol=1e-12)  # identical subjects
    # a normative table with a known SD gives known z-scores
    nt["sd"] = 0.5
    nt["mean"] = nt["mean"] - 1.0
    nt.to_csv(norm, index=False)
    out = tmp_path / "scored.csv"
    assert main(["stats", "--labels", str(lab_p), "--map", f"FA={fa_p}", "--map", f"mwf={mwf_p}", "--csv", str(out),
                 "--normative", str(norm), "--correlation", str(tmp_path / "corr.csv")]) == 0
    scored = pd.read_csv(out)
    ok = scored[scored["status"] == "ok"]
    # 2 SD above a table of 3 subjects: predictive t = 2 / sqrt(1 + 1/3) on 2 degrees of freedom, not flagged
    z = sstats.norm.isf(sstats.t.sf(2 / np.sqrt(4 / 3), 2))
    np.testing.assert_allclose(ok["z"], z, rtol=1e-9)
    np.testing.assert_allclose(ok["D"], np.sqrt(2) * z, rtol=1e-9)
    assert not ok["abnormal"].any()
    corr = pd.read_csv(tmp_path / "corr.csv")
    assert corr.loc[0, "n"] == 4
    # WM threshold from a probability map, wide layout
    wm = np.random.default_rng(9).random(labels.shape).astype(np.float32)
    wm_p = _write(tmp_path / "wm.nii.gz", wm, aff)
    out = tmp_path / "wm.csv"
    assert main(["stats", "--labels", str(lab_p), "--map", f"FA={fa_p}", "--csv", str(out), "--wm", str(wm_p),
                 "--weighting", "threshold", "--threshold", "0.6", "--layout", "wide"]) == 0
    wide = pd.read_csv(out)
    for lab in (1, 2, 3, 5):
        sel = fa.astype(np.float32)[(labels == lab) & (wm >= 0.6)].astype(float)
        row = wide[wide["label"] == lab].iloc[0]
        assert row["fa_n_used"] == sel.size and row["fa_mean"] == pytest.approx(sel.mean(), rel=1e-6)
    # bad input: exit 2, one sentence, nothing written
    rc = main(["stats", "--labels", str(lab_p), "--map", f"FA={fa_p}", "--csv", str(tmp_path / "nope" / "x.csv")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err
    rc = main(["stats", "--labels", str(lab_p), "--map", f"{fa_p}", "--csv", str(tmp_path / "x.csv")])
    assert rc == 2 and "NAME=FILE" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


@pytest.fixture(scope="module")
def phantom():
    from napari_myelin.sims.phantom import make_phantom

    return make_phantom(seed=3, size="small", snr=float("inf"))


def test_phantom_tract_means_match_truth(phantom):
    truth = phantom.truth["mese"]
    labels, mwf, wm = truth["labels"], truth["mwf"], truth["wm"]
    res = roi_statistics(labels, {"mwf": mwf}, lut=phantom.lut, weights=wm, weighting="threshold", threshold=0.9)
    t = res.table.set_index("label")
    lab = labels.data
    lut = phantom.lut.set_index("index")
    assert set(t.index) == set(lut.index)  # every tract of the LUT is reported, absent ones as empty
    assert (t["name"] == lut.loc[t.index, "name"]).all()
    assert (t["units"] == "%").all()
    core = wm.data >= 0.9
    rel_errors = []
    for index, row in t.iterrows():
        sel = 100 * mwf.data[(lab == index) & core].astype(float)
        assert row["n_used"] == sel.size
        assert row["n_voxels"] == (lab == index).sum()
        if sel.size == 0:
            assert row["status"].startswith("empty")
            continue
        # the table equals the LUT-labelled truth computed with numpy
        assert row["mean"] == pytest.approx(sel.mean(), rel=1e-9)
        assert row["median"] == pytest.approx(np.median(sel), rel=1e-9)
        if sel.size >= 10:
            built = 100 * phantom.parameters["tract_mwf"][lut.loc[index, "abbreviation"]]
            rel_errors.append(row["median"] / built - 1)
    # in the WM core (WM >= 0.9) of tracts with >= 10 voxels, the median MWF is the tract MWF the
    # phantom was built with, up to the mixing of neighbouring tracts on the 4 mm grid
    rel_errors = np.abs(rel_errors)
    assert rel_errors.size >= 20
    assert np.median(rel_errors) < 0.06
    assert np.mean(rel_errors < 0.15) >= 0.8
    # FA on the DWI grid summarised over the MESE tract labels: resampled by world coordinates;
    # tract means agree with those computed on the DWI grid's own labels (same anatomy, other voxels)
    dwi = phantom.truth["dwi"]
    across = roi_statistics(labels, {"fa": dwi["fa"]}, lut=phantom.lut).table.set_index("label")
    native = roi_statistics(dwi["labels"], {"fa": dwi["fa"]}, lut=phantom.lut).table.set_index("label")
    big = [i for i in native.index if native.loc[i, "n_voxels"] >= 30 and across.loc[i, "n_voxels"] >= 30]
    assert len(big) >= 10
    diff = np.abs(across.loc[big, "mean"] - native.loc[big, "mean"]) / native.loc[big, "mean"]
    assert float(np.median(diff)) < 0.1


def test_shipped_synthetic_normative_table():
    from importlib.resources import files

    from napari_myelin.align.atlas import tract_lut
    from napari_myelin.reconst.dki import MAP_UNITS

    path = files("napari_myelin") / "data" / "normative" / "normative_synthetic_phantom.csv"
    norm = read_normative(path)
    assert norm["source"].str.startswith("SYNTHETIC").all()
    units = norm.groupby("map")["units"].first().to_dict()
    assert units == {"mwf": "%", "chi": "ppm", "t1": "s",
                     **{m: MAP_UNITS[m] for m in ("fa", "md", "ad", "rd", "mk", "ak", "rk")}}
    assert (norm["n_subjects"] >= 2).all() and (norm["sd"] > 0).all()
    names = tract_lut().set_index("index")["name"]
    assert (norm["name"].to_numpy() == names.loc[norm["label"]].to_numpy()).all()
    # a subject sitting exactly 2 SD above the table in every tract and map: predictive t = 2 / sqrt(1 + 1/n)
    subject = norm[["label", "name", "map", "units"]].assign(mean=norm["mean"] + 2 * norm["sd"], status="ok")
    scored, dist = compare_to_normative(subject, norm)
    n = scored.merge(norm, on=["label", "map"])["n_subjects"].to_numpy()
    z = sstats.norm.isf(sstats.t.sf(2 / np.sqrt(1 + 1 / n), n - 1))
    np.testing.assert_allclose(scored["z"], z, rtol=1e-9)
    assert set(scored["normative_model"]) == {"SYNTHETIC normative table"}
    d = scored.assign(z2=scored["z"] ** 2).groupby("label")["z2"].sum() ** 0.5
    np.testing.assert_allclose(dist.set_index("label")["D"], d.loc[dist["label"]].to_numpy(), rtol=1e-9)
