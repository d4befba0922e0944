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
])
def test_hostile_traces(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "t.csv"
    path.write_text("timestamp,requests\n" + body)
    with pytest.raises(InvalidInputError) as info:
        load_trace(path)
    assert message in str(info.value)
    assert len(str(info.value)) < 300 and "\n" not in str(info.value)
