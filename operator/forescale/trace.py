"""Load a traffic trace CSV (``timestamp,requests``) into an arrival-rate :class:`Series`.

Every problem is reported as one :class:`InvalidInputError` line naming the row.
"""

from __future__ import annotations

import csv
import math
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
    path = Path(path)
    try:
        # Opened, not stat-ed first: a pipe (--trace <(head t.csv)) is no regular file but
        # reads as well. utf-8-sig: a spreadsheet's byte order mark is not in the header.
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            rows, lines = [], []
            for row in reader:
                if not row:
                    continue  # a blank line (one at the end, say) is no row
                rows.append(row)
                lines.append(reader.line_num)
                if len(rows) > MAX_TRACE_ROWS:
                    raise InvalidInputError(f"trace {path}: more than {MAX_TRACE_ROWS:,} rows")
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
    if header is None:
        raise InvalidInputError(f"trace {path}: empty file")
    names = [h.strip().lower() for h in header]
    if names[:2] != ["timestamp", "requests"]:
        raise InvalidInputError(f"trace {path}: header must be 'timestamp,requests', "
                                f"got {_shown(','.join(header))}")
    if len(rows) < 2:
        raise InvalidInputError(f"trace {path}: needs at least two rows, got {len(rows)}")
    times = np.empty(len(rows))
    counts = np.empty(len(rows))
    for i, row in enumerate(rows):
        line = lines[i]
        if len(row) != len(header):
            # Not only too few: "…,1,234" (a thousands separator) read as 1 request.
            raise InvalidInputError(f"trace {path}, line {line}: expected {len(header)} "
                                    f"columns as the header has, got {len(row)}")
        try:
            times[i] = parse_timestamp(row[0])
        except InvalidInputError as exc:
            raise InvalidInputError(f"trace {path}, line {line}: {exc}") from None
        try:
            counts[i] = float(row[1])
        except ValueError:
            raise InvalidInputError(f"trace {path}, line {line}: requests is not a number: "
                                    f"{_shown(row[1])}") from None
        if not math.isfinite(counts[i]):
            raise InvalidInputError(f"trace {path}, line {line}: requests is {_shown(row[1])}")
        if counts[i] < 0:
            raise InvalidInputError(f"trace {path}, line {line}: negative request count "
                                    f"{_shown(row[1])}")
    diffs = np.diff(times)
    step = float(diffs[0])
    bad = np.flatnonzero(diffs <= 0)
    if bad.size:
        i = int(bad[0]) + 1
        kind = "duplicate" if diffs[bad[0]] == 0 else "unsorted"
        raise InvalidInputError(f"trace {path}, line {lines[i]}: {kind} timestamp "
                                f"{_shown(rows[i][0])}")
    gaps = np.flatnonzero(np.abs(diffs - step) > 1e-6)
    if gaps.size:
        i = int(gaps[0]) + 1
        raise InvalidInputError(
            f"trace {path}, line {lines[i]}: gap or irregular step ({diffs[gaps[0]]:g}s after "
            f"{_shown(rows[i - 1][0])}, expected {step:g}s); fill missing intervals with 0")
    return Trace(path=path, start_seconds=float(times[0]), step_seconds=step, counts=counts)
