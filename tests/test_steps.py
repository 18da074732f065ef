"""Resumable steps: skipped when valid outputs exist, redone when inputs change or outputs vanish."""

from __future__ import annotations

from napari_myelin.workflows.steps import StepRunner, summary_rows
from napari_myelin.io.volume import atomic_write_bytes


def _make_step(out, calls):
    def func(progress):
        calls.append(1)
        target = out / "a" / "result.txt"
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, b"42")
        return [target]

    return func


def test_second_run_does_no_work_until_inputs_or_outputs_change(tmp_path):
    src = tmp_path / "input.txt"
    src.write_text("v1")
    out = tmp_path / "out"
    calls = []
    for expected_status in ("done", "skipped"):
        runner = StepRunner(out)
        result = runner.run("demo", _make_step(out, calls), inputs=[src], parameters={"k": 1})
        assert result.status == expected_status
    assert len(calls) == 1
    # changed parameters -> redo
    assert StepRunner(out).run("demo", _make_step(out, calls), inputs=[src], parameters={"k": 2}).status == "done"
    # changed input content -> redo
    src.write_text("v2")
    assert StepRunner(out).run("demo", _make_step(out, calls), inputs=[src], parameters={"k": 2}).status == "done"
    # deleted output -> redo
    (out / "a" / "result.txt").unlink()
    assert StepRunner(out).run("demo", _make_step(out, calls), inputs=[src], parameters={"k": 2}).status == "done"
    # --force -> redo
    assert StepRunner(out, force=True).run("demo", _make_step(out, calls), inputs=[src],
                                           parameters={"k": 2}).status == "done"
    assert len(calls) == 5


def test_interrupted_step_leaves_no_manifest_and_reruns(tmp_path):
    out = tmp_path / "out"

    def broken(progress):
        raise KeyboardInterrupt

    runner = StepRunner(out)
    try:
        runner.run("demo", broken, inputs=[])
    except KeyboardInterrupt:
        pass
    assert not (out / ".napari-myelin" / "steps" / "demo.json").exists()
    calls = []
    assert StepRunner(out).run("demo", _make_step(out, calls), inputs=[]).status == "done"
    rows = summary_rows(StepRunner(out).results + [StepRunner(out).missing("qsm", "no GRE phase")])
    assert rows == [{"step": "qsm", "status": "missing", "seconds": 0.0, "outputs": 0, "note": "no GRE phase"}]
