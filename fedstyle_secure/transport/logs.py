"""``--log-format json``: one JSON object per log line (time, level, logger, message, extras); ``text``
(the default): one line each, the extras as ``field=value`` after the message."""

from __future__ import annotations

import json
import logging

LOG_FORMATS: tuple[str, ...] = ("text", "json")
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def record_fields(record: logging.LogRecord) -> dict[str, object]:
    """The structured fields a call logged with ``extra=`` (round, artist, bytes, ...)."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message (field=value ...)``: the fields JSON lines carry, on one line."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = record_fields(record)
        if not fields:
            return line
        head, sep, tail = line.partition("\n")  # an exception's traceback stays below the fields
        described = " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in fields.items())
        return f"{head} ({described}){sep}{tail}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "ts": round(record.created, 6),  # seconds since the epoch, for timing from logs
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(record_fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(log_format: str, verbose: bool = False) -> None:
    """Log INFO (DEBUG if ``verbose``) to stderr as ``log_format``, replacing earlier root handlers."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True)
