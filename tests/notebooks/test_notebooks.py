"""The notebooks run headlessly on small data, write only into a temporary directory, and
are committed without outputs."""

from __future__ import annotations

import json
import re
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
@pytest.mark.parametrize("service_rate", [10, 40])
def test_backtest_policy_small(tmp_path: Path, service_rate: int) -> None:
    """The simulated pods are the ones the policy plans for, as with the CLI: the notebook
    once replayed every policy on pods serving 10 req/s, so a policy for 40 req/s pods was
    judged at 99 % violations, and no one was told."""
    policy = tmp_path.parent / f"{tmp_path.name}-policy.yaml"
    policy.write_text(EXAMPLE.read_text().replace("serviceRatePerReplica: 10",
                                                  f"serviceRatePerReplica: {service_rate}"))
    nb = run("backtest_policy.ipynb", tmp_path, trace_path=str(TRACE), policy_file=str(policy))
    text = outputs_text(nb)
    assert "image/png" in text
    assert not list(tmp_path.iterdir())  # a backtest writes nothing
    rate = re.search(r"Distance to the limit: [0-9.]+ x oracle at ([0-9.]+)% violations", text)
    assert rate is not None and float(rate.group(1)) < 5.0, text[:3000]


@pytest.mark.slow
def test_train_model_from_prometheus_reads_only_what_it_has(tmp_path: Path) -> None:
    """From a real Prometheus holding 5 days (a young service; retention is 15 by default)
    the notebook asked for 28 and filled the 23 missing days with the first value: a flat,
    invented stretch trained on and reported as data. The URL's credentials went into the
    model card, and from models/ into the image. Now it trains on the days there are and
    writes the URL without them."""
    from forescale.trace import load_trace
    from tests.support.prometheus import CounterSeries, running_prometheus

    trace = load_trace(TRACE)
    days = 5
    now = 60.0 * (time.time() // 60.0)
    start = trace.start_seconds + DAY_OFFSET
    history = CounterSeries.from_trace(trace, start=start, end=start + days * 86400.0,
                                       shift_seconds=now - days * 86400.0 - start,
                                       labels={"job": "web"}, scrape_interval_seconds=30)
    models = tmp_path / "models"
    with running_prometheus(series=[history]) as server:
        url = server.url.replace("http://", "http://forescale:s3cr3t@")
        nb = run("train_model.ipynb", tmp_path, prometheus_url=url, prometheus_days=28,
                 prometheus_query='sum(rate(http_requests_total{job="web"}[2m]))',
                 models_dir=str(models), model_name="from-prometheus")
    text = outputs_text(nb)
    had = re.search(r"Prometheus had ([0-9.]+) of the 28 days asked for", text)
    assert had is not None and abs(float(had.group(1)) - days) < 0.1, text[:2000]
    points = re.search(r"([0-9,]+) points; training on", text)
    assert points is not None and int(points.group(1).replace(",", "")) <= days * 1440 + 5
    card = (models / "from-prometheus" / "MODEL_CARD.md").read_text()
    assert "s3cr3t" not in card and "s3cr3t" not in text
    assert server.url in card


#: Where the notebook's Prometheus history starts in the trace: a weekday, past the outages.
DAY_OFFSET = 7 * 86400.0
