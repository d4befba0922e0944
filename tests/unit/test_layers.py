"""The layers contract is enforced: an upward import (core -> controller, adapters -> cli,
controller -> backtest) fails ``lint-imports`` (run on a copy of the package)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint(tmp_path: Path, module: str, line: str) -> subprocess.CompletedProcess[str]:
    shutil.copytree(ROOT / "operator" / "forescale", tmp_path / "src" / "forescale",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "src" / "forescale" / module
    target.write_text(target.read_text() + f"\n{line}\n")
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], check=False, cwd=tmp_path,
                          text=True,
                          capture_output=True, timeout=120,
                          env={"PYTHONPATH": str(tmp_path / "src"), "PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize(("module", "line"), [
    ("core/window.py", "import forescale.controller.worker"),
    ("adapters/prometheus.py", "import forescale.cli"),
    ("controller/status.py", "import forescale.backtest.runner"),
    ("policy.py", "import forescale.adapters.prometheus"),
])
def test_an_upward_import_breaks_the_layers(tmp_path: Path, module: str, line: str) -> None:
    result = _lint(tmp_path, module, line)
    assert result.returncode != 0, result.stdout
    assert "Layers: cli -> controller | backtest -> adapters | policy | trace -> core BROKEN" \
        in result.stdout


def test_the_tree_as_it_is_keeps_them(tmp_path: Path) -> None:
    result = _lint(tmp_path, "core/window.py", "")
    assert result.returncode == 0, result.stdout
