"""Read an arrival rate from Prometheus as a :class:`~forescale.core.series.Series`.

Time convention
---------------
A Series sample ``i`` is the mean rate over ``[t_i, t_i + step)``. Prometheus evaluates a
range query at instants ``T``, and ``rate(x[w])`` at ``T`` describes the window ending at
``T`` (``[T-w, T]`` in Prometheus 2, ``(T-w, T]`` from Prometheus 3). So the sample for
``[t_i, t_i + step)`` is the query evaluated at ``T = t_i + step``: the value at the *end* of
the interval labels the interval. With a window equal to the step the sample is exactly the
mean over its interval; a longer window makes it a trailing average over ``[T-w, T]`` (which
smooths, and lags by ``(w - step) / 2``). Only intervals that have ended by ``end`` are read,
so a read never looks ahead of the ``now`` the caller passes in.

The first sample after a counter appears is unreliable: ``rate()`` needs two samples inside
its window, and where the window reaches back before the series began Prometheus
extrapolates only part of the way (a counter that did not start at 0 reads low there). Such
windows come back as NaN or low; callers treat the first ``window`` of a new series with care.

Errors
------
Every failure is a :class:`MetricsError` whose ``reason`` is a CamelCase word the operator
puts into its ``MetricsAvailable`` condition and whose message is one line:
:class:`PrometheusUnavailable`, :class:`BadQuery`, :class:`AmbiguousQuery`, :class:`NoData`.
This module reads no clock: ``start``, ``end`` and ``at`` are always passed in.
"""

from __future__ import annotations

import ast
import contextlib
import json
import math
import re
import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import requests
import urllib3.exceptions
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from requests.adapters import HTTPAdapter
from urllib3 import ProxyManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.retry import Retry

from forescale.adapters import MAX_TIMEOUT_SECONDS
from forescale.core.errors import ForescaleError, InvalidInputError
from forescale.core.series import Series

MetricsReason = Literal["PrometheusUnavailable", "BadQuery", "AmbiguousQuery", "NoData"]
METRICS_REASONS: tuple[MetricsReason, ...] = ("PrometheusUnavailable", "BadQuery",
                                              "AmbiguousQuery", "NoData")

# Prometheus refuses a range query of more than 11,000 points per series; stay below it.
PROMETHEUS_MAX_POINTS = 11_000
DEFAULT_MAX_POINTS_PER_QUERY = 10_000
#: The most bytes (decoded) one answer may have. One series of a chunk's 10,000 points is
#: ~330 kB of JSON; an unaggregated query over hundreds of series was parsed whole (~210
#: bytes a sample once parsed) before the one-series check, and 500 series OOM-killed a
#: 1 GiB operator at every start. 32 MiB is ~100 such series, far above any one.
MAX_RESPONSE_BYTES = 32 * 2**20

# Keep condition messages readable: Prometheus' errors and users' queries can be long.
_MAX_TEXT = 300


class MetricsError(ForescaleError):
    """Arrival rates could not be read. Abstract: raise one of the subclasses.

    ``reason`` is the CamelCase word for the ``MetricsAvailable`` condition; the message is
    a single line fit for the condition's message and for a CLI.
    """

    reason: ClassVar[MetricsReason]

    def __init__(self, message: str) -> None:
        super().__init__(_one_line(message))


class PrometheusUnavailable(MetricsError):  # noqa: N818 (named as its reason)
    """Prometheus did not answer usefully: refused, timed out, 5xx, wrong URL or credentials.

    Transient as far as the operator knows: keep the last decision and retry later.
    """

    reason: ClassVar[MetricsReason] = "PrometheusUnavailable"


class BadQuery(MetricsError):  # noqa: N818 (named as its reason)
    """Prometheus rejected the query (HTTP 400/422) or it does not yield an arrival rate."""

    reason: ClassVar[MetricsReason] = "BadQuery"


class AmbiguousQuery(MetricsError):  # noqa: N818 (named as its reason)
    """The query returned several series where one arrival rate was expected."""

    reason: ClassVar[MetricsReason] = "AmbiguousQuery"


