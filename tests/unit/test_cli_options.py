"""Durations on the command line always take a unit; a bare number says it needs one."""

from __future__ import annotations

import click
import pytest

from forescale.cli import main
from forescale.cli.options import Duration, FiniteFloat, format_duration, parse_duration


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


def _number_options() -> list[tuple[str, click.Option]]:
    from forescale.cli import SUBCOMMANDS, cli

    ctx = click.Context(cli)
    found = []
    for name in SUBCOMMANDS:
        command = cli.get_command(ctx, name)
        assert command is not None
        found += [(f"{name} {param.opts[0]}", param) for param in command.params
                  if isinstance(param, click.Option)
                  and isinstance(param.type, (click.types.FloatParamType, FiniteFloat,
                                              Duration))]
    return found


def test_every_float_flag_refuses_nan_and_infinity() -> None:
    """click's FLOAT and FloatRange accept 'nan' and 'inf' (run's
    --prometheus-timeout-seconds did), and 400 nines overflowed a duration to infinity."""
    options = _number_options()
    assert any(flag == "run --prometheus-timeout-seconds" for flag, _ in options)
    for flag, option in options:
        for text in ("nan", "inf", "-inf", "1e999", "9" * 400,
                     *(("9" * 400 + "s",) if isinstance(option.type, Duration) else ())):
            with pytest.raises(click.BadParameter):
                option.type.convert(text, option, None)
                pytest.fail(f"{flag} accepted {text[:20]!r}")


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_run_refuses_a_timeout_that_is_not_finite(value: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--all-namespaces", "--prometheus-timeout-seconds", value]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a finite number" in err, err


def test_a_duration_that_overflows_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["size", "--arrival-rate", "5", "--service-rate", "10",
                 "--slo-wait", "9" * 400 + "s"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not a finite duration" in err, err
