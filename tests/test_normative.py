"""Normative models: closed forms (OLS, leave-one-out, predictive t, BH, Ledoit-Wolf), calibration under the
null by simulation, refusals, the model folder, and the voxelwise model against per-voxel least squares."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sstats
from sklearn.covariance import ledoit_wolf as sk_ledoit_wolf

from napari_myelin.cli import main
from napari_myelin.io.volume import Volume
from napari_myelin.stats.normative import check_compatible, score_subject
from napari_myelin.stats.normative_design import make_design
from napari_myelin.stats.normative_model import (_fit_cells, fit_tract_model, load_normative_model,
                                                 save_normative_model, shared_settings, unpack)
from napari_myelin.stats.normative_scoring import (bh_qvalues, distance_null, ledoit_wolf, mahalanobis_sq,
                                                   null_p_value, predictive_z)
from napari_myelin.stats.normative_voxel import (MYELIN_SIGN, abnormal_voxels, abnormality_score, fit_voxel_model,
                                                 predictive_z_map, tract_volumes)
from napari_myelin.utils.errors import InputError

MAPS = ("mwf", "fa", "mk")


def _cohort(rng, n, labels=8, effect=0.3):
    """Controls' covariates and tract means following a known linear model with correlated maps."""
    cov = pd.DataFrame({"subject": [f"sub-{i:02d}" for i in range(n)], "age": rng.uniform(20, 70, n),
                        "sex": rng.choice(["F", "M"], n), "site": rng.choice(["A", "B"], n)})
    mix = np.array([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.3, 0.3, 0.9]])
    rows = []
    for i, c in cov.iterrows():
        for label in range(1, labels + 1):
            e = mix @ rng.standard_normal(3)
            for k, m in enumerate(MAPS):
                mean = 10 + label + effect * (c["age"] - 45) / 10 + 0.5 * (c["sex"] == "M") + e[k]
                rows.append({"subject": c["subject"], "label": label, "name": f"tract {label}", "map": m,
                             "units": "%" if m == "mwf" else "ratio", "method": f"{m} method", "mean": mean,
                             "status": "ok"})
    return cov, pd.DataFrame(rows)


def test_predictive_z_and_bh_equal_closed_forms():
    t = np.array([-8.0, -2.1, 0.0, 0.7, 3.5, np.nan])
    df = np.array([4, 9, 5, 30, 2, 5])
    z, p = predictive_z(t, df)
    np.testing.assert_allclose(p[:5], 2 * sstats.t.sf(np.abs(t[:5]), df[:5]), rtol=1e-12)
    np.testing.assert_allclose(z[:5], np.sign(t[:5]) * sstats.norm.isf(sstats.t.sf(np.abs(t[:5]), df[:5])), rtol=1e-10,
                               atol=1e-12)
    assert np.isnan(z[5]) and np.isnan(p[5])
    pv = np.array([0.01, 0.04, 0.03, 0.2, np.nan, 0.001, 0.5, 0.02])
    groups = np.array(["a", "a", "a", "a", "a", "b", "b", "b"])
    q = bh_qvalues(pv, groups)
    for g in ("a", "b"):  # q_(i) = min_{j >= i} min(1, m p_(j) / j)
        sel = (groups == g) & np.isfinite(pv)
        ps = np.sort(pv[sel])
        m = ps.size
        expected = [min(1.0, min(m * ps[j] / (j + 1) for j in range(i, m))) for i in range(m)]
        np.testing.assert_allclose(np.sort(q[sel]), expected, rtol=1e-12)
    assert np.isnan(q[4])


def test_ledoit_wolf_equals_scikit_learn():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 12, 7)) @ rng.standard_normal((7, 7))
    cov, delta = ledoit_wolf(x)
    for i in range(4):
        ref_cov, ref_delta = sk_ledoit_wolf(x[i])
        np.testing.assert_allclose(cov[i], ref_cov, rtol=1e-10, atol=1e-12)
        assert delta[i] == pytest.approx(ref_delta, rel=1e-10)


