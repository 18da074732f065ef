"""Cohorts on Dask distributed: a 3-subject cohort on an embedded LocalCluster with a worker SIGKILLed
mid-run, resume, changed inputs, a subject with a truncated NIfTI, the lock, attaching to a scheduler
started here, the batch-queue path and bad arguments."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from napari_myelin.cli import main
from napari_myelin.io.volume import load_volume
from napari_myelin.sims.phantom import write_phantom
from napari_myelin.workflows.cohort import run_cohort
from napari_myelin.workflows.pipeline import STEPS, TEMPLATE_SPACE, run_step

PARTICIPANTS = "participant_id\tage\tsex\tgroup\tsite\nsub-01\t34\tF\tcontrol\tA\nsub-02\t51\tM\tpatient\tB\n" \
               "sub-03\tn/a\tF\tcontrol\tA\n"
FAST = ["--preset", "affine", "--workers", "2"]
#: Steps every phantom subject runs (the pipeline may hold more, for acquisitions a phantom may lack).
CORE_STEPS = ("mwf", "dki", "qsm", "qpm", "register", "tracts", "calibrate", "fusion", "stats")
#: Status of each step for a subject with a DWI only.
DWI_ONLY = {n: "done" if n in ("dki", "register", "tracts", "stats") else "missing" for n in STEPS}


def _status(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "cohort_status.tsv", sep="\t", keep_default_na=False)


def _workers() -> list[psutil.Process]:
    """The Dask worker processes this test process spawned (multiprocessing spawn children)."""
    return [p for p in psutil.Process().children(recursive=True)
            if any("spawn_main" in part for part in p.cmdline())]


def _listening(proc: psutil.Process) -> set[tuple[str, int]]:
    """(address, port) of the sockets a process listens on."""
    return {(c.laddr.ip, c.laddr.port) for c in proc.net_connections("inet") if c.status == psutil.CONN_LISTEN}


@pytest.fixture(scope="module")
def bids(tmp_path_factory):
    root = tmp_path_factory.mktemp("bids")
    for seed in (1, 2, 3):
        write_phantom(root, seed=seed, size="small", snr=200.0)
    (root / "participants.tsv").write_text(PARTICIPANTS)
    return root


@pytest.fixture(scope="module")
def killed_run(bids, tmp_path_factory):
    """The cohort of 3 subjects on 2 worker processes; one worker is SIGKILLed when the first step ends."""
    out = tmp_path_factory.mktemp("deriv")
    seen = {"killed": None, "listening": set(), "ended": [], "before": _listening(psutil.Process()),
            "older": {p.pid for p in _workers()}}

    def on_status(subject, name, result):
        seen["ended"].append((subject, name, result.status))
        if seen["killed"] is None and result.status == "done":
            workers = [p for p in _workers() if p.pid not in seen["older"]]  # this cohort's two workers
            seen["workers"] = len(workers)
            for proc in [psutil.Process(), *workers]:  # the scheduler and nannies run in this process
                seen["listening"] |= {ip for ip, port in _listening(proc) - seen["before"]}
            seen["killed"] = workers[0].pid
            os.kill(workers[0].pid, signal.SIGKILL)

    result = run_cohort(bids, out, workers=2, threads_per_worker=1, preset="affine", retries=2, on_status=on_status)
    return result, out, seen


def test_killed_worker_is_retried_and_the_cohort_completes(killed_run):
    result, out, seen = killed_run
    assert seen["killed"] is not None and seen["workers"] == 2
    assert not psutil.pid_exists(seen["killed"]) or psutil.Process(seen["killed"]).status() == psutil.STATUS_ZOMBIE
    assert result.exit_status == 0 and result.failed == []
    assert list(result.subjects) == ["sub-01", "sub-02", "sub-03"]
    for sub, st in result.subjects.items():
        assert st.status == "succeeded"
        assert [r.name for r in st.steps] == list(STEPS)
        assert {r.status for r in st.steps} <= {"done", "skipped", "missing"}, st.steps
        assert {r.status for r in st.steps if r.name in CORE_STEPS} <= {"done", "skipped"}, st.steps
        for rel in (f"anat/{sub}_space-mese_mwf.nii.gz", f"dwi/{sub}_space-dwi_fa.nii.gz",
                    f"anat/{sub}_space-megre_chi.nii.gz", f"anat/{sub}_space-vfa_mwf_qpm.nii.gz",
                    f"anat/{sub}_space-vfa_imwf.nii.gz", f"anat/{sub}_space-{TEMPLATE_SPACE}_imwf.nii.gz",
                    "tracts.csv"):
            assert (out / sub / rel).exists(), rel
        assert st.seconds > 1.0
    done = sum(r.status == "done" for st in result.subjects.values() for r in st.steps if r.name in CORE_STEPS)
    assert done >= 3 * len(CORE_STEPS) - 2  # at most a result lost with the killed worker reads 'skipped'
    assert len(seen["ended"]) == 3 * len(STEPS)
    status = _status(out)
    assert len(status) == 3 * len(STEPS) + 1 and list(status.columns) == ["subject", "step", "status", "seconds", "message"]
    assert set(status["status"]) <= {"done", "skipped", "missing"}


def test_embedded_cluster_listens_on_localhost_only(killed_run):
    result, _, seen = killed_run
    assert seen["listening"] == {"127.0.0.1"}
    assert result.dashboard.startswith("http://127.0.0.1:")
    assert result.cluster == "LocalCluster of 2 worker processes x 1 thread(s) on 127.0.0.1"


def test_group_tables_carry_the_covariates(killed_run):
    _, out, _ = killed_run
    long = pd.read_csv(out / "group/tracts_long.csv")
    assert list(long.columns[:6]) == ["subject", "age", "sex", "group", "site", "label"]
    for sub in ("sub-01", "sub-02", "sub-03"):
        own = pd.read_csv(out / sub / "tracts.csv")
        part = long[long["subject"] == sub].reset_index(drop=True)
        np.testing.assert_allclose(part["mean"], own["mean"])
        assert list(part["map"]) == list(own["map"])
    first = long.groupby("subject").first()
    assert first.loc["sub-01", "age"] == 34 and first.loc["sub-02", "group"] == "patient"
    assert np.isnan(first.loc["sub-03", "age"]) and first.loc["sub-03", "site"] == "A"
    wide = pd.read_csv(out / "group/tracts_wide.csv")
    assert list(wide.columns[:7]) == ["subject", "age", "sex", "group", "site", "label", "name"]
    row = wide[(wide["subject"] == "sub-02") & (wide["label"] == 1)].iloc[0]
    expected = long[(long["subject"] == "sub-02") & (long["label"] == 1) & (long["map"] == "fa")]["mean"].iloc[0]
    assert row["fa_mean"] == pytest.approx(expected) and row["sex"] == "M"


def test_group_maps_are_the_voxelwise_mean_sd_and_count(killed_run):
    _, out, _ = killed_run
    files = [out / s / f"anat/{s}_space-{TEMPLATE_SPACE}_mwf.nii.gz" for s in ("sub-01", "sub-02", "sub-03")]
    stack = np.stack([np.asarray(load_volume(f).data, float) for f in files])
    valid = np.isfinite(stack) & (stack != 0)
    n = valid.sum(axis=0)
    mean = np.where(valid, stack, 0).sum(axis=0) / np.maximum(n, 1)
    sd = np.sqrt(np.where(valid, (stack - mean) ** 2, 0).sum(axis=0) / np.maximum(n - 1, 1))
    folder = out / f"group/space-{TEMPLATE_SPACE}"
    np.testing.assert_array_equal(load_volume(folder / "n_mwf.nii.gz").data, n)
    np.testing.assert_allclose(load_volume(folder / "mean_mwf.nii.gz").data[n > 0], mean[n > 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(load_volume(folder / "sd_mwf.nii.gz").data[n > 1], sd[n > 1], rtol=1e-4, atol=1e-5)
    assert n.max() == 3
    side = json.loads((folder / "mean_mwf.json").read_text())
    assert side["Units"] == "%"
    assert json.loads((folder / "database.json").read_text())["Subjects"] == ["sub-01", "sub-02", "sub-03"]
    desc = json.loads((out / "dataset_description.json").read_text())
    assert [g["Name"] for g in desc["GeneratedBy"]] == ["napari-myelin", "dask.distributed"]
    assert all(g["Version"] for g in desc["GeneratedBy"])


def test_second_run_recomputes_nothing(killed_run, bids, capsys):
    _, out, _ = killed_run
    before = (out / "group/tracts_long.csv").stat().st_mtime_ns
    assert main(["cohort", str(bids), "--out", str(out), *FAST]) == 0
    captured = capsys.readouterr()
    assert "dashboard: http://127.0.0.1:" in captured.err
    assert "3 of 3 subjects succeeded, 0 steps computed" in captured.out
    status = _status(out)
    assert set(status["status"]) <= {"skipped", "missing"} and len(status) == 3 * len(STEPS) + 1
    assert set(status[status["step"].isin(CORE_STEPS)]["status"]) == {"skipped"}
    assert (out / "group/tracts_long.csv").stat().st_mtime_ns == before


def _copy_subject(src: Path, dst: Path, keep=lambda path: True) -> None:
    """Copy a BIDS subject folder under another subject label (file names renamed)."""
    for f in src.rglob("*"):
        if f.is_file() and keep(f):
            target = dst / f.relative_to(src).as_posix().replace(src.name, dst.name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, target)


@pytest.fixture(scope="module")
def bad_cohort(bids, tmp_path_factory):
    """``napari-myelin cohort`` on sub-04 (sub-03's images, MESE truncated) and sub-05 (sub-01's DWI only)."""
    root = tmp_path_factory.mktemp("bad_bids")
    _copy_subject(bids / "sub-03", root / "sub-04")
    _copy_subject(bids / "sub-01", root / "sub-05", keep=lambda f: f.parent.name == "dwi")
    mese = root / "sub-04/anat/sub-04_MESE.nii.gz"
    good = mese.read_bytes()
    mese.write_bytes(good[: len(good) // 2])
    deriv = tmp_path_factory.mktemp("bad_deriv")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["cohort", str(root), "--out", str(deriv), *FAST])
    return {"root": root, "deriv": deriv, "mese": mese, "good": good, "code": code, "stdout": out.getvalue(),
            "stderr": err.getvalue(), "status": _status(deriv).set_index(["subject", "step"])}


def test_truncated_nifti_fails_its_subject_with_the_sentence(bad_cohort):
    status, mese = bad_cohort["status"], bad_cohort["mese"]
    assert bad_cohort["code"] == 3
    failed = status.loc[("sub-04", "mwf")]
    assert failed["status"] == "failed"
    assert failed["message"].startswith(f"{mese}: cannot be read as NIfTI")
    assert failed["message"].endswith("the file is truncated or corrupt, copy it again from the scanner export.")
    assert "\n" not in failed["message"]
    assert status.loc[("sub-04", "register"), "status"] == "failed"
    assert [status.loc[("sub-04", n), "status"] for n in ("dki", "qsm", "qpm")] == ["done"] * 3
    assert [status.loc[("sub-04", n), "status"] for n in ("tracts", "calibrate", "fusion", "stats")] == ["blocked"] * 4
    assert {n: status.loc[("sub-05", n), "status"] for n in STEPS} == DWI_ONLY
    assert status.loc[("group", "group"), "status"] == "done"
    assert set(pd.read_csv(bad_cohort["deriv"] / "group/tracts_long.csv")["subject"]) == {"sub-05"}
    assert "sub-04       failed" in bad_cohort["stdout"] and "sub-05       succeeded" in bad_cohort["stdout"]
    assert "sub-04 mwf failed: " in bad_cohort["stderr"]


def test_fixed_input_recomputes_that_subject_and_parameters_its_steps(bad_cohort):
    root, deriv = bad_cohort["root"], bad_cohort["deriv"]
    bad_cohort["mese"].write_bytes(bad_cohort["good"])
    result = run_cohort(root, deriv, workers=2, preset="affine")
    assert result.exit_status == 0
    status = {(s, r.name): r.status for s, st in result.subjects.items() for r in st.steps}
    redone = {n for (s, n), v in status.items() if v == "done" and s == "sub-04"}
    assert {"mwf", "register", "tracts", "calibrate", "fusion", "stats"} <= redone  # every step reading the MESE
    assert {status[("sub-04", n)] for n in ("dki", "qsm", "qpm")} == {"skipped"}  # their inputs did not change
    assert {v for (s, _), v in status.items() if s == "sub-05"} == {"skipped", "missing"}
    assert result.group.status == "done"
    assert set(pd.read_csv(deriv / "group/tracts_long.csv")["subject"]) == {"sub-04", "sub-05"}
    # a step that reads the registrations is redone when their seed changes, once
    assert run_step(root / "sub-05", deriv, "stats", preset="affine", seed=1).status == "done"
    assert run_step(root / "sub-05", deriv, "stats", preset="affine", seed=1).status == "skipped"


def test_second_cohort_on_the_same_output_is_refused_until_the_first_dies(bids, tmp_path, capsys):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from napari_myelin.workflows.cohort import cohort_lock\n"
         "with cohort_lock(Path(sys.argv[1])):\n    print('locked', flush=True); time.sleep(60)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["cohort", str(bids), "--out", str(tmp_path), "--subjects", "sub-01"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"napari-myelin cohort: error: {tmp_path}: another cohort (pid {holder.pid} on ")
        assert err.endswith("is writing to this output folder; wait for it to finish or choose another --out.")
        assert not (tmp_path / "cohort_status.tsv").exists()
    finally:
        holder.kill()  # SIGKILL: the system frees the lock
        holder.wait()
    from napari_myelin.workflows.cohort import cohort_lock

    with cohort_lock(tmp_path) as lock:
        assert f"pid {os.getpid()} on " in lock.read_text()


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([str(Path(sys.executable).with_name("dask")), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_scheduler_and_scheduler_file_attach_to_running_processes(killed_run, bids, tmp_path, capsys):
    from distributed import Client

    _, out, _ = killed_run
    deriv = tmp_path / "deriv"
    shutil.copytree(out, deriv)
    (deriv / "sub-01/.napari-myelin/steps/stats.json").unlink()
    sched_file = tmp_path / "scheduler.json"
    scheduler = _start(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                        "--scheduler-file", str(sched_file)])
    worker = None
    try:
        for _ in range(300):
            if sched_file.exists() and sched_file.stat().st_size:
                break
            time.sleep(0.1)
        address = json.loads(sched_file.read_text())["address"]
        worker = _start(["worker", address, "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard"])
        with Client(address, timeout=30) as client:
            client.wait_for_workers(1, timeout=60)
        assert main(["cohort", str(bids), "--out", str(deriv), "--preset", "affine", "--scheduler", address]) == 0
        assert f"cluster: scheduler {address}" in capsys.readouterr().err
        status = _status(deriv).set_index(["subject", "step"])["status"]
        assert status[("sub-01", "stats")] == "done" and status[("group", "group")] == "done"
        assert set(status.drop([("sub-01", "stats"), ("group", "group")])) <= {"skipped", "missing"}
        assert main(["cohort", str(bids), "--out", str(deriv), "--preset", "affine",
                     "--scheduler-file", str(sched_file)]) == 0
        assert "done" not in set(_status(deriv)["status"])
    finally:
        for proc in (worker, scheduler):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)


def test_missing_scheduler_is_one_sentence(bids, tmp_path, capsys):
    assert main(["cohort", str(bids), "--out", str(tmp_path / "o"), "--scheduler-file", str(tmp_path / "none.json")]) == 2
    assert capsys.readouterr().err.strip() == (f"napari-myelin cohort: error: {tmp_path / 'none.json'}: scheduler file "
                                               "not found; start 'dask scheduler --scheduler-file' first.")


def test_jobqueue_without_dask_jobqueue_is_one_sentence(bids, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)  # import fails as when it is not installed
    args = ["cohort", str(bids), "--out", str(tmp_path / "o"), "--jobqueue", "slurm", "--cores", "4", "--memory", "8GB"]
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == (
        "napari-myelin cohort: error: --jobqueue slurm: needs dask-jobqueue, which is not installed; install it "
        "with pip install 'napari-myelin[cluster]'.")
    assert not (tmp_path / "o").exists()


def test_jobqueue_slurm_job_script(bids, tmp_path, capsys):
    """With dask-jobqueue installed, the SLURM job script carries the job's resources (nothing is
    submitted); without it, the one sentence of the test above."""
    import importlib.util

    if importlib.util.find_spec("dask_jobqueue") is None:
        assert main(["cohort", str(bids), "--out", str(tmp_path), "--jobqueue", "slurm", "--cores", "4",
                     "--memory", "8GB"]) == 2
        assert "pip install 'napari-myelin[cluster]'" in capsys.readouterr().err
        return
    from napari_myelin.workflows.cohort_cluster import jobqueue_cluster

    cluster = jobqueue_cluster("slurm", cores=4, memory="8GB", walltime="01:30:00", queue="short", threads_per_worker=2)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for line in ("#SBATCH -p short", "#SBATCH --cpus-per-task=4", "#SBATCH --mem=8G", "#SBATCH -t 01:30:00",
                 "export OMP_NUM_THREADS=2", "export ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=2"):
        assert line in script.splitlines(), line
    assert "--nthreads 2" in script and "--nworkers 2" in script
    assert main(["cohort", str(bids), "--out", str(tmp_path / "o"), "--jobqueue", "slurm", "--memory", "8GB"]) == 2
    assert "give --cores and --memory of one job" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("extra, sentence", [
    (["--subjects", "sub-09"], "has no folder sub-09; --subjects takes names of its sub-XX folders."),
    (["--workers", "0"], "--workers 0: give at least 1 worker."),
    (["--memory-limit", "lots"], "--memory-limit lots: not a size; write it like 6GB or 500MB."),
    (["--participants", "PARTS"], "has no participant_id column; BIDS participants.tsv starts with participant_id."),
    (["--normative", "NOPE"], "is not a normative model (no model.json); build one with 'napari-myelin normative build'."),
])
def test_bad_arguments_exit_2_with_one_sentence(bids, tmp_path, capsys, extra, sentence):
    parts = tmp_path / "participants.tsv"
    parts.write_text("id\tage\nsub-01\t3\n")
    extra = [str(parts) if e == "PARTS" else str(tmp_path / "nope") if e == "NOPE" else e for e in extra]
    out = tmp_path / "o"
    assert main(["cohort", str(bids), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("napari-myelin cohort: error: ") and err.endswith(sentence) and "\n" not in err
    assert not out.exists()


def test_not_a_bids_root(tmp_path, capsys):
    assert main(["cohort", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "not a folder; give a BIDS root that holds sub-XX folders." in capsys.readouterr().err
    assert main(["cohort", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "holds no sub-XX folder" in capsys.readouterr().err


def test_normative_model_and_covariates_reach_every_stats_step(killed_run, bids, tmp_path, capsys):
    """``cohort --normative MODEL --participants P``: each subject's stats step writes tracts_z.csv, scored with
    its covariates from P (sub-03's age is n/a in the BIDS participants.tsv, so only P can give it)."""
    from napari_myelin.workflows.normative import build_normative_model

    _, out, _ = killed_run
    controls = tmp_path / "controls"
    for i, sub in enumerate(("sub-01", "sub-02", "sub-03", "sub-01")):
        (controls / f"sub-c{i}").mkdir(parents=True)
        shutil.copy(out / sub / "tracts.csv", controls / f"sub-c{i}" / "tracts.csv")
    ages = "participant_id\tage\nsub-c0\t30\nsub-c1\t40\nsub-c2\t50\nsub-c3\t60\n"
    (controls / "participants.tsv").write_text(ages)
    model = tmp_path / "model"
    build_normative_model(controls, model, covariates=["age"], voxelwise=False, synthetic=True, name="cohort test")
    given = tmp_path / "participants.tsv"
    given.write_text(PARTICIPANTS.replace("sub-03\tn/a", "sub-03\t45"))
    assert main(["cohort", str(bids), "--out", str(out), *FAST, "--normative", str(model),
                 "--participants", str(given)]) == 0
    # the stats steps only, and the group step (its inputs are the stats manifests)
    assert "3 of 3 subjects succeeded, 4 steps computed" in capsys.readouterr().out
    for sub, age in (("sub-01", "34"), ("sub-02", "51"), ("sub-03", "45")):
        scored = pd.read_csv(out / sub / "tracts_z.csv")
        assert set(scored["normative_model"]) == {"SYNTHETIC cohort test"} and scored["z"].notna().any()
        key = json.loads((out / sub / ".napari-myelin/steps/stats.json").read_text())["key"]
        assert key["parameters"]["covariates"] == {"age": age}
    assert main(["cohort", str(bids), "--out", str(out), *FAST]) == 0  # without a model: no z-score, no flag
    assert not any((out / sub / "tracts_z.csv").exists() for sub in ("sub-01", "sub-02", "sub-03"))
