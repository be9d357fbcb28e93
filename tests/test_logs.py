"""Both log formats carry the structured fields of a log call (round, bytes, artist, ...)."""

from __future__ import annotations

import json
import logging

from fedstyle_secure.transport.logs import JsonFormatter, TextFormatter


def _record(**fields: object) -> logging.LogRecord:
    record = logging.LogRecord(
        "fedstyle_secure.transport.server.servicer", logging.INFO, "f.py", 1, "round state saved", (), None
    )
    record.__dict__.update(fields)
    return record


def test_text_lines_show_the_fields_json_lines_carry():
    """The default text format printed "round state saved" with no round and no bytes: the README's
    progress fields existed only with --log-format json (a helper's walkthrough, 2026-12-02)."""
    record = _record(round=3, bytes_received=1077290, artist="alice")
    text = TextFormatter().format(record)
    assert text.endswith('round state saved (round=3 bytes_received=1077290 artist="alice")'), text
    entry = json.loads(JsonFormatter().format(record))
    assert {k: entry[k] for k in ("round", "bytes_received", "artist")} == {
        "round": 3,
        "bytes_received": 1077290,
        "artist": "alice",
    }
    assert TextFormatter().format(_record()).endswith("servicer: round state saved")  # no fields, no brackets
