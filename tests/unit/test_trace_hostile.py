"""The trace loader and timestamp parser refuse what once gave a traceback: NaN, 1e300,
years past 9999, huge fields; every error is one bounded line."""

from __future__ import annotations

from pathlib import Path

import pytest

from forescale.core.errors import InvalidInputError
from forescale.trace import format_timestamp, load_trace, parse_timestamp


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-inf", "1e300", "-1", "1e12",
                                  "99999-01-01T00:00:00Z", "0001-01-01T00:00:00+14:00"])
def test_timestamps_out_of_range_are_one_line(text: str) -> None:
    with pytest.raises(InvalidInputError, match=r"timestamp|not a timestamp"):
        parse_timestamp(text)


def test_timestamps_in_range() -> None:
    assert parse_timestamp("1995-07-01T00:00:00Z") == 804556800.0
    assert parse_timestamp("804556800") == 804556800.0
    assert format_timestamp(1e300).endswith("(out of range)")


@pytest.mark.parametrize(("body", "message"), [
    ("1e300,1\n1e300,2\n", "line 2: timestamp '1e300' is not between 1970 and 9999"),
    ("nan,1\n60,2\n", "line 2: timestamp 'nan' is not between"),
    ("0,1\n60," + "9" * 400 + "\n", "line 3: requests is '" + "9" * 59 + "…'"),
    ("0,1\n60,-" + "1" * 100 + "\n", "line 3: negative request count"),
    # A thousands separator splits a count: "1,234" read as 1 request, silently.
    ("0,1\n60,1,234\n120,3\n", "line 3: expected 2 columns as the header has, got 3"),
    ("0,1\n60\n", "line 3: expected 2 columns"),
    # Line numbers count the blank lines that are skipped.
    ("0,1\n\n60,2\n\n60,3\n", "line 6: duplicate timestamp"),
])
def test_hostile_traces(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "t.csv"
    path.write_text("timestamp,requests\n" + body)
    with pytest.raises(InvalidInputError) as info:
        load_trace(path)
    assert message in str(info.value)
    assert len(str(info.value)) < 300 and "\n" not in str(info.value)


GOOD = "timestamp,requests\n0,1\n60,2\n"


def test_a_pipe_is_a_trace(tmp_path: Path) -> None:
    """``--trace <(head -3000 t.csv)`` is /dev/fd/63, no regular file: it once said
    "no such file"."""
    import os
    import threading

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_text, args=(GOOD,), daemon=True)
    writer.start()
    try:
        trace = load_trace(fifo)
    finally:
        writer.join(timeout=5)
    assert len(trace) == 2 and trace.step_seconds == 60


def test_a_byte_order_mark_is_not_in_the_header(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    assert list(load_trace(path).counts) == [1.0, 2.0]


@pytest.mark.parametrize(("name", "message"), [
    ("missing.csv", "no such file"),
    ("a-directory", "is a directory"),
    ("x" * 300 + ".csv", "cannot read: File name too long"),
])
def test_paths_that_are_no_trace_are_one_line(tmp_path: Path, name: str,
                                              message: str) -> None:
    (tmp_path / "a-directory").mkdir()
    with pytest.raises(InvalidInputError) as info:
        load_trace(tmp_path / name)
    assert str(info.value) == f"trace {tmp_path / name}: {message}"


def test_blank_lines_are_no_rows(tmp_path: Path) -> None:
    """A trailing blank line (an editor's) was "expected two columns"."""
    path = tmp_path / "t.csv"
    path.write_text("timestamp,requests\n0,1\n60,2\n\n\n")
    assert list(load_trace(path).counts) == [1.0, 2.0]