def test_tract_model_is_ols_and_its_leave_one_out_is_a_refit():
    rng = np.random.default_rng(11)
    cov, values = _cohort(rng, 14)
    design = make_design(cov, ["age", "sex", "site"])
    assert design.columns == ["intercept", "age", "sex[M]", "site[B]"]
    model = fit_tract_model(values, cov, design, {"Name": "test"})
    x = design.matrix(cov)
    beta, ginv = unpack(model.tracts, design)
    y = values.pivot_table(index="subject", columns=["label", "map"], values="mean").reindex(cov["subject"])
    for i, row in model.tracts.iterrows():
        yi = y[(row["label"], row["map"])].to_numpy()
        b, rss, *_ = np.linalg.lstsq(x, yi, rcond=None)
        np.testing.assert_allclose(beta[i], b, rtol=1e-10)
        assert row["s"] == pytest.approx(np.sqrt(rss[0] / (14 - 4)), rel=1e-10)
        np.testing.assert_allclose(ginv[i], np.linalg.inv(x.T @ x), rtol=1e-10)
    # the closed-form leave-one-out z is the predictive z of the control against a refit without it
    fit = _fit_cells(y.to_numpy(), x)
    for i in (0, 5):
        rest = np.arange(14) != i
        b, rss, *_ = np.linalg.lstsq(x[rest], y.to_numpy()[rest, 0], rcond=None)
        s = np.sqrt(rss[0] / (13 - 4))
        t = (y.to_numpy()[i, 0] - x[i] @ b) / (s * np.sqrt(1 + x[i] @ np.linalg.inv(x[rest].T @ x[rest]) @ x[i]))
        assert fit["z_loo"][i, 0] == pytest.approx(predictive_z(t, 9)[0], rel=1e-9)
    # scoring: the prediction interval of a new subject, by hand
    new = values[values["subject"] == "sub-03"].assign(subject="new", mean=lambda d: d["mean"] + 1.0)
    scores = score_subject(new, model, {"age": 33.0, "sex": "F", "site": "B"})
    x0 = design.matrix(pd.DataFrame([{"age": 33.0, "sex": "F", "site": "B"}]))[0]
    r = scores.rows.merge(model.tracts[["label", "map"]].reset_index(), on=["label", "map"])
    mu = beta[r["index"]] @ x0
    sd = model.tracts["s"].to_numpy()[r["index"]] * np.sqrt(1 + np.einsum("j,rjk,k->r", x0, ginv[r["index"]], x0))
    np.testing.assert_allclose(r["t"], (r["mean"] - mu) / sd, rtol=1e-10)
    np.testing.assert_allclose(r["df"], 10)
    assert set(scores.rows["normative_model"]) == {"test"}


def test_flags_are_calibrated_under_the_null():
    """Healthy subjects drawn from the controls' law: P(any flag per map) <= alpha, D_p uniform."""
    rng = np.random.default_rng(5)
    cov, values = _cohort(rng, 20, labels=6)
    model = fit_tract_model(values, cov, make_design(cov, ["age", "sex"]), {"Name": "null"})
    hc, new = _cohort(rng, 150, labels=6)
    hc["subject"] = "h" + hc["subject"]
    new["subject"] = "h" + new["subject"]
    scores = score_subject(new, model, hc[["subject", "age", "sex"]])
    z = scores.rows["z"].to_numpy()
    assert abs(np.mean(np.abs(z) > 1.96) - 0.05) < 0.02   # predictive z: exact marginal calibration
    any_flag = scores.rows.groupby(["subject", "map"])["abnormal"].any()
    assert any_flag.mean() <= 0.05 + 0.03
    d_p = scores.tracts["D_p"].to_numpy()
    # the simulated null of D is conservative here (the controls' leave-one-out z are not independent draws):
    # 1.3 % of healthy tracts at nominal 5 %, median p above 0.5 (docs/statistics.md)
    assert 0.005 < np.mean(d_p <= 0.05) <= 0.05 and 0.3 < np.mean(d_p <= 0.5) <= 0.55
    # the naive (x - mean)/SD with the same table over-flags at this n (the issue's complaint)
    naive = (scores.rows["mean"] - scores.rows["norm_mean"]) / scores.rows.merge(
        model.tracts[["label", "map", "s"]], on=["label", "map"])["s"]
    assert np.mean(np.abs(naive) > 1.96) > np.mean(np.abs(z) > 1.96)


