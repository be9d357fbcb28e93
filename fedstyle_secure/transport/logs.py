"""``--log-format json``: one JSON object per log line (time, level, logger, message, extras)."""

from __future__ import annotations

import json
import logging

LOG_FORMATS: tuple[str, ...] = ("text", "json")
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "ts": round(record.created, 6),  # seconds since the epoch, for timing from logs
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def memory_use_mb() -> dict[str, float]:
    """This process's memory in MB (``/proc/self/status``; empty off Linux), logged when a process
    finishes so a deployment can size its machines: ``peak_resident_mb`` (VmHWM), ``resident_mb``
    (VmRSS) and ``anonymous_mb`` (RssAnon: heap and tensors, what each further process on a machine
    adds; shared library pages count in every process's resident figure but are held once)."""
    fields = {"VmHWM": "peak_resident_mb", "VmRSS": "resident_mb", "RssAnon": "anonymous_mb"}
    out: dict[str, float] = {}
    try:
        with open("/proc/self/status") as status:
            for line in status:
                name, _, rest = line.partition(":")
                if name in fields:
                    out[fields[name]] = round(int(rest.split()[0]) / 1024, 1)
    except OSError:
        return {}
    return out


def configure_logging(log_format: str, verbose: bool = False) -> None:
    """Log INFO (DEBUG if ``verbose``) to stderr as ``log_format``, replacing earlier root handlers."""
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter()
        if log_format == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True)