class NoData(MetricsError):  # noqa: N818 (named as its reason)
    """The query is valid but returned no series at all over the requested time."""

    reason: ClassVar[MetricsReason] = "NoData"


def rate_query(metric_selector: str, window_seconds: float, *,
               scrape_interval_seconds: float | None = None) -> str:
    """``sum(rate(<selector>[<window>s]))``: the total request rate of a counter.

    ``rate()`` needs at least two samples inside its window, so the window must span at least
    two scrape intervals: over a single interval it usually holds one sample and the query
    returns nothing. ``sum()`` makes the result one series whatever the number of pods.
    Pass ``scrape_interval_seconds`` to have that checked.
    """
    selector = metric_selector.strip()
    if not selector:
        raise InvalidInputError("metric selector is empty")
    if "[" in selector:
        raise InvalidInputError(f"metric selector {selector!r} already has a range; give an "
                                f"instant selector such as http_requests_total{{job=\"web\"}}")
    if not (math.isfinite(window_seconds) and window_seconds > 0):
        raise InvalidInputError(f"rate window must be a positive number of seconds, "
                                f"got {window_seconds!r}")
    if scrape_interval_seconds is not None and window_seconds < 2 * scrape_interval_seconds:
        raise InvalidInputError(
            f"rate window {window_seconds:g}s is shorter than two scrape intervals "
            f"(2 × {scrape_interval_seconds:g}s); rate() would return nothing")
    return f"sum(rate({selector}[{_promql_duration(window_seconds)}]))"


