"""Load a traffic trace CSV (``timestamp,requests``) into an arrival-rate :class:`Series`.

Every problem is reported as one :class:`InvalidInputError` line naming the row.
"""

from __future__ import annotations

import csv
import math
from array import array
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from forescale.core.checks import MAX_TIMESTAMP, MIN_TIMESTAMP
from forescale.core.errors import InvalidInputError, os_reason
from forescale.core.series import FloatArray, Series


@dataclass(frozen=True)
class Trace:
    """Request counts per interval, as read; ``rates`` is the same as req/s."""

    path: Path
    start_seconds: float
    step_seconds: float
    counts: FloatArray

    @property
    def rates(self) -> Series:
        return Series(self.start_seconds, self.step_seconds, self.counts / self.step_seconds)

    def __len__(self) -> int:
        return int(self.counts.shape[0])



#: A trace longer than this is not a trace of request counts (a year of seconds is 31.5M).
MAX_TRACE_ROWS = 50_000_000


def _shown(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:59] + "…")


def parse_timestamp(text: str) -> float:
    """ISO-8601 (``Z`` or offset; naive means UTC) or Unix seconds, to Unix seconds, within
    years 1970 to 9999."""
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInputError(f"not a timestamp: {_shown(text)} (expected ISO-8601, "
                                    f"e.g. 1995-07-20T15:00:00Z)") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        try:
            seconds = dt.timestamp()
        except (OverflowError, ValueError):
            raise InvalidInputError(f"timestamp {_shown(text)} is out of range") from None
    if not MIN_TIMESTAMP <= seconds <= MAX_TIMESTAMP:  # NaN fails both
        raise InvalidInputError(f"timestamp {_shown(text)} is not between 1970 and 9999")
    return seconds


def format_timestamp(seconds: float) -> str:
    if not MIN_TIMESTAMP <= seconds <= MAX_TIMESTAMP:
        return f"{seconds!r} (out of range)"
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def load_trace(path: str | Path) -> Trace:
    """The trace at ``path``, read row by row: each row is checked as it is read (and then
    kept as two floats), so a wrong or huge file fails at its first bad line instead of
    after the whole file is held as text."""
    path = Path(path)
    try:
        # Opened, not stat-ed first: a pipe (--trace <(head t.csv)) is no regular file but
        # reads as well. utf-8-sig: a spreadsheet's byte order mark is not in the header.
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise InvalidInputError(f"trace {path}: empty file")
            names = [h.strip().lower() for h in header]
            if names[:2] != ["timestamp", "requests"]:
                raise InvalidInputError(f"trace {path}: header must be 'timestamp,requests', "
                                        f"got {_shown(','.join(header))}")
            times, counts = array("d"), array("d")
            step = previous = None
            for row in reader:
                if not row:
                    continue  # a blank line (one at the end, say) is no row
                if len(times) >= MAX_TRACE_ROWS:
                    raise InvalidInputError(f"trace {path}: more than {MAX_TRACE_ROWS:,} rows")
                where = f"trace {path}, line {reader.line_num}"
                seconds, count = _parse_row(row, len(header), where)
                if previous is not None:
                    diff = seconds - times[-1]
                    if diff <= 0:
                        kind = "duplicate" if diff == 0 else "unsorted"
                        raise InvalidInputError(f"{where}: {kind} timestamp {_shown(row[0])}")
                    if step is None:
                        step = diff
                    elif abs(diff - step) > 1e-6:
                        raise InvalidInputError(
                            f"{where}: gap or irregular step ({diff:g}s after "
                            f"{_shown(previous)}, expected {step:g}s); fill missing "
                            f"intervals with 0")
                times.append(seconds)
                counts.append(count)
                previous = row[0]
    except FileNotFoundError:
        raise InvalidInputError(f"trace {path}: no such file") from None
    except IsADirectoryError:
        raise InvalidInputError(f"trace {path}: is a directory") from None
    except OSError as exc:  # ENAMETOOLONG, EACCES, EIO...: the system's words, one line
        raise InvalidInputError(f"trace {path}: cannot read: "
                                f"{os_reason(exc)}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InvalidInputError(f"trace {path}: cannot read: "
                                f"{_shown(str(exc).splitlines()[0] if str(exc) else '')}"
                                ) from None
    if step is None:
        raise InvalidInputError(f"trace {path}: needs at least two rows, got {len(times)}")
    return Trace(path=path, start_seconds=times[0], step_seconds=step,
                 counts=np.frombuffer(counts, dtype=np.float64).copy())


def _parse_row(row: list[str], columns: int, where: str) -> tuple[float, float]:
    """One row's timestamp (Unix seconds) and request count; ``where`` names the line."""
    if len(row) != columns:
        # Not only too few: "…,1,234" (a thousands separator) read as 1 request.
        raise InvalidInputError(f"{where}: expected {columns} columns as the header has, "
                                f"got {len(row)}")
    try:
        seconds = parse_timestamp(row[0])
    except InvalidInputError as exc:
        raise InvalidInputError(f"{where}: {exc}") from None
    try:
        count = float(row[1])
    except ValueError:
        raise InvalidInputError(f"{where}: requests is not a number: {_shown(row[1])}"
                                ) from None
    if not math.isfinite(count):
        raise InvalidInputError(f"{where}: requests is {_shown(row[1])}")
    if count < 0:
        raise InvalidInputError(f"{where}: negative request count {_shown(row[1])}")
    return seconds, count
