"""Durations on the command line always take a unit; a bare number says it needs one."""

from __future__ import annotations

import pytest

from forescale.cli import main
from forescale.cli.options import format_duration, parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("50ms", 0.05), ("900s", 900.0), ("15m", 900.0), ("2h", 7200.0), ("1d", 86400.0),
    ("1.5m", 90.0), (" 15m ", 900.0),
])
def test_durations_with_units(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["15", "0", "900", "1.5"])
def test_a_bare_number_is_refused_and_told_why(text: str) -> None:
    with pytest.raises(ValueError, match="has no unit") as info:
        parse_duration(text)
    assert f"{text}s" in str(info.value)  # and shows how to write it


@pytest.mark.parametrize("text", ["", "m", "-5m", "15 minutes", "1e3s", "15m30s"])
def test_not_durations(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize("seconds", [0.05, 1.0, 90.0, 900.0, 3600.0, 5400.0, 86400.0, 0.25])
def test_format_reads_back(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


def test_format_is_short() -> None:
    assert [format_duration(s) for s in (0.05, 120.0, 900.0, 7200.0, 86400.0, 90.0)] == [
        "50ms", "2m", "15m", "2h", "1d", "90s"]


@pytest.mark.parametrize("argv", [
    ["size", "--arrival-rate", "5", "--service-rate", "10", "--slo-wait", "0.05"],
    ["forecast", "--trace", "x.csv", "--at", "0", "--horizon", "15"],
    ["backtest", "--trace", "x.csv", "--startup", "120"],
    ["backtest", "--prometheus-url", "http://127.0.0.1:1", "--query", "up", "--since", "14"],
])
def test_every_command_refuses_bare_numbers(argv: list[str],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has no unit" in err, err


def test_json_is_a_flag_everywhere(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    """--json never names a file (that is --out): a path after it is an extra argument."""
    assert main(["backtest", "--trace", "t.csv", "--json", "out.json"]) == 2
    assert "unexpected extra argument (out.json)" in capsys.readouterr().err