class PrometheusSource:
    """Reads arrival rates from one Prometheus server's HTTP API.

    ``headers`` are sent with every request (e.g. ``Authorization``); ``verify_tls=False``
    skips certificate checks for self-signed servers. ``bearer_token_file`` sends
    ``Authorization: Bearer <the file's content>``, read anew for every request so that a
    rotated token (a re-mounted Secret) is used without a restart; ``ca_file`` is a PEM
    bundle that verifies the server's certificate instead of the system CAs. A request is
    retried once on a refused connection or a 502/503/504: the operator calls again on its
    next cycle anyway, and a reconcile loop must not block for long on a Prometheus that is
    down. ``timeout_seconds`` is a deadline for each request as a whole (connection, retry,
    headers and body): a server that trickles its answer a byte at a time fails as
    PrometheusUnavailable when it passes, not after a per-read timeout per byte.
    """

    def __init__(self, url: str, *, headers: Mapping[str, str] | None = None,
                 verify_tls: bool = True, timeout_seconds: float = 10,
                 max_points_per_query: int = DEFAULT_MAX_POINTS_PER_QUERY,
                 bearer_token_file: str | Path | None = None,
                 ca_file: str | Path | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInputError(f"Prometheus URL must be http(s)://host[:port][/path], "
                                    f"got {redact_url(url)!r}")
        if not (math.isfinite(timeout_seconds) and 0 < timeout_seconds <= MAX_TIMEOUT_SECONDS):
            raise InvalidInputError(f"timeout must be a positive number of seconds, at most "
                                    f"{MAX_TIMEOUT_SECONDS:g}, got {timeout_seconds!r}")
        if not 1 <= max_points_per_query <= PROMETHEUS_MAX_POINTS:
            raise InvalidInputError(f"max_points_per_query must be in 1..{PROMETHEUS_MAX_POINTS}, "
                                    f"got {max_points_per_query}")
        if ca_file is not None and not Path(ca_file).is_file():
            raise InvalidInputError(f"Prometheus CA file {str(ca_file)!r} is not a file")
        self.url = url.rstrip("/")
        self.timeout_seconds = float(timeout_seconds)
        self.max_points_per_query = max_points_per_query
        retry = Retry(total=1, connect=1, read=0, status=1, backoff_factor=0.5,
                      status_forcelist=(502, 503, 504), allowed_methods=frozenset({"GET"}),
                      # A proxy's Retry-After could otherwise stall the caller for minutes.
                      respect_retry_after_header=False,
                      # Hand the last error response back so its body reaches the message.
                      raise_on_status=False)
        # The client's annotations say ``int`` for the timeout; requests takes any number.
        client_timeout: Any = self.timeout_seconds
        session = _DeadlineSession(self.timeout_seconds)
        # Never follow a redirect: the URL was checked against the allow-list, the place it
        # redirects to was not (and a redirect would carry the query elsewhere).
        session.max_redirects = 0
        # requests takes a CA bundle's path where it takes True/False.
        session.verify = str(ca_file) if ca_file is not None and verify_tls else verify_tls
        # The client passes ``auth`` to every request: the token file is read each time.
        auth: Any = None if bearer_token_file is None else _BearerTokenFile(Path(bearer_token_file))
        self._client = PrometheusConnect(url=self.url, headers=dict(headers or {}),
                                         retry=retry, timeout=client_timeout,
                                         session=session, auth=auth)
        # The client mounted a plain adapter for its URL: the deadline needs ours.
        session.mount(self.url, _DeadlineAdapter(max_retries=retry))

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> PrometheusSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read_rate(self, query: str, *, start: float, end: float, step_seconds: float,
                  allow_empty: bool = False) -> Series:
        """The query's value for every ``step_seconds`` interval in ``[start, end)``.

        Sample ``i`` covers ``[start + i*step, start + (i+1)*step)`` and is the query
        evaluated at the end of that interval (see the module docstring); only intervals
        that end by ``end`` are included. Points Prometheus has no value for, NaN and
        infinite values are NaN. Ranges longer than ``max_points_per_query`` are read in
        several requests and stitched onto one grid.

        Raises :class:`NoData` when the query returns no series over the whole range (with
        ``allow_empty=True``, an all-NaN Series instead), :class:`AmbiguousQuery` when it
        returns several, :class:`BadQuery` when Prometheus rejects it or a value is negative,
        :class:`PrometheusUnavailable` when Prometheus cannot be asked.
        """
        for name, value in (("start", start), ("end", end)):
            if not math.isfinite(value):
                raise InvalidInputError(f"{name} must be a finite Unix time, got {value!r}")
        if not (math.isfinite(step_seconds) and step_seconds > 0):
            raise InvalidInputError(f"step must be a positive number of seconds, "
                                    f"got {step_seconds!r}")
        if abs(step_seconds * 1000.0 - round(step_seconds * 1000.0)) > 1e-6:
            # Prometheus cuts the step to whole milliseconds: its samples would drift off
            # the grid asked for, and all but a few were dropped as off it (NaN).
            raise InvalidInputError(f"step must be a whole number of milliseconds, "
                                    f"got {step_seconds!r} s")
        if end < start:
            raise InvalidInputError(f"end ({end:g}) is before start ({start:g})")
        # A tiny tolerance so that float noise in end - start does not drop the last interval.
        n = max(math.floor((end - start) / step_seconds + 1e-9), 0)
        values = np.full(n, np.nan)
        if n == 0:
            return Series(float(start), float(step_seconds), values)
        first_eval = start + step_seconds
        labels_seen: dict[str, Mapping[str, str]] = {}
        for lo in range(0, n, self.max_points_per_query):
            hi = min(lo + self.max_points_per_query, n)
            chunk_start = first_eval + lo * step_seconds
            chunk_end = first_eval + (hi - 1) * step_seconds
            params = {
                # The client rounds its datetime arguments to whole seconds; our grid may
                # not be whole seconds, and the client lets ``params`` override them.
                "start": _format_time(chunk_start),
                "end": _format_time(chunk_end),
                # Let Prometheus give up when we do, instead of computing for nobody.
                "timeout": _promql_duration(self.timeout_seconds),
            }
            result = self._call(query, self._client.custom_query_range, query,
                                start_time=_datetime(chunk_start), end_time=_datetime(chunk_end),
                                step=repr(float(step_seconds)), params=params)
            for series in _as_list(result, query):
                metric = _labels(series, query)
                labels_seen.setdefault(_label_key(metric), metric)
                if len(labels_seen) > 1:
                    raise _ambiguous(query, list(labels_seen.values()))
                samples = series.get("values")
                if not isinstance(samples, list) and "histograms" in series:
                    # A native histogram's series holds histograms and no float values.
                    raise BadQuery(f"query {_shorten(query)} returned native histograms, not "
                                   f"a rate; take histogram_count(...) of them (requests "
                                   f"per second)")
                if not isinstance(samples, list):
                    raise _malformed(query, "a series without 'values'")
                for sample in samples:
                    ts, value = _sample(sample, query)
                    index = round((ts - first_eval) / step_seconds)
                    # Prometheus evaluates only on the grid we asked for; anything else
                    # (which it never sends) is ignored rather than put in a wrong slot.
                    if 0 <= index < n and abs(first_eval + index * step_seconds - ts) < 1e-3:
                        values[index] = value
        if not labels_seen and not allow_empty:
            raise NoData(f"query {_shorten(query)} returned no data between {_when(start)} "
                         f"and {_when(end)}; check the metric name and labels")
        _check_not_negative(values, start=start, step_seconds=step_seconds, query=query)
        return Series(float(start), float(step_seconds), values)

    def read_value(self, query: str, *, at: float) -> float:
        """The query's single value at time ``at`` (NaN for NaN or infinite values).

        Same errors as :meth:`read_rate`; an empty result is always :class:`NoData`.
        """
        if not math.isfinite(at):
            raise InvalidInputError(f"at must be a finite Unix time, got {at!r}")
        params = {"time": _format_time(at), "timeout": _promql_duration(self.timeout_seconds)}
        result = self._call(query, self._client.custom_query, query, params=params)
        # A scalar expression answers ``[time, "value"]`` rather than a list of series.
        if isinstance(result, list) and len(result) == 2 and not isinstance(result[0], dict):
            _, value = _sample(result, query)
        else:
            series_list = _as_list(result, query)
            if not series_list:
                raise NoData(f"query {_shorten(query)} returned no data at {_when(at)}; "
                             f"check the metric name and labels")
            if len(series_list) > 1:
                raise _ambiguous(query, [_labels(s, query) for s in series_list])
            sample = series_list[0].get("value")
            if not isinstance(sample, list):
                raise BadQuery(f"query {_shorten(query)} did not return an instant vector")
            _, value = _sample(sample, query)
        if value < 0:
            raise _negative(query, value, at)
        return value

    def _call(self, query: str, method: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run one client call, turning every failure into a :class:`MetricsError`."""
        where = redact_url(self.url)
        try:
            return method(*args, **kwargs)
        except PrometheusApiClientException as exc:
            raise _from_status(str(exc), where=where, query=query) from None
        except _ResponseTooLarge:
            raise BadQuery(f"Prometheus at {where} answered query {_shorten(query)} with more "
                           f"than {MAX_RESPONSE_BYTES // 2**20} MiB: it must return one series "
                           f"(aggregate it, e.g. sum(...))") from None
        except _TokenUnreadable as exc:
            raise PrometheusUnavailable(f"cannot read the bearer token for Prometheus at "
                                        f"{where}: {exc}") from None
        except requests.Timeout:
            raise PrometheusUnavailable(f"Prometheus at {where} did not answer within "
                                        f"{self.timeout_seconds:g}s") from None
        except (requests.ConnectionError, requests.exceptions.RetryError) as exc:
            if _is_read_timeout(exc):
                # With Retry(read=0) urllib3 wraps a read timeout in MaxRetryError, which
                # requests raises as ConnectionError: name the real cause.
                raise PrometheusUnavailable(f"Prometheus at {where} did not answer within "
                                            f"{self.timeout_seconds:g}s") from None
            raise PrometheusUnavailable(f"Prometheus at {where} is unreachable: "
                                        f"{_root_cause(exc)}") from None
        except requests.TooManyRedirects:
            raise PrometheusUnavailable(f"Prometheus at {where} answered with a redirect, "
                                        f"which is not followed; use the final URL") from None
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidHeader,
                urllib3.exceptions.LocationParseError) as exc:
            # Refused before anything was sent (ValueErrors too, so before the clause below):
            # a host label too long, a token file of two lines.
            raise PrometheusUnavailable(f"request to Prometheus at {where} could not be sent: "
                                        f"{type(exc).__name__}") from None
        except (requests.exceptions.JSONDecodeError, KeyError, TypeError, ValueError,
                RecursionError):
            # A 200 that is not the Prometheus API's JSON: a proxy's login page, a wrong path,
            # JSON Python cannot take (nested too deep, an integer of thousands of digits).
            # (Before RequestException: requests' JSONDecodeError is one too.)
            raise PrometheusUnavailable(f"{where} answered, but not with Prometheus API JSON; "
                                        f"check the URL") from None
        except requests.RequestException as exc:
            raise PrometheusUnavailable(f"request to Prometheus at {where} failed: "
                                        f"{type(exc).__name__}") from None
        except OSError as exc:  # e.g. a CA bundle that vanished or does not parse
            raise PrometheusUnavailable(f"request to Prometheus at {where} failed: "
                                        f"{_shorten(str(exc)) or type(exc).__name__}") from None


class _Deadline:
    """One request's deadline: when it passes, the sockets of the request's connections are
    shut down, which ends a read blocked on them at once (a per-read timeout restarts with
    every byte a trickling server sends)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: list[HTTPConnection] = []
        self.expired = False

    def add(self, connection: HTTPConnection) -> None:
        with self._lock:
            self._connections.append(connection)
            expired = self.expired
        if expired:
            _shut(connection)

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            connections = list(self._connections)
        for connection in connections:
            _shut(connection)


def _shut(connection: HTTPConnection) -> None:
    sock = connection.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


#: The deadline of the request the current thread is making (requests is synchronous:
#: the connection's calls run on the thread that called the session).
_current = threading.local()


def _watch(connection: HTTPConnection) -> None:
    deadline: _Deadline | None = getattr(_current, "deadline", None)
    if deadline is not None:
        deadline.add(connection)


class _DeadlineHTTPConnection(HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _watch(self)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self)  # a connection reused from the pool is not connected again
        super().request(*args, **kwargs)


class _DeadlineHTTPSConnection(HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        _watch(self)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self)
        super().request(*args, **kwargs)


class _DeadlineHTTPPool(HTTPConnectionPool):
    ConnectionCls = _DeadlineHTTPConnection


class _DeadlineHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _DeadlineHTTPSConnection


_DEADLINE_POOLS = {"http": _DeadlineHTTPPool, "https": _DeadlineHTTPSPool}


class _ResponseTooLarge(Exception):  # noqa: N818 (turned into BadQuery)
    """The answer passed :data:`MAX_RESPONSE_BYTES` while it was read."""


def _limited(raw: Any, limit: int) -> None:
    """Make ``raw`` (urllib3's response, which requests reads through ``stream``) raise
    :class:`_ResponseTooLarge` once more than ``limit`` decoded bytes came out of it."""
    stream = raw.stream

    def counted(*args: Any, **kwargs: Any) -> Iterator[bytes]:
        total = 0
        for chunk in stream(*args, **kwargs):
            total += len(chunk)
            if total > limit:
                raise _ResponseTooLarge(total)
            yield chunk

    raw.stream = counted


class _DeadlineAdapter(HTTPAdapter):
    """requests' adapter with connections a :class:`_Deadline` can cut, and answers no
    larger than :data:`MAX_RESPONSE_BYTES`."""

    def build_response(self, req: Any, resp: Any) -> requests.Response:
        _limited(resp, MAX_RESPONSE_BYTES)
        return super().build_response(req, resp)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_DEADLINE_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if type(manager) is ProxyManager:  # not SOCKS, whose pools are its own
            manager.pool_classes_by_scheme = dict(_DEADLINE_POOLS)
        return manager


class _DeadlineSession(requests.Session):
    """A session whose every request ends within ``deadline_seconds`` (requests.Timeout),
    with its retries, however slowly the server answers."""

    def __init__(self, deadline_seconds: float) -> None:
        super().__init__()
        self.deadline_seconds = deadline_seconds

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        deadline = _Deadline()
        timer = threading.Timer(self.deadline_seconds, deadline.expire)
        timer.daemon = True
        _current.deadline = deadline
        timer.start()
        try:
            response = super().request(*args, **kwargs)
        except (requests.RequestException, OSError):
            if deadline.expired:
                raise requests.Timeout(f"no complete answer within "
                                       f"{self.deadline_seconds:g}s") from None
            raise
        finally:
            timer.cancel()
            _current.deadline = None
        if deadline.expired:  # a body that ends with the connection may be cut short
            response.close()
            raise requests.Timeout(f"no complete answer within {self.deadline_seconds:g}s")
        return response


class _TokenUnreadable(Exception):  # noqa: N818 (turned into PrometheusUnavailable)
    """The bearer token file is missing, unreadable or empty."""


class _BearerTokenFile(requests.auth.AuthBase):
    """``Authorization: Bearer <token>``, the token read from its file for every request."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        try:
            token = self.path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise _TokenUnreadable(f"{self.path}: {type(exc).__name__}") from None
        if not token:
            raise _TokenUnreadable(f"{self.path} is empty")
        if any(c.isspace() or not c.isprintable() for c in token):
            # Two lines, say: http.client refuses the header before anything is sent.
            raise _TokenUnreadable(f"{self.path} holds more than one token (whitespace or "
                                   f"control characters inside)")
        request.headers["Authorization"] = f"Bearer {token}"
        return request


def _from_status(text: str, *, where: str, query: str) -> MetricsError:
    """Classify the client's ``HTTP Status Code <n> (<body repr>)`` exception."""
    match = re.fullmatch(r"HTTP Status Code (\d+) \((.*)\)", text, flags=re.DOTALL)
    if not match:
        return PrometheusUnavailable(f"Prometheus at {where} failed without an HTTP status")
    status = int(match.group(1))
    detail = _error_text(match.group(2))
    if status in (400, 422):
        return BadQuery(f"Prometheus rejected query {_shorten(query)}: {detail}")
    if status in (401, 403):
        return PrometheusUnavailable(f"Prometheus at {where} refused access (HTTP {status}); "
                                     f"check the credentials in the request headers")
    if status == 404:
        return PrometheusUnavailable(f"no Prometheus API at {where} (HTTP 404); check the URL "
                                     f"and any path prefix")
    return PrometheusUnavailable(f"Prometheus at {where} answered HTTP {status}: {detail}")


#: Prometheus API ``errorType`` values: only an answer that is a Prometheus API error
#: contributes any text to a message.
_ERROR_TYPES = frozenset({"bad_data", "timeout", "canceled", "execution", "internal",
                          "unavailable", "not_found", "too_many_samples"})
_MAX_ERROR_TEXT = 160


def _error_text(body_repr: str) -> str:
    """A sanitised, bounded reason from the repr of an error response's body.

    The body comes from whatever answers at the URL, and the message reaches a status and an
    Event that every reader of the policy sees: so nothing of an arbitrary body is repeated.
    Only a Prometheus API error (``{"status": "error", "errorType": <known>, "error": …}``)
    gives its ``errorType`` and the first characters of its ``error`` (printable ASCII),
    which is what tells a user why a query was rejected."""
    try:
        body = ast.literal_eval(body_repr)
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
        payload = json.loads(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return "not a Prometheus API error response"
    if not (isinstance(payload, dict) and payload.get("status") == "error"
            and payload.get("errorType") in _ERROR_TYPES
            and isinstance(payload.get("error"), str)):
        return "not a Prometheus API error response"
    detail = "".join(ch if " " <= ch <= "~" else " " for ch in payload["error"])
    # Label sets ({job="x", ...}) in an execution error name other series: drop their values.
    detail = _one_line(re.sub(r"\{[^{}]*\}", "{…}", detail))
    if len(detail) > _MAX_ERROR_TEXT:
        detail = detail[: _MAX_ERROR_TEXT - 1] + "…"
    return f"{payload['errorType']}: {detail}"


def _is_read_timeout(exc: BaseException) -> bool:
    """Whether a requests/urllib3 error chain contains a read timeout."""
    from urllib3.exceptions import MaxRetryError, ReadTimeoutError

    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, ReadTimeoutError):
            return True
        if isinstance(seen, MaxRetryError) and isinstance(seen.reason, ReadTimeoutError):
            return True
        nxt = seen.args[0] if seen.args and isinstance(seen.args[0], BaseException) else None
        seen = nxt or seen.__cause__ or seen.__context__
    return False


def _root_cause(exc: BaseException) -> str:
    """``connection refused`` rather than urllib3's three nested reprs."""
    match = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", str(exc))
    if match:
        return match.group(1).strip().lower()
    return type(exc).__name__


def _as_list(result: Any, query: str) -> list[dict[str, Any]]:
    if not isinstance(result, list) or not all(isinstance(s, dict) for s in result):
        raise _malformed(query, "a result that is not a list of series")
    return result


def _labels(series: Mapping[str, Any], query: str) -> Mapping[str, str]:
    metric = series.get("metric", {})
    if not isinstance(metric, dict):
        raise _malformed(query, "a series without labels")
    return {str(k): str(v) for k, v in metric.items()}


def _sample(sample: Sequence[Any], query: str) -> tuple[float, float]:
    """``[unix_seconds, "value"]`` to floats; NaN and ±Inf (a 0/0 or x/0) become NaN."""
    try:
        ts, text = sample
        value, at = float(text), float(ts)
    except (TypeError, ValueError):
        raise _malformed(query, "a sample that is not [time, value]") from None
    if not math.isfinite(at):
        raise _malformed(query, f"a sample at time {ts!r}")
    return at, value if math.isfinite(value) else math.nan


def _check_not_negative(values: np.ndarray[Any, Any], *, start: float, step_seconds: float,
                        query: str) -> None:
    negative = np.flatnonzero(values < 0)  # NaN compares False
    if negative.size:
        i = int(negative[0])
        raise _negative(query, float(values[i]), start + (i + 1) * step_seconds)


def _negative(query: str, value: float, at: float) -> BadQuery:
    # rate() is never negative; a negative "arrival rate" means the query is not a rate of a
    # counter (deriv(), a difference of gauges…), which no amount of waiting will fix.
    return BadQuery(f"query {_shorten(query)} returned a negative arrival rate ({value:g} at "
                    f"{_when(at)}); use rate() of a request counter")


def _ambiguous(query: str, label_sets: Sequence[Mapping[str, str]]) -> AmbiguousQuery:
    # Label names, never values: the message is in a status other tenants may read, and
    # values would let a policy list another namespace's series.
    differing = sorted({k for m in label_sets for k in m
                        if len({o.get(k) for o in label_sets}) > 1})
    names = ", ".join(differing[:5]) or "none"
    return AmbiguousQuery(f"query {_shorten(query)} returned several series (differing in "
                          f"labels: {_shorten(names)}); aggregate them into one, e.g. "
                          f"sum(rate(...))")


def _malformed(query: str, what: str) -> PrometheusUnavailable:
    return PrometheusUnavailable(f"Prometheus answered query {_shorten(query)} with {what}; "
                                 f"is the URL a Prometheus API?")


def _label_key(metric: Mapping[str, str]) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items())) + "}"


def _promql_duration(seconds: float) -> str:
    # Prometheus durations take no fractions ("1.5s" is a parse error): whole seconds or ms.
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"


def _format_time(seconds: float) -> str:
    # Prometheus stores milliseconds; three decimals keep a sub-second grid exact.
    return f"{seconds:.3f}"


def _when(seconds: float) -> str:
    """A time for messages: ISO-8601 UTC, which a user can check against their dashboards."""
    return _datetime(seconds).isoformat(timespec="seconds").replace("+00:00", "Z")


def _datetime(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def redact_url(url: str) -> str:
    """The URL without user:password, for messages that end up in status conditions and
    for what is written down (a model card)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _shorten(text: str) -> str:
    text = _one_line(text)
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


def _one_line(text: str) -> str:
    return " ".join(text.split())
