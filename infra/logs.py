"""One JSON object per log line, carrying the trace it belongs to.

Every role logs through ``logging_config()``: the Faust workers pass it to
their Worker, uvicorn to its server, the CLI to ``dictConfig``. A line names
its time, level, logger and message, the ``trace_id``/``span_id`` of the
OpenTelemetry span current when it was written (the correlation id that
follows a command from the gateway through Kafka to the read models), and
whatever the caller passed in ``extra``. Fields that could carry a secret are
replaced before the line is written, wherever they come from.

``BITEX_LOG_FORMAT=text`` gives plain lines for a terminal; ``BITEX_LOG_LEVEL``
sets the level (``info`` by default).
"""

from __future__ import annotations

import logging
import math
import os
from datetime import UTC, datetime
from typing import Any

import orjson
from opentelemetry import trace

SECRET_FIELDS = frozenset(
    {"password", "password_hash", "secret", "token", "authorization", "signature", "bx-sign"}
)
"""``extra`` keys that are never written as they are."""
REDACTED = "[redacted]"

_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "color_message"}
)
"""Attributes every LogRecord has (and uvicorn's terminal copy of its message);
anything else on a record came from ``extra``."""


class JsonFormatter(logging.Formatter):
    """A LogRecord as one line of JSON, keys sorted; what JSON lacks is written as ``str()``."""

    def __init__(self) -> None:
        super().__init__()
        self._second: tuple[int, str] = (-1, "")
        """The last whole second written, and its text (one tuple: threads may share it)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": self._utc_millis(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            line["trace_id"] = format(span.trace_id, "032x")
            line["span_id"] = format(span.span_id, "016x")
        fields = record.__dict__
        for key in fields.keys() - _STANDARD:  # what came from ``extra`` (sorted below)
            if not key.startswith("_"):
                line[key] = REDACTED if key.lower() in SECRET_FIELDS else fields[key]
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str, option=orjson.OPT_SORT_KEYS).decode()

    def _utc_millis(self, created: float) -> str:
        """``created`` as ``datetime.fromtimestamp(created, UTC).isoformat(timespec=
        "milliseconds")`` writes it, the date and time of day made once a second (the
        gateway writes a line per request)."""
        second = math.floor(created)
        micros = round((created - second) * 1_000_000)  # rounded as fromtimestamp rounds
        if micros == 1_000_000:
            second, micros = second + 1, 0
        known, text = self._second
        if second != known:
            text = datetime.fromtimestamp(second, UTC).isoformat()[:19]
            self._second = (second, text)
        return f"{text}.{micros // 1000:03d}+00:00"


def log_level() -> str:
    return os.environ.get("BITEX_LOG_LEVEL", "info").upper()


def json_logs() -> bool:
    """Whether lines are JSON (the default) rather than text for a terminal."""
    return os.environ.get("BITEX_LOG_FORMAT", "json").lower() != "text"


def logging_config(level: str | None = None) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for every role: one handler on stdout."""
    text = not json_logs()
    formatter: dict[str, Any] = (
        {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
        if text
        else {"()": JsonFormatter}
    )
    level = level or log_level()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stdout",
            }
        },
        "root": {"level": level, "handlers": ["default"]},
        "loggers": {
            # uvicorn's own loggers propagate to the root handler, so they are JSON too.
            name: {"level": level, "handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }


def setup_logging(level: str | None = None) -> None:
    """Configure the process's logging (the CLI's composition root calls this)."""
    import logging.config

    logging.config.dictConfig(logging_config(level))
