"""The notebooks run headlessly on small data, write only into a temporary directory, and
are committed without outputs."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
TRACE = ROOT / "traces" / "nasa_ksc_jul1995_1min.csv"
# The moving-average-only policy: the full chain refits ARIMA every step, ~50 s for three
# hours of replay here, too slow for a test budget.
EXAMPLE = ROOT / "examples" / "scalingpolicy-moving-average.yaml"
BUDGET_SECONDS = 120


def parameters_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    return cell


def inject(nb: nbformat.NotebookNode, **values: Any) -> None:
    """Rewrite the parameters cell: the defaults, then the overrides (as papermill does)."""
    cell = parameters_cell(nb)
    overrides = "\n".join(f"{name} = {value!r}" for name, value in values.items())
    cell.source = f"{cell.source}\n\n# Injected by the test.\n{overrides}\n"


def run(name: str, tmp_path: Path, **values: Any) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    inject(nb, small=True, **values)
    started = time.monotonic()
    # cwd is the temporary directory: a relative path that escaped the parameters would
    # write there, never into the repository.
    NotebookClient(nb, timeout=BUDGET_SECONDS, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    elapsed = time.monotonic() - started
    assert elapsed < BUDGET_SECONDS, f"{name} took {elapsed:.0f} s"
    return nb


def outputs_text(nb: nbformat.NotebookNode) -> str:
    return json.dumps([c.get("outputs", []) for c in nb.cells if c.cell_type == "code"])


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_committed_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, path.name
    parameters = parameters_cell(nb)
    assert "small = False" in parameters.source


def test_notebooks_exist() -> None:
    assert {p.name for p in NOTEBOOKS.glob("*.ipynb")} >= {"train_model.ipynb",
                                                            "backtest_policy.ipynb"}


@pytest.mark.slow
def test_train_model_small(tmp_path: Path) -> None:
    models = tmp_path / "models"
    nb = run("train_model.ipynb", tmp_path, trace_path=str(TRACE), models_dir=str(models),
             model_name="nb-test")
    artifact = models / "nb-test"
    assert {p.name for p in artifact.iterdir()} >= {"weights.pt", "metadata.json",
                                                     "MODEL_CARD.md"}
    text = outputs_text(nb)
    assert "Model card" in text
    # The held-back comparison of the four models and the chain, as a table, also in the card.
    assert "MAPE / seasonal naive" in text
    for name in ("seasonal_naive", "| ma |", "| arima |", "| lstm |", "| chain |"):
        assert name in text
    assert "Held-back comparison" in (artifact / "MODEL_CARD.md").read_text()

    from forescale.core.forecast.lstm import LSTMForecaster

    assert LSTMForecaster.load(artifact).metadata.epochs == 2


def test_training_never_writes_over_an_artifact_by_default(tmp_path: Path) -> None:
    """Run as it comes, the notebook once overwrote the committed models/nasa-jul1995 (a
    model trained on other dates than its card and the README say). Its default name is
    new, and an existing artifact stops it before training unless overwrite = True."""
    parameters = parameters_cell(nbformat.read(NOTEBOOKS / "train_model.ipynb",
                                               as_version=4)).source
    assert 'model_name = "nasa-jul1995"' not in parameters
    assert "overwrite = False" in parameters
    taken = tmp_path / "models" / "taken"
    taken.mkdir(parents=True)
    (taken / "weights.pt").write_bytes(b"a model someone trained")
    started = time.monotonic()
    with pytest.raises(CellExecutionError, match="already holds an artifact"):
        run("train_model.ipynb", tmp_path, trace_path=str(TRACE),
            models_dir=str(tmp_path / "models"), model_name="taken")
    assert time.monotonic() - started < BUDGET_SECONDS / 2  # refused before training
    assert (taken / "weights.pt").read_bytes() == b"a model someone trained"


@pytest.mark.slow
def test_backtest_policy_small(tmp_path: Path) -> None:
    nb = run("backtest_policy.ipynb", tmp_path, trace_path=str(TRACE), policy_file=str(EXAMPLE))
    text = outputs_text(nb)
    assert "image/png" in text
    assert not list(tmp_path.iterdir())  # a backtest writes nothing
