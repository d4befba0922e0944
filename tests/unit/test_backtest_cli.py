"""``forescale backtest`` end to end on small traces: outputs, and one-line errors (exit 2)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml

from forescale.cli import main

T0 = datetime(1995, 7, 1, tzinfo=UTC)


def write_trace(path: Path, counts: list[int] | np.ndarray, *, step_seconds: int = 60,
                times: list[datetime] | None = None) -> Path:
    if times is None:
        times = [T0 + timedelta(seconds=step_seconds * i) for i in range(len(counts))]
    lines = ["timestamp,requests"]
    lines += [f"{t:%Y-%m-%dT%H:%M:%SZ},{c}" for t, c in zip(times, counts, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def daily_counts(days: float) -> np.ndarray:
    """Poisson counts with a daily cycle: enough like a trace for the world and the HPA."""
    minutes = np.arange(round(days * 1440))
    rate = 40 + 30 * np.sin(2 * np.pi * minutes / 1440)
    return np.random.default_rng(0).poisson(rate)


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    return err


def test_hpa_backtest_writes_json_plot_and_report(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    trace = write_trace(tmp_path / "t.csv", daily_counts(4.1))
    out = tmp_path / "out.json"
    report = tmp_path / "out.html"
    plot = tmp_path / "out.png"
    code = main(["backtest", "--trace", str(trace), "--policy", "hpa", "--out", str(out),
                 "--report", str(report), "--plot", str(plot), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "hpa 0.50" in captured.out and "oracle" in captured.out
    doc = json.loads(out.read_text())
    assert doc["parameters"]["warmup_seconds"] == 4 * 86400
    assert doc["parameters"]["scored_steps"] == round(0.1 * 1440)
    assert [p["name"] for p in doc["policies"]] == ["oracle"] + ["hpa"] * 13
    assert doc["policies"][0]["violation_rate"] == 0.0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = report.read_text()
    assert page.startswith("<!doctype html>") and "data:image/png;base64," in page
    assert "hpa 0.90" in page


def test_json_to_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = write_trace(tmp_path / "t.csv", daily_counts(4.05))
    assert main(["backtest", "--trace", str(trace), "--policy", "oracle", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [p["name"] for p in doc["policies"]] == ["oracle"]
    assert doc["equal_slo"] is None


@pytest.mark.parametrize(("argv", "message"), [
    (["--policy", "magic"], "Invalid value for '--policy'"),
    (["--service-rate", "0"], "must be greater than 0"),
])
def test_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                     message: str) -> None:
    trace = write_trace(tmp_path / "t.csv", [1, 2, 3])
    assert message in one_line_error(capsys, ["backtest", "--trace", str(trace), *argv])


def test_bad_traces(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def check(path: Path, message: str) -> None:
        err = one_line_error(capsys, ["backtest", "--trace", str(path), "--no-progress"])
        assert message in err

    check(write_trace(tmp_path / "short.csv", daily_counts(1)), "shorter than the warm-up")
    check(write_trace(tmp_path / "coarse.csv", daily_counts(6)[:2000], step_seconds=300),
          "300s steps")
    check(write_trace(tmp_path / "neg.csv", [1, 2, -3, 4]), "negative request count")
    times = [T0, T0 + timedelta(minutes=2), T0 + timedelta(minutes=1)]
    check(write_trace(tmp_path / "unsorted.csv", [1, 2, 3], times=times), "unsorted timestamp")
    times = [T0, T0 + timedelta(minutes=1), T0 + timedelta(minutes=1)]
    check(write_trace(tmp_path / "dup.csv", [1, 2, 3], times=times), "duplicate timestamp")
    times = [T0, T0 + timedelta(minutes=1), T0 + timedelta(minutes=5)]
    check(write_trace(tmp_path / "gap.csv", [1, 2, 3], times=times), "gap or irregular step")
    check(tmp_path / "missing.csv", "no such file")


def test_bad_policy_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = write_trace(tmp_path / "t.csv", daily_counts(4.1))
    policy = tmp_path / "p.yaml"
    policy.write_text(yaml.safe_dump({
        "apiVersion": "forescale.dev/v1alpha1", "kind": "ScalingPolicy",
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                    "name": "web"},
                 "metrics": {"query": "up"}, "serviceRatePerReplica": 10,
                 "slo": {"percentile": 1.5}}}))
    err = one_line_error(capsys, ["backtest", "--trace", str(trace), "--policy-file",
                                  str(policy)])
    assert err.endswith("spec.slo.percentile must be in (0, 1), got 1.5")


def _policy_file(path: Path, service_rate: float) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "forescale.dev/v1alpha1", "kind": "ScalingPolicy",
        "spec": {"scaleTargetRef": {"name": "web"}, "metrics": {"query": "up"},
                 "serviceRatePerReplica": service_rate,
                 "slo": {"waitSeconds": 0.1, "percentile": 0.99}}}))
    return path


@pytest.mark.parametrize(("flag", "value", "own"), [
    ("--service-rate", "10", "40"), ("--slo-wait", "50ms", "0.1"),
    ("--slo-percentile", "0.95", "0.99")])
def test_a_flag_that_disagrees_with_the_policy_file_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str,
        own: str) -> None:
    """A policy sized for 40 req/s per pod, replayed on pods that serve 10, violated the
    SLO at every step, with exit code 0 and no word of why."""
    trace = write_trace(tmp_path / "t.csv", daily_counts(4.1))
    policy = _policy_file(tmp_path / "p.yaml", 40)
    err = one_line_error(capsys, ["backtest", "--trace", str(trace), "--policy-file",
                                  str(policy), flag, value])
    assert f"{flag} {float(value) if flag != '--slo-wait' else 0.05:g} differs from the " \
           f"--policy-file's {float(own):g}" in err


def test_the_policy_files_service_is_the_one_simulated(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = write_trace(tmp_path / "t.csv", daily_counts(4.1))
    policy = _policy_file(tmp_path / "p.yaml", 40)
    out = tmp_path / "out.json"
    code = main(["backtest", "--trace", str(trace), "--policy-file", str(policy),
                 "--policy", "forescale", "--lstm-epochs", "0",
                 "--out", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    doc = json.loads(out.read_text())["parameters"]
    assert (doc["service_rate"], doc["slo_wait_seconds"], doc["slo_percentile"]) == \
        (40, 0.1, 0.99)


def test_bad_exclude_interval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = write_trace(tmp_path / "t.csv", daily_counts(4.1))
    err = one_line_error(capsys, ["backtest", "--trace", str(trace), "--exclude", "yesterday"])
    assert "START/END" in err


@pytest.mark.parametrize(("argv", "message"), [
    (["--until", "2024-01-01T00:00:00Z"], "--until is only for a Prometheus history"),
    (["--step", "5m"], "--step is only for a Prometheus history"),
    (["--prometheus-timeout", "5s", "--step", "1m"],
     "--step, --prometheus-timeout are only for a Prometheus history"),
    (["--p999-multiple", "50", "--no-rescale"], "cannot be given with --no-rescale"),
])
def test_flags_that_would_be_ignored_are_refused(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str],
                                                 argv: list[str], message: str) -> None:
    """They once were silently ignored: a --step 5m with --trace replayed 1m steps."""
    trace = write_trace(tmp_path / "t.csv", daily_counts(4.1))
    assert message in one_line_error(capsys, ["backtest", "--trace", str(trace), *argv])


def test_a_token_file_with_a_trace_is_refused(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    trace = write_trace(tmp_path / "t.csv", daily_counts(4.1))
    token = tmp_path / "token"
    token.write_text("secret")
    err = one_line_error(capsys, ["backtest", "--trace", str(trace),
                                  "--prometheus-bearer-token-file", str(token)])
    assert "--prometheus-bearer-token-file is only for a Prometheus history" in err


def test_output_paths_are_checked_before_the_replay(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from forescale.cli import backtest_cmd

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the replay ran")

    monkeypatch.setattr(backtest_cmd, "run_backtest", never)
    trace = write_trace(tmp_path / "t.csv", daily_counts(4.1))
    policy = tmp_path / "p.yaml"
    policy.write_text("x")
    (tmp_path / "file").write_text("x")
    run = ["backtest", "--trace", str(trace), "--policy", "hpa", "--no-progress"]
    for argv, message in [
        (["--out", str(tmp_path / "no" / "r.json")], f"--out {tmp_path}/no/r.json: "
                                                     f"{tmp_path}/no: no such directory"),
        (["--plot", str(tmp_path / "file" / "r.png")], "file: is not a directory"),
        (["--report", str(tmp_path / ("x" * 300))], "File name too long"),
        (["--out", str(trace)], f"--out {trace} is the --trace file: refusing to write"),
        (["--out", str(tmp_path / "." / "t.csv")], "is the --trace file"),
        (["--policy-file", str(policy), "--report", str(policy)],
         "is the --policy-file file"),
        (["--out", str(tmp_path / "r"), "--report", str(tmp_path / "r")],
         "is the --out file"),
    ]:
        assert message in one_line_error(capsys, [*run, *argv]), argv
    assert trace.read_text().startswith("timestamp,requests")


def test_an_output_over_the_token_file_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The results would have overwritten the Prometheus token they were read with."""
    token = tmp_path / "token"
    token.write_text("secret\n")
    err = one_line_error(capsys, [
        "backtest", "--prometheus-url", "http://127.0.0.1:9", "--query", "up", "--since",
        "1d", "--prometheus-bearer-token-file", str(token), "--out", str(token)])
    assert "is the --prometheus-bearer-token-file file" in err
    assert token.read_text() == "secret\n"


def test_a_failed_write_keeps_the_old_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from forescale.cli import files

    trace = write_trace(tmp_path / "t.csv", daily_counts(4.05))
    out = tmp_path / "out.json"
    out.write_text("the last run's results")
    out.chmod(0o640)

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    err = one_line_error(capsys, ["backtest", "--trace", str(trace), "--policy", "oracle",
                                  "--out", str(out), "--no-progress"])
    assert err == f"forescale: error: cannot write {out}: No space left on device"
    assert out.read_text() == "the last run's results"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "t.csv"]
    monkeypatch.undo()
    assert main(["backtest", "--trace", str(trace), "--policy", "oracle", "--out", str(out),
                 "--no-progress"]) == 0
    assert json.loads(out.read_text())["policies"][0]["name"] == "oracle"
    assert out.stat().st_mode & 0o777 == 0o640
