"""CLI inputs that once gave a traceback or hung (issue 12's review): each is now one line
and exit code 2 (or a capped answer), within a second or two."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from forescale.cli import main

ROOT = Path(__file__).resolve().parents[2]
TRACE = str(ROOT / "traces" / "nasa_ksc_jul1995_1min.csv")

BILLION_LAUGHS = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]"
       for i in range(8)])


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    began = time.perf_counter()
    code = main(args)
    assert time.perf_counter() - began < 20  # the trace load is most of it
    captured = capsys.readouterr()
    return code, captured.err + captured.out


@pytest.mark.parametrize(("args", "message"), [
    (["train", "--trace", TRACE, "--window", "1000000000000", "--out", "/tmp/x"],
     "'--window': 1000000000000 is not in the range"),
    (["train", "--trace", TRACE, "--hidden", "100000000", "--out", "/tmp/x"],
     "'--hidden': 100000000 is not in the range"),
    (["forecast", "--trace", TRACE, "--at", "nan", "--horizon", "15m"],
     "timestamp 'nan' is not between 1970 and 9999"),
    (["forecast", "--trace", TRACE, "--at", "1e300", "--horizon", "15m"],
     "timestamp '1e300' is not between 1970 and 9999"),
    # A year-715 start (ValueError) and a deadline past the clock (OverflowError).
    (["backtest", "--prometheus-url", "http://127.0.0.1:9", "--query", "up", "--since",
      "1000000d", "--step", "1d", "--until", "1700000000"],
     "--since 1000000d reaches back before 1970"),
    (["backtest", "--prometheus-url", "http://127.0.0.1:9", "--query", "up", "--since",
      "1d", "--prometheus-timeout", "99999999999999d"],
     "'--prometheus-timeout': must be at most 1h"),
])
def test_bad_flags_are_one_line_and_exit_2(args: list[str], message: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, text = _run(args, capsys)
    assert code == 2, text
    assert message in text and "Traceback" not in text


@pytest.mark.parametrize("text", [BILLION_LAUGHS, "[" * 5000 + "]" * 5000])
def test_hostile_policy_files_are_refused(tmp_path: Path, text: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(text)
    code, out = _run(["backtest", "--trace", TRACE, "--policy", "forescale",
                      "--policy-file", str(policy)], capsys)
    assert code == 2, out
    assert "policy file" in out and "Traceback" not in out
    assert "lol" not in out  # the expansion is never printed
    assert len(out) < 500


@pytest.mark.parametrize("service_rate", ["1e-300", "1e-320"])
def test_a_vanishing_service_rate_is_capped_at_once(service_rate: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    began = time.perf_counter()
    code = main(["size", "--arrival-rate", "1", "--service-rate", service_rate])
    assert time.perf_counter() - began < 2
    assert code == 0
    assert "MaxReplicasBound" in capsys.readouterr().out
