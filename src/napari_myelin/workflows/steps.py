"""Resumable steps: skip work whose valid outputs exist, never leave a half-written result.

A step declares its input files and produces output files. After it succeeded, a small JSON
manifest (``.napari-myelin/steps/<name>.json`` in the subject's output folder) records the
SHA-256 of each input, the parameters and the list of outputs; it is written last, atomically.
On the next run a step is skipped when its manifest exists, its inputs and parameters are
unchanged and every output it lists is still there. An interrupted step has no manifest, so it
runs again (every output file is itself written atomically, see
:func:`napari_myelin.io.volume.atomic_write_bytes`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from napari_myelin.utils.progress import ProgressFn
from napari_myelin.io.volume import atomic_write_bytes, file_sha256


@dataclass
class StepResult:
    """What happened to one step: ``status`` is ``done``, ``skipped`` (valid outputs existed),
    ``missing`` (its inputs are not in the subject folder) or ``failed``."""

    name: str
    status: str
    seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)
    message: str = ""


def _digest(inputs: Sequence[Path], parameters: dict) -> dict:
    return {
        "inputs": {str(p): file_sha256(p) for p in sorted(map(Path, inputs)) if Path(p).is_file()},
        "parameters": json.loads(json.dumps(parameters, default=str)),
    }


class StepRunner:
    """Runs named steps in one output folder, with manifests for resuming.

    Parameters
    ----------
    out_dir : Path
        Folder of the subject's outputs; manifests go to ``out_dir/.napari-myelin/steps``.
    force : bool
        Redo every step even if valid outputs exist.
    """

    def __init__(self, out_dir: Path, *, force: bool = False) -> None:
        self.out_dir = Path(out_dir)
        self.force = force
        self.manifests = self.out_dir / ".napari-myelin" / "steps"
        self.results: list[StepResult] = []

    def _manifest(self, name: str) -> Path:
        return self.manifests / f"{name}.json"

    def is_valid(self, name: str, inputs: Sequence[Path], parameters: dict) -> bool:
        """Whether ``name`` ran before with the same inputs and parameters and its outputs exist."""
        path = self._manifest(name)
        if self.force or not path.exists():
            return False
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return False
        if saved.get("key") != _digest(inputs, parameters):
            return False
        return all((self.out_dir / o).exists() for o in saved.get("outputs", []))

    def outputs_of(self, name: str) -> list[Path]:
        """Outputs recorded for a step that completed (empty if it never did)."""
        path = self._manifest(name)
        if not path.exists():
            return []
        return [self.out_dir / o for o in json.loads(path.read_text(encoding="utf-8")).get("outputs", [])]

    def run(
        self,
        name: str,
        func: Callable[[ProgressFn | None], Sequence[Path]],
        *,
        inputs: Sequence[Path],
        parameters: dict | None = None,
        progress: ProgressFn | None = None,
    ) -> StepResult:
        """Run ``func(progress) -> output paths`` unless valid outputs exist; record the manifest."""
        parameters = parameters or {}
        if self.is_valid(name, inputs, parameters):
            result = StepResult(name, "skipped", 0.0, [str(p) for p in self.outputs_of(name)],
                                "valid outputs exist (use --force to redo)")
            self.results.append(result)
            return result
        start = time.perf_counter()
        outputs = [Path(p) for p in func(progress)]
        rel = [str(p.relative_to(self.out_dir)) for p in outputs]
        manifest = {"step": name, "key": _digest(inputs, parameters), "outputs": rel,
                    "seconds": round(time.perf_counter() - start, 2)}
        self.manifests.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self._manifest(name), json.dumps(manifest, indent=2).encode("utf-8"))
        result = StepResult(name, "done", time.perf_counter() - start, [str(p) for p in outputs])
        self.results.append(result)
        return result

    def missing(self, name: str, message: str) -> StepResult:
        """Record a step that cannot run because its inputs are absent."""
        result = StepResult(name, "missing", 0.0, [], message)
        self.results.append(result)
        return result


def summary_rows(results: Sequence[StepResult]) -> list[dict[str, Any]]:
    """Rows of the end-of-run summary table."""
    return [
        {"step": r.name, "status": r.status, "seconds": round(r.seconds, 1), "outputs": len(r.outputs),
         "note": r.message}
        for r in results
    ]
