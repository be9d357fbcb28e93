"""Why the server refuses a call; each maps to one gRPC status code (see :mod:`.server`)."""

from __future__ import annotations

from fedstyle_secure.errors import TransportError


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