def test_distance_null_matches_the_chi2_law_without_estimation_error():
    cov = np.array([[1.0, 0.5], [0.5, 1.0]])
    null = distance_null(cov, 5000, replicates=4000, seed=1)
    assert np.quantile(null, 0.95) == pytest.approx(sstats.chi2.ppf(0.95, 2), rel=0.06)
    z = np.array([2.0, -1.0])
    d2 = mahalanobis_sq(z, cov)
    assert d2 == pytest.approx(z @ np.linalg.solve(cov, z), rel=1e-12)
    assert null_p_value(d2, null) == pytest.approx(sstats.chi2.sf(d2, 2), abs=0.02)
    small = distance_null(cov, 8, replicates=4000, seed=1)
    assert np.quantile(small, 0.95) > np.quantile(null, 0.95)  # estimating S from 8 controls widens the null


def test_refusals_and_warnings(tmp_path):
    rng = np.random.default_rng(2)
    cov, values = _cohort(rng, 10, labels=3)
    sides = {"mwf": {"reg": "chi2", "chi2_factor": 1.02, "n_fitted": 100}}
    model = fit_tract_model(values, cov, make_design(cov, ["age", "site"]),
                            {"Name": "m", "Maps": {"mwf": {"Settings": shared_settings([sides["mwf"]] * 3)}}})
    assert model.info["Maps"]["mwf"]["Settings"] == {"reg": "chi2", "chi2_factor": 1.02}  # counts left out
    subject = values[values["subject"] == "sub-01"].assign(subject="p")
    good = {"age": 40, "site": "A"}
    with pytest.raises(InputError, match="units"):
        score_subject(subject.assign(units="fraction"), model, good)
    with pytest.raises(InputError, match="from 'other'"):
        score_subject(subject.assign(method="other"), model, good)
    with pytest.raises(InputError, match="another atlas"):
        score_subject(subject.assign(name="JHU tract"), model, good)
    with pytest.raises(InputError, match="reg='lcurve'"):
        check_compatible(subject, model, {"mwf": {"reg": "lcurve"}})
    with pytest.raises(InputError, match="needs 'age'"):
        score_subject(subject, model, {"site": "A"})
    with pytest.raises(InputError, match="site 'C' is not among"):
        score_subject(subject, model, {"age": 40, "site": "C"})
    scores = score_subject(subject, model, {"age": 95, "site": "A"})
    assert len(scores.messages) == 1 and "outside the controls' range" in scores.messages[0]
    with pytest.raises(InputError, match="every control has 'A'"):
        make_design(cov.assign(site="A"), ["site"])
    # the model folder: atomic replace, refuses a folder that is not a model, round trip
    folder = save_normative_model(model, tmp_path / "model")
    again = load_normative_model(folder)
    pd.testing.assert_frame_equal(again.tracts, model.tracts, check_dtype=False)
    assert again.model_id == model.model_id and again.covariance.keys() == model.covariance.keys()
    (tmp_path / "other").mkdir()
    with pytest.raises(InputError, match="not a normative model"):
        save_normative_model(model, tmp_path / "other")
    with pytest.raises(InputError, match="no model.json"):
        load_normative_model(tmp_path / "other")


def test_voxel_model_equals_per_voxel_least_squares():
    rng = np.random.default_rng(4)
    shape, n = (6, 5, 4), 9
    cov = pd.DataFrame({"subject": [f"s{i}" for i in range(n)], "age": rng.uniform(20, 60, n)})
    x = make_design(cov, ["age"]).matrix(cov)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    truth = {m: 5 + rng.random(shape) for m in ("mwf", "fa")}
    controls = [{m: Volume((truth[m] + 0.3 * x[i, 1] + 0.2 * rng.standard_normal(shape)).astype(np.float32), aff)
                 for m in truth} for i in range(n)]
    controls[2]["mwf"].data[1, 1, 1] = np.nan  # one control missing one voxel
    mask = np.ones(shape, bool)
    vm = fit_voxel_model(controls, x, reference=Volume(np.zeros(shape), aff), mask=mask, wm=mask, fwhm_mm=0.0)
    for v in ((1, 1, 1), (4, 3, 2)):
        rows = [i for i in range(n) if np.isfinite(controls[i]["mwf"].data[v])]
        y = np.array([controls[i]["mwf"].data[v] for i in rows], float)
        b, rss, *_ = np.linalg.lstsq(x[rows], y, rcond=None)
        np.testing.assert_allclose(vm.beta["mwf"][v], b, rtol=1e-5)
        assert vm.sd["mwf"][v] == pytest.approx(np.sqrt(rss[0] / (len(rows) - 2)), rel=1e-4)
        assert vm.n["mwf"][v] == len(rows)
        x0 = np.array([1.0, 0.5])
        g = np.linalg.inv(x[rows].T @ x[rows])
        t = (7.0 - x0 @ b) / (np.sqrt(rss[0] / (len(rows) - 2)) * np.sqrt(1 + x0 @ g @ x0))
        z = predictive_z_map(np.full(shape, 7.0), vm.beta["mwf"], vm.sd["mwf"], vm.n["mwf"], vm.ginv["mwf"], x0)
        assert z[v] == pytest.approx(predictive_z(t, len(rows) - 2)[0], rel=1e-4)
    assert vm.correlation.shape == (2, 2) and vm.correlation[0, 0] == pytest.approx(1.0)


