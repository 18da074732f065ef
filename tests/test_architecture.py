"""The house rules: imports point downwards, no UI outside widgets/adapters, short modules and
functions, one public API, the manifest at the repository root identical to the packaged one."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import napari_myelin
from napari_myelin import api

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(napari_myelin.__file__).resolve().parent
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 100


def long_code(paths) -> list[str]:
    """Modules over MAX_MODULE_LINES lines and functions over MAX_FUNCTION_LINES lines."""
    found = []
    for path in paths:
        text = Path(path).read_text()
        n = len(text.splitlines())
        if n > MAX_MODULE_LINES:
            found.append(f"{path}: {n} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(f"{path}:{node.lineno} {node.name}: {length} lines")
    return found


def test_no_long_module_or_function():
    offenders = long_code(sorted(PACKAGE.rglob("*.py")))
    assert not offenders, "split these by what they do:\n" + "\n".join(offenders)


def test_long_code_check_finds_offenders(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    long_fn = tmp_path / "long.py"
    long_fn.write_text(f"def too_long():\n{body}\n")
    big = tmp_path / "big.py"
    big.write_text("\n".join(f"y{i} = {i}" for i in range(MAX_MODULE_LINES + 1)) + "\n")
    short = tmp_path / "short.py"
    short.write_text("def fine():\n    return 1\n")
    found = long_code([long_fn, big, short])
    assert found == [f"{long_fn}:1 too_long: {MAX_FUNCTION_LINES + 1} lines", f"{big}: {MAX_MODULE_LINES + 1} lines"]


def test_import_contracts_kept():
    """import-linter contracts of pyproject.toml: layers, estimator independence, no UI in the core."""
    lint = Path(sys.executable).with_name("lint-imports")
    run = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    contracts = (ROOT / "pyproject.toml").read_text().count("[[tool.importlinter.contracts]]")
    assert contracts >= 4
    assert run.stdout.count(" KEPT") == contracts and " BROKEN" not in run.stdout


def test_root_manifest_is_the_packaged_manifest():
    assert (ROOT / "napari.yaml").read_bytes() == (PACKAGE / "napari.yaml").read_bytes()


def test_public_api_names_resolve_to_their_home_modules():
    entry_points = {"myelin_water", "fit_t2_distribution", "t2_parts", "fit_dki", "fit_qsm", "fit_vfa",
                    "myelin_map", "make_phantom", "fuse", "run_subject"}
    assert entry_points <= set(api.__all__)
    for name in api.__all__:
        obj = getattr(api, name)
        home = importlib.import_module(obj.__module__)
        assert getattr(home, name) is obj, name
        assert obj.__module__.split(".")[1] not in {"widgets", "cli", "core"}, name
