"""``forescale forecast`` through :func:`forescale.cli.main`, and once as a real process."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from forescale.cli import main
from forescale.core.series import Series
from forescale.trace import format_timestamp

#: The ``make_seasonal`` fixture (tests/conftest.py).
SeasonalFactory = Callable[..., Series]

NASA_TRACE = Path(__file__).resolve().parents[2] / "traces" / "nasa_ksc_jul1995_1min.csv"
#: The first four days of the NASA trace: 1995-07-01T04:00Z up to 1995-07-05T04:00Z.
SLICE_ROWS = 4 * 1440
AT = "1995-07-04T15:00:00Z"


@pytest.fixture(scope="module")
def trace_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A slice of the real trace: a whole month takes ~0.3 s to parse per command."""
    path = tmp_path_factory.mktemp("trace") / "nasa_4days.csv"
    with NASA_TRACE.open() as fh:
        lines = [next(fh) for _ in range(SLICE_ROWS + 1)]
    path.write_text("".join(lines))
    return path


@pytest.fixture(scope="module")
def base(trace_csv: Path) -> list[str]:
    return ["forecast", "--trace", str(trace_csv), "--at", AT, "--horizon", "15m"]


def _json(capsys: pytest.CaptureFixture[str], args: list[str]) -> dict[str, object]:
    assert main([*args, "--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    document: dict[str, object] = json.loads(out)
    return document


def _one_line_error(capsys: pytest.CaptureFixture[str], args: list[str], code: int,
                    needle: str) -> None:
    assert main(args) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("forescale: ")
    assert needle in err
    assert "Traceback" not in err


def test_chain_table(capsys: pytest.CaptureFixture[str], base: list[str]) -> None:
    assert main(base) == 0
    out = capsys.readouterr().out
    assert "forecast by arima, 90% interval" in out
    for column in ("time (UTC)", "mean", "lower", "upper", "actual"):
        assert column in out
    assert "1995-07-04T15:00:00Z" in out
    assert "1995-07-04T15:14:00Z" in out
    assert "1995-07-04T15:15:00Z" not in out
    assert "forecast by arima after lstm: ArtifactMissing" in out
    assert "ma     NotTried" in out


def test_json_is_the_chain_result(capsys: pytest.CaptureFixture[str], base: list[str]) -> None:
    document = _json(capsys, [*base, "--model", "ma", "--confidence", "0.8"])
    assert document["reason"] == "Forecasted"
    assert document["served_by"] == "ma"
    forecast = document["forecast"]
    assert isinstance(forecast, dict)
    assert forecast["level"] == 0.8
    assert len(forecast["mean"]) == 15
    assert format_timestamp(forecast["start_seconds"]) == AT
    assert [s["model"] for s in document["stages"]] == ["ma"]  # type: ignore[attr-defined]


def test_no_look_ahead(capsys: pytest.CaptureFixture[str], tmp_path: Path, trace_csv: Path,
                      base: list[str]) -> None:
    # The same forecast from the whole trace and from the trace cut at --at.
    cut = tmp_path / "cut.csv"
    lines = trace_csv.read_text().splitlines()
    end = lines.index(next(line for line in lines if line.startswith(AT)))
    cut.write_text("\n".join(lines[:end]) + "\n")
    whole = _json(capsys, [*base, "--model", "arima"])
    truncated = _json(capsys, ["forecast", "--trace", str(cut), "--at", AT,
                               "--horizon", "15m", "--model", "arima"])
    assert whole == truncated


def test_horizon_rounds_up_to_whole_steps(capsys: pytest.CaptureFixture[str],
                                          trace_csv: Path) -> None:
    args = ["forecast", "--trace", str(trace_csv), "--at", AT, "--horizon", "90s",
            "--model", "ma"]
    forecast = _json(capsys, args)["forecast"]
    assert isinstance(forecast, dict)
    assert len(forecast["mean"]) == 2


@pytest.mark.parametrize("at", ["1995-06-30T00:00:00Z", "1995-07-05T04:01:00Z",
                                "1995-07-01T04:00:00Z"])
def test_at_outside_the_trace(capsys: pytest.CaptureFixture[str], trace_csv: Path,
                              at: str) -> None:
    args = ["forecast", "--trace", str(trace_csv), "--at", at, "--horizon", "15m"]
    _one_line_error(capsys, args, 2, "is outside the trace")


def test_bad_timestamp(capsys: pytest.CaptureFixture[str], trace_csv: Path) -> None:
    args = ["forecast", "--trace", str(trace_csv), "--at", "yesterday", "--horizon", "15m"]
    _one_line_error(capsys, args, 2, "not a timestamp")


def test_lstm_needs_a_model_path(capsys: pytest.CaptureFixture[str], base: list[str]) -> None:
    _one_line_error(capsys, [*base, "--model", "lstm"], 2, "--model lstm needs --lstm-model")


def test_missing_lstm_path_is_bad_input(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                        base: list[str]) -> None:
    args = [*base, "--lstm-model", str(tmp_path / "nowhere")]
    _one_line_error(capsys, args, 2, "does not exist")


def test_bad_csv(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,requests\n1995-07-01T04:00:00Z,1\n1995-07-01T04:01:00Z,x\n")
    args = ["forecast", "--trace", str(bad), "--at", "1995-07-01T04:01:00Z",
            "--horizon", "1m"]
    _one_line_error(capsys, args, 2, "requests is not a number")


def test_no_forecaster_could_serve_exits_1(capsys: pytest.CaptureFixture[str],
                                           trace_csv: Path) -> None:
    # 30 minutes into the trace: ARIMA needs an hour of history.
    args = ["forecast", "--trace", str(trace_csv), "--at", "1995-07-01T04:30:00Z",
            "--horizon", "15m", "--model", "arima"]
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "arima  HistoryTooShort" in captured.out
    assert captured.err == ("forescale: error: no forecaster could serve "
                            "(arima: HistoryTooShort)\n")


def test_mismatched_lstm_artifact_falls_back(capsys: pytest.CaptureFixture[str],
                                             tmp_path: Path, base: list[str],
                                             make_seasonal: SeasonalFactory) -> None:
    from forescale.core.forecast.lstm import train_lstm

    # Trained at a 5-minute step; the NASA trace is at 1 minute.
    artifact = train_lstm(make_seasonal(), epochs=1, seed=0, hidden_size=8).save(
        tmp_path / "lstm")
    chain = _json(capsys, [*base, "--lstm-model", str(artifact)])
    stages = chain["stages"]
    assert isinstance(stages, list)
    assert (stages[0]["reason"], chain["served_by"]) == ("ArtifactMismatch", "arima")
    assert main([*base, "--model", "lstm", "--lstm-model", str(artifact), "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["reason"] == "AllForecastersFailed"
    assert "lstm: ArtifactMismatch" in captured.err


def test_demo_moment_of_the_whole_trace(capsys: pytest.CaptureFixture[str]) -> None:
    # What `make demo` runs: the bundled month, forecast from the 20th.
    args = ["forecast", "--trace", str(NASA_TRACE), "--at", "1995-07-20T15:00:00Z",
            "--horizon", "15m", "--model", "chain"]
    document = _json(capsys, args)
    assert (document["reason"], document["served_by"]) == ("Forecasted", "arima")


def test_real_process(base: list[str]) -> None:
    exe = Path(sys.executable).with_name("forescale")
    assert exe.exists(), f"console script missing next to {sys.executable}"
    done = subprocess.run([str(exe), *base, "--model", "ma", "--json"], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    document = json.loads(done.stdout)
    assert (document["reason"], document["served_by"]) == ("Forecasted", "ma")


@pytest.mark.parametrize("model", ["ma", "arima"])
def test_an_lstm_model_with_a_model_that_ignores_it_is_a_usage_error(
        capsys: pytest.CaptureFixture[str], base: list[str], tmp_path: Path,
        model: str) -> None:
    """It was accepted and silently ignored (any existing path passed)."""
    (tmp_path / "README.md").write_text("not a model")
    assert main([*base, "--model", model, "--lstm-model", str(tmp_path / "README.md")]) == 2
    assert "--lstm-model is used only by --model lstm or chain" in capsys.readouterr().err


@pytest.mark.parametrize("horizon", ["10000d", "8d"])
def test_a_horizon_past_a_week_of_steps_is_refused(capsys: pytest.CaptureFixture[str],
                                                   trace_csv: Path, horizon: str) -> None:
    """15d for 15m: 10000d asked the moving average for 154 GiB (exit 1, MemoryError)."""
    assert main(["forecast", "--trace", str(trace_csv), "--at", AT, "--horizon", horizon,
                 "--model", "ma"]) == 2
    err = capsys.readouterr().err
    assert "--horizon" in err and "at most 10,080" in err and "MemoryError" not in err


def test_a_week_ahead_is_allowed(capsys: pytest.CaptureFixture[str], trace_csv: Path) -> None:
    assert main(["forecast", "--trace", str(trace_csv), "--at", AT, "--horizon", "7d",
                 "--model", "ma", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["forecast"]["mean"]) == 10_080