def test_abnormality_score_is_a_calibrated_directional_combination():
    rng = np.random.default_rng(8)
    maps = ["mwf", "fa", "chi"]
    r = np.array([[1.0, 0.4, -0.2], [0.4, 1.0, -0.1], [-0.2, -0.1, 1.0]])
    z = rng.standard_normal((200000, 3)) @ np.linalg.cholesky(r).T
    score = abnormality_score({m: z[:, k] for k, m in enumerate(maps)}, maps, r)
    w = np.array([MYELIN_SIGN[m] for m in maps], float)
    np.testing.assert_allclose(score, -(z @ w) / np.sqrt(w @ r @ w), rtol=1e-12)
    assert abs(score.mean()) < 0.01 and score.std() == pytest.approx(1.0, abs=0.01)
    # one map missing in a voxel drops out of both sums
    part = abnormality_score({"mwf": np.array([-2.0, np.nan]), "fa": np.array([-1.0, -1.0])}, maps, r)
    assert part[0] == pytest.approx(3.0 / np.sqrt(2 + 2 * 0.4)) and part[1] == pytest.approx(1.0)
    q, flags = abnormal_voxels(np.array([5.0, 0.1, 4.0, 6.0]), np.array([True, True, True, False]), 0.05)
    p = sstats.norm.sf([5.0, 0.1, 4.0])
    np.testing.assert_allclose(q[:3], bh_qvalues(p), rtol=1e-12)
    assert flags.tolist() == [True, False, True, False] and np.isnan(q[3])
    lut = pd.DataFrame({"index": [1, 2, 3], "name": ["a", "b", "c"]})
    table = tract_volumes(np.array([1, 0, 1, 1], bool), np.array([1, 1, 2, 0]), lut, 8.0, np.array([1.0, 3.0, 2.0, 0.0]))
    assert table["abnormal_mm3"].tolist() == [8.0, 8.0] and table["mean_score"].tolist() == [2.0, 2.0]


