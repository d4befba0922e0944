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



@pytest.mark.parametrize(("head", "message"), [
    ("timestamp,requests\n0,1\nyesterday,2\n", "line 3: not a timestamp"),
    ("time,count\n", "header must be 'timestamp,requests'"),
    ("timestamp,requests\n0,1\n60,1\n180,1\n", "line 4: gap or irregular step"),
])
def test_a_bad_line_fails_before_the_rest_is_read(tmp_path: Path, head: str,
                                                  message: str) -> None:
    """Every row was once held as text before the first was checked: a wrong or huge file
    (a log, a multi-GB export) filled memory before its error. The loader now stops at
    the first bad line while the writer of a pipe still has the rest to send."""
    import os
    import threading

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    loaded = threading.Event()
    closed_before_the_error = []

    def write() -> None:
        with fifo.open("w") as fh:
            fh.write(head)
            fh.flush()
            closed_before_the_error.append(not loaded.wait(timeout=10))

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        with pytest.raises(InvalidInputError, match=message):
            load_trace(fifo)
    finally:
        loaded.set()
        writer.join(timeout=15)
    assert closed_before_the_error == [False]


def test_the_row_cap_stops_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import forescale.trace as trace_module

    monkeypatch.setattr(trace_module, "MAX_TRACE_ROWS", 3)
    path = tmp_path / "t.csv"
    path.write_text("timestamp,requests\n0,1\n60,2\n120,3\n")
    assert len(load_trace(path)) == 3
    path.write_text("timestamp,requests\n0,1\n60,2\n120,3\n180,4\n")
    with pytest.raises(InvalidInputError, match="more than 3 rows"):
        load_trace(path)
