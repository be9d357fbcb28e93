"""Why the server refuses a call; each maps to one gRPC status code (see :mod:`.server`)."""

from __future__ import annotations

import traceback

from fedstyle_secure.errors import TransportError

MAX_REFUSAL_CHARS = 2000
"""Longest refusal text sent or logged. Refusals quote what the caller sent (a layout field's name,
an artist id), and a 3.9 MB layout name was echoed whole into the server's log at every refused
call and into a status over gRPC's metadata limit, which the caller then never saw (red-team
review, 2026-12-01)."""


def refusal_text(reason: object) -> str:
    """``reason`` (an exception or a text) cut to :data:`MAX_REFUSAL_CHARS` characters, saying how long it was."""
    text = str(reason)
    if len(text) <= MAX_REFUSAL_CHARS:
        return text
    return f"{text[:MAX_REFUSAL_CHARS]}... (cut at {MAX_REFUSAL_CHARS} of {len(text)} characters)"


def unexpected_error_text(exc: BaseException) -> str:
    """The traceback of ``exc`` for a log, its message cut by :func:`refusal_text`: an error raised
    while handling a peer's message may quote that message (``log.exception`` would log it whole)."""
    frames = "".join(traceback.format_tb(exc.__traceback__))
    return f"Traceback (most recent call last):\n{frames}{type(exc).__name__}: {refusal_text(exc)}"


class Rejected(TransportError):
    """Base: a submission the server refuses; ``code`` is the gRPC status code name."""

    code = "INVALID_ARGUMENT"


class Malformed(Rejected):
    """The message does not decode, or its content contradicts the round (lengths, dtypes)."""


class WrongRound(Rejected):
    """Wrong round id or phase, or the artist is not a participant of this round."""

    code = "FAILED_PRECONDITION"


class PastDeadline(Rejected):
    code = "DEADLINE_EXCEEDED"


class Duplicate(Rejected):
    """A replayed nonce or a second submission of the same kind in the same round."""

    code = "ALREADY_EXISTS"


class NotAuthenticated(Rejected):
    code = "UNAUTHENTICATED"


class Forbidden(Rejected):
    code = "PERMISSION_DENIED"


class Unsupported(Rejected):
    code = "UNIMPLEMENTED"


class Unavailable(Rejected):
    """The server cannot answer yet because of its own failure (it retries); the call was fine."""

    code = "UNAVAILABLE"
