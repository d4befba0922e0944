"""``forescale size`` through :func:`forescale.cli.main`, and once as a real process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from forescale.cli import main
from forescale.core.sizing import replicas_for_cost, replicas_for_slo
from forescale.core.spec import SLO, Costs

BASE = ["size", "--arrival-rate", "80", "--service-rate", "10"]


def test_human_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*BASE, "--slo-wait", "50ms", "--slo-percentile", "0.95"]) == 0
    out = capsys.readouterr().out
    assert "12 replicas (SloSized)" in out
    assert "66.7 %" in out  # utilisation 80 / 120
    assert "P(wait > 50 ms)" in out
    assert "1.89 %" in out  # P(W_q > 50 ms) at c = 12


def test_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*BASE, "--json"]) == 0
    out = capsys.readouterr().out
    document = json.loads(out)
    assert out.count("\n") == 1  # one object on one line
    assert document["replicas"] == 12
    assert document["mode"] == "slo"
    assert document["reason"] == "SloSized"
    assert document["cost"] is None
    assert document["input"]["slo"] == {"wait_seconds": 0.05, "percentile": 0.95,
                                        "max_utilisation": 0.95}
    expected = replicas_for_slo(80.0, 10.0, SLO()).to_dict()
    assert {k: document[k] for k in expected} == expected


def test_options_reach_the_sizing(capsys: pytest.CaptureFixture[str]) -> None:
    args = [*BASE, "--slo-wait", "200ms", "--slo-percentile", "0.99",
            "--max-utilisation", "0.5", "--max-replicas", "15", "--json"]
    assert main(args) == 0
    document = json.loads(capsys.readouterr().out)
    # At most 50 % utilisation needs 16 > 15 replicas: the cap binds.
    assert (document["replicas"], document["reason"]) == (15, "MaxReplicasBound")


def test_cost_mode(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["size", "--arrival-rate", "1e4", "--service-rate", "10",
            "--cost-per-replica-hour", "0.05", "--cost-per-violation", "0.001"]
    assert main([*args, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    expected = replicas_for_cost(1e4, 10.0, SLO(), Costs(0.05, 0.001))
    assert document["mode"] == "cost"
    assert document["replicas"] == expected.replicas
    assert document["cost"]["total_cost_per_hour"] == pytest.approx(
        expected.cost.total_cost_per_hour if expected.cost else -1.0)
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"{expected.replicas} replicas (CostMinimised)" in out
    assert "total cost" in out


def _strict(constant: str) -> object:
    raise AssertionError(f"{constant} is not JSON")


def test_json_output_is_json_when_a_cost_overflows(
        capsys: pytest.CaptureFixture[str]) -> None:
    # Capped far below stability, every request is late: 3.6e9 late requests an hour at
    # 1e300 each overflow to an infinite cost, which json.dumps wrote as Infinity.
    args = ["size", "--arrival-rate", "1e6", "--service-rate", "1", "--max-replicas", "3",
            "--cost-per-replica-hour", "1", "--cost-per-violation", "1e300", "--json"]
    assert main(args) == 0
    document = json.loads(capsys.readouterr().out, parse_constant=_strict)
    assert (document["replicas"], document["reason"]) == (3, "MaxReplicasBound")
    assert document["cost"]["violation_cost_per_hour"] is None
    assert document["cost"]["total_cost_per_hour"] is None
    assert document["cost"]["replica_cost_per_hour"] == 3.0


@pytest.mark.parametrize(("args", "needle"), [
    (["--arrival-rate", "-5", "--service-rate", "10"], "'--arrival-rate'"),
    (["--arrival-rate", "nan", "--service-rate", "10"], "not a finite number"),
    (["--arrival-rate", "5", "--service-rate", "0"], "'--service-rate'"),
    (["--arrival-rate", "5", "--service-rate", "-1"], "'--service-rate'"),
    (["--arrival-rate", "5", "--service-rate", "inf"], "'--service-rate'"),
    (["--arrival-rate", "5", "--service-rate", "10", "--slo-percentile", "1"],
     "'--slo-percentile'"),
    (["--arrival-rate", "5", "--service-rate", "10", "--slo-percentile", "0"],
     "'--slo-percentile'"),
    (["--arrival-rate", "5", "--service-rate", "10", "--slo-wait", "-1s"],
     "'--slo-wait'"),
    (["--arrival-rate", "5", "--service-rate", "10", "--slo-wait", "0.05"],
     "'0.05' has no unit"),
    (["--arrival-rate", "5", "--service-rate", "10", "--max-utilisation", "1.5"],
     "'--max-utilisation'"),
    (["--arrival-rate", "5", "--service-rate", "10", "--cost-per-violation", "1"],
     "only --cost-per-violation was given"),
    (["--arrival-rate", "5", "--service-rate", "10", "--cost-per-replica-hour", "1"],
     "only --cost-per-replica-hour was given"),
    (["--arrival-rate", "five", "--service-rate", "10"], "'five' is not a number"),
    (["--service-rate", "10"], "--arrival-rate"),
])
def test_bad_input_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str],
                                          args: list[str], needle: str) -> None:
    assert main(["size", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err
    assert err.count("\n") == 1, err
    assert err.startswith("forescale: ")
    assert needle in err
    assert "Traceback" not in err


def test_real_process() -> None:
    exe = Path(sys.executable).with_name("forescale")
    assert exe.exists(), f"console script missing next to {sys.executable}"
    ok = subprocess.run([str(exe), *BASE, "--json"], capture_output=True, text=True,
                        timeout=60, check=False)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["replicas"] == 12
    bad = subprocess.run([str(exe), "size", "--arrival-rate", "-1", "--service-rate", "10"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert bad.stderr.count("\n") == 1
    assert "Traceback" not in bad.stderr