def test_cli_normative_table_and_subcommands(tmp_path, capsys):
    rng = np.random.default_rng(1)
    paths = []
    for i in range(3):
        t = pd.DataFrame({"subject": f"s{i}", "label": [1, 2], "name": ["a", "b"], "map": "fa", "units": "ratio",
                          "mean": rng.random(2), "status": "ok"})
        paths.append(tmp_path / f"s{i}.csv")
        t.to_csv(paths[-1], index=False)
    assert main(["normative", "table", *map(str, paths), "--csv", str(tmp_path / "n.csv")]) == 0
    table = pd.read_csv(tmp_path / "n.csv")
    assert (table["n_subjects"] == 3).all()
    assert main(["normative"]) == 2
    assert main(["normative", "build", str(tmp_path / "nope"), "--out", str(tmp_path / "m")]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert main(["normative", "info", "synthetic-demo"]) == 0
    assert "SYNTHETIC" in capsys.readouterr().out
    assert not (tmp_path / "m").exists()


def test_pcn_backend_without_pcntoolkit_is_one_sentence(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "pcntoolkit", None)  # import pcntoolkit raises ImportError
    cov, values = _cohort(np.random.default_rng(2), 12)
    with pytest.raises(InputError, match=r"^--backend pcn: needs PCNtoolkit, which is not installed; install it with "
                                         r"pip install 'napari-myelin\[normative-pcn\]', or build with the default "
                                         r"backend\.$"):
        fit_tract_model(values, cov, make_design(cov, ["age"]), backend="pcn")
    with pytest.raises(InputError, match="choose one of ols, pcn"):
        fit_tract_model(values, cov, make_design(cov, ["age"]), backend="gpr")


class _FakePcn:
    """Stands in for PCNtoolkit's documented API (NormData.from_dataframe, NormativeModel.fit/compute_zscores,
    BLR) with the closed-form predictive, so that the backend's read-back of mean and variance is checked exactly."""

    __version__ = "1.0-fake"

    class NormData(dict):
        @classmethod
        def from_dataframe(cls, name, frame, covariates, batch_effects, response_vars, subject_ids):
            data = cls()
            data.x = np.c_[np.ones(len(frame)), frame[covariates].to_numpy(float)]
            data.y, data.names = frame[response_vars].to_numpy(float), list(response_vars)
            return data

    class BLR:
        pass

    class NormativeModel:
        def __init__(self, template, **kwargs):
            pass

        def fit(self, data):
            ginv = np.linalg.inv(data.x.T @ data.x)
            self.beta = ginv @ data.x.T @ data.y
            s2 = ((data.y - data.x @ self.beta) ** 2).sum(0) / (len(data.y) - data.x.shape[1])
            self.quad = s2[:, None, None] * (np.diag([1.0] + [0.0] * (data.x.shape[1] - 1)) + ginv)

        def compute_zscores(self, data):
            sd = np.sqrt(np.einsum("ij,mjk,ik->im", data.x, self.quad, data.x))
            z = pd.DataFrame((data.y - data.x @ self.beta) / sd, columns=data.names)
            data["Z"] = type("DataArray", (), {"to_pandas": lambda _self: z})()


def test_pcn_backend_stores_the_gaussian_predictive_it_reads_back(monkeypatch):
    """With a stand-in whose predictive is the closed form's, the stored cells give the same mean and predictive
    variance as the closed form (Gaussian: df = inf), so scoring needs no PCNtoolkit."""
    monkeypatch.setitem(__import__("sys").modules, "pcntoolkit", _FakePcn)
    cov, values = _cohort(np.random.default_rng(4), 16)
    design = make_design(cov, ["age", "sex", "site"])
    ols = fit_tract_model(values, cov, design)
    pcn = fit_tract_model(values, cov, design, backend="pcn")
    assert pcn.info["Backend"]["Name"] == "pcntoolkit BLR" and np.isinf(pcn.tracts["df"]).all()
    x0 = design.matrix(pd.DataFrame({"age": [33.0, 61.0], "sex": ["M", "F"], "site": ["B", "A"]}))
    for model in (ols, pcn):
        beta, ginv = unpack(model.tracts, design)
        model.pred = x0 @ beta.T, model.tracts["s"].to_numpy() ** 2 * (1 + np.einsum("ij,mjk,ik->im", x0, ginv, x0))
    np.testing.assert_allclose(pcn.pred[0], ols.pred[0], rtol=1e-9)
    np.testing.assert_allclose(pcn.pred[1], ols.pred[1], rtol=1e-9)


def test_a_cell_without_spread_among_the_controls_is_not_fitted():
    """Controls all exactly 0 in a cell (a map clipped at 0 in a one-voxel tract): no predictive interval of
    width 0 that would flag any value; the subject's row there is not scored, the others are."""
    cov, values = _cohort(np.random.default_rng(6), 12)
    values.loc[(values["label"] == 1) & (values["map"] == "fa"), "mean"] = 0.0
    model = fit_tract_model(values, cov, make_design(cov, []))
    assert not ((model.tracts["label"] == 1) & (model.tracts["map"] == "fa")).any()
    subject = values[values["subject"] == "sub-00"].assign(subject="new")
    subject.loc[(subject["label"] == 1) & (subject["map"] == "fa"), "mean"] = 1e-3
    rows = score_subject(subject, model).rows.set_index(["label", "map"])
    assert np.isnan(rows.loc[(1, "fa"), "z"]) and not rows.loc[(1, "fa"), "abnormal"]
    assert rows["z"].notna().sum() == len(rows) - 1
