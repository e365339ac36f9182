"""Structured logging: one JSON line per request, and no secret in any line at any level.

Redaction is a processor every line passes through, the gateway's own and the standard library's
(aiohttp.server, aiohttp.client, asyncio), so a failure path cannot leak what the happy path hides.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import re
import sys
import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TextIO

import orjson
import structlog
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse
from structlog.types import EventDict, Processor, WrappedLogger

REDACTED = "[redacted]"
SENSITIVE_KEYS = frozenset(
    {"cookie", "set-cookie", "set_cookie", "authorization", "proxy-authorization"}
)
STDLIB_LOGGERS = ("aiohttp", "asyncio", "redis")

# Values that must not appear in any line logged while the current request is being served.
_request_secrets: ContextVar[tuple[str, ...]] = ContextVar("request_secrets", default=())


@dataclass(frozen=True, slots=True)
class AccessRecord:
    """What the access line says about one request, assembled once when its handler is done."""

    request_id: str
    client_ip: str
    path: str
    query: str
    auth: str
    upstream_status: int | None
    error: str | None
    secrets: tuple[str, ...]


RECORD_KEY: web.RequestKey[AccessRecord] = web.RequestKey("gateway.access_record", AccessRecord)


def bind_request(request_id: str, secrets: tuple[str, ...]) -> None:
    """Bind this request's id to every line logged while it is served (structlog contextvars;
    aiohttp runs each request in a task of its own, so nothing leaks into the next one), and
    remember its secret values for redaction."""
    structlog.contextvars.bind_contextvars(request_id=request_id)
    bind_secrets(secrets)


def bind_secrets(values: Iterable[str]) -> None:
    """Remember this request's secret values (session cookie, tokens) for redaction."""
    _request_secrets.set(tuple(v for v in values if len(v) >= 4))


class Redactor:
    """Replaces secret values and secret-bearing patterns in every string of an event."""

    def __init__(self, cookie_name: str) -> None:
        name = re.escape(cookie_name)
        self._patterns = re.compile(
            rf"((?:^|[\s;,&?'\"(\[{{]){name}=)[^;\s,&'\"]+"
            r"|(bearer\s+)[A-Za-z0-9._~+/=-]+"
            r"|((?:set-)?cookie['\"]?\s*[:=,]\s*['\"]?)[^'\"\n]+"
            r"|((?:proxy-)?authorization['\"]?\s*[:=,]\s*['\"]?)[^'\"\n]+",
            re.IGNORECASE,
        )

    def _sub(self, match: re.Match[str]) -> str:
        prefix = next(g for g in match.groups() if g is not None)
        return prefix + REDACTED

    def scrub(self, text: str, secrets: tuple[str, ...]) -> str:
        for secret in secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return self._patterns.sub(self._sub, text)

    def _value(self, key: str | None, value: Any, secrets: tuple[str, ...]) -> Any:
        if key is not None and key.lower() in SENSITIVE_KEYS:
            return REDACTED
        if isinstance(value, str):
            return self.scrub(value, secrets)
        if isinstance(value, dict):
            return {k: self._value(str(k), v, secrets) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            if len(value) == 2 and isinstance(value[0], str) and value[0].lower() in SENSITIVE_KEYS:
                return [value[0], REDACTED]
            return [self._value(None, v, secrets) for v in value]
        if isinstance(value, bytes):
            return self.scrub(value.decode("utf-8", "replace"), secrets)
        return value

    def __call__(self, logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
        secrets = _request_secrets.get()
        return {k: self._value(k, v, secrets) for k, v in event.items()}


def _drop_color_message(logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
    event.pop("color_message", None)
    return event


def _processors(cookie_name: str) -> list[Processor]:
    # Exceptions are rendered to text before redaction so their text is scrubbed too.
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _drop_color_message,
        Redactor(cookie_name),
    ]


def _render_json(logger: WrappedLogger, method: str, event: EventDict) -> str:
    return orjson.dumps(event, default=str).decode()


def _route_stdlib(out: TextIO, level: int, shared: list[Processor], renderer: Processor) -> None:
    """The standard library's loggers (aiohttp, asyncio, redis) through the same chain."""
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in STDLIB_LOGGERS:
        logging.getLogger(name).setLevel(level)
    # aiohttp's access logger is replaced by AccessLogger below; silence any stray use of it.
    logging.getLogger("aiohttp.access").setLevel(logging.CRITICAL + 1)


def configure_logging(
    level: str = "info",
    fmt: str = "json",
    cookie_name: str = "session",
    stream: TextIO | None = None,
) -> None:
    """Route structlog and the standard library's loggers through one redacting chain."""
    out = stream if stream is not None else sys.stdout
    numeric = logging.getLevelNamesMapping()[level.upper()]
    shared = _processors(cookie_name)
    renderer: Processor = (
        _render_json if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    _route_stdlib(out, numeric, shared, renderer)
    global _access_sink
    if _access_sink is not None:
        _access_sink.flush()
    _access_sink = (
        _AccessSink(out, Redactor(cookie_name))
        if fmt == "json" and numeric <= logging.INFO
        else None
    )


class _AccessSink:
    """Where the JSON access line goes when it can skip structlog's general chain.

    Lines are collected and written together at most ACCESS_FLUSH_SECONDS later (or when
    ACCESS_BUFFER_LINES are waiting), so a busy gateway pays one write per batch, not one per
    request; every write holds whole lines, so workers sharing stdout never split one.
    """

    def __init__(self, stream: TextIO, redactor: Redactor) -> None:
        self.stream = stream
        self.redactor = redactor
        self._lines: list[str] = []
        self._scheduled = False
        self._second = -1
        self._second_text = ""

    def write(self, line: str) -> None:
        self._lines.append(line)
        if len(self._lines) >= ACCESS_BUFFER_LINES:
            self.flush()
        elif not self._scheduled:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._scheduled = True
            loop.call_later(ACCESS_FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if self._lines:
            text = "".join(self._lines)
            self._lines.clear()
            self.stream.write(text)
            self.stream.flush()

    def access(self, fields: dict[str, Any], secrets: tuple[str, ...]) -> None:
        """The per-request JSON line, built directly: the same fields and redaction as the
        structlog chain at a tenth of its cost, since it is paid on every request. Only the
        fields that can carry client text (path, query, error) need scrubbing; the others are
        validated values."""
        scrub = self.redactor.scrub
        fields["path"] = scrub(fields["path"], secrets)
        fields["query"] = scrub(fields["query"], secrets)
        if fields["error"] is not None:
            fields["error"] = scrub(fields["error"], secrets)
        fields["event"] = "request"
        fields["level"] = "info"
        fields["timestamp"] = self._timestamp()
        self.write(orjson.dumps(fields).decode() + "\n")

    def _timestamp(self) -> str:
        """ISO 8601 UTC with microseconds, as structlog writes it; the date part is built once a
        second rather than on every line."""
        now = time.time()
        whole = int(now)
        if self._second != whole:
            self._second = whole
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        return f"{self._second_text}.{int((now - whole) * 1_000_000):06d}Z"


ACCESS_FLUSH_SECONDS = 0.05
ACCESS_BUFFER_LINES = 256


# Set by configure_logging; None means the access line goes through structlog (console format,
# or a level above info where it is dropped there). Process-wide, as structlog's own
# configuration is: every listener of the process writes to the one destination.
_access_sink: _AccessSink | None = None


def flush_access_log() -> None:
    """Write out access lines still waiting in the batch (at shutdown, and in tests)."""
    if _access_sink is not None:
        _access_sink.flush()


atexit.register(flush_access_log)


def _fields(method: str, status: int, seconds: float, record: AccessRecord) -> dict[str, Any]:
    """The access line's fields, in the order they are written."""
    return {
        "method": method,
        "path": record.path,
        "query": record.query,
        "status": status,
        "duration_ms": round(seconds * 1000, 3),
        "client_ip": record.client_ip,
        "request_id": record.request_id,
        "auth": record.auth,
        "upstream_status": record.upstream_status,
        "error": record.error,
    }


RequestObserver = Callable[[int, "AccessRecord | None", float], None]


class AccessLog:
    """What aiohttp is handed as its access "logger" object (the `access_log` server setting):
    it carries the observer that counts every finished request into the metrics."""

    def __init__(self, observer: RequestObserver | None = None) -> None:
        self.observer = observer


class AccessLogger(AbstractAccessLogger):
    """aiohttp's access logger replaced by one structured, redacted line per request.

    It sees every finished request, including those the parser refused, so it is also where
    request metrics are counted (the AccessLog's observer).
    """

    def __init__(self, logger: logging.Logger, log_format: str) -> None:
        super().__init__(logger, log_format)
        self._observer = logger.observer if isinstance(logger, AccessLog) else None
        self._log = structlog.get_logger("gateway.access")

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        record: AccessRecord | None = request.get(RECORD_KEY)
        if self._observer is not None:
            self._observer(response.status, record, time)
        if record is None:
            # The parser refused the request before the gateway saw it: log what is safe to.
            self._log.info(
                "request",
                method=request.method,
                status=response.status,
                duration_ms=round(time * 1000, 3),
                client_ip=request.remote,
                auth="none",
            )
            return
        fields = _fields(request.method, response.status, time, record)
        sink = _access_sink
        if sink is not None:
            sink.access(fields, record.secrets)
            return
        token = _request_secrets.set(record.secrets)
        try:
            self._log.info("request", **fields)
        finally:
            _request_secrets.reset(token)

    @property
    def enabled(self) -> bool:
        return True
