"""Admission of every call before its request body is read: identity, per-identity concurrency,
and the call's own checks from its metadata (e.g. round and phase).

gRPC Python reads a unary request message in full before the handler runs.  The
:class:`CallGate` interceptor therefore serves every method in its *request-streaming* form (the
bytes on the wire are the same for both): the handler gets the request iterator, and no message
is received before the gate has

1. identified the caller from its verified TLS certificate (``identify``),
2. taken one of the caller's call slots (:class:`ConcurrencyLimiter`), and
3. run ``admit(method, caller, metadata)`` -- e.g. "is this upload for the current round and phase?".

A refusal at any step is immediate, with its status and a message naming the limit; the slot is
held until the handler (and its response stream) is done, so the number of busy worker threads
per identity is bounded by the same limit.  Size the server's thread pool with
:meth:`CallLimits.workers`, so one identity at its limit can never take the threads the others need.

Threat model: an authenticated artist or buyer may open as many calls as it likes, park long
polls, or stream huge bodies for a wrong round; it must not delay the others' calls.  What is
*not* bounded here: the rate of calls that are refused at once (each briefly takes a worker
thread); network-level flooding is for the operator's firewall / rate limiter.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc

from fedstyle_secure.federation.rejections import Malformed, Rejected, refusal_text
from fedstyle_secure.secure.keys import pki
from fedstyle_secure.transport.auth import Caller

log = logging.getLogger(__name__)

SPARE_WORKERS = 4  # threads beyond every identity's slots: they serve the calls being refused


def refuse(context: grpc.ServicerContext, method: str, code: grpc.StatusCode, exc: Exception) -> NoReturn:
    """End the call with ``code`` and ``exc``'s message, logged (INFO) first, so a run that stalls
    shows who was refused and why.  Every refusal of the server goes through here."""
    text = refusal_text(exc)
    log.info("refused %s from %s: %s (%s)", method, context.peer(), text, code.name)
    context.abort(code, text)
    raise exc  # not reached: abort() raises


class TooManyCalls(Rejected):
    """An identity (or all buyers together) already has its maximum of calls in flight."""

    code = "RESOURCE_EXHAUSTED"


@dataclass(frozen=True)
class CallLimits:
    """``per_identity``: calls one certificate identity may have in flight (long polls and streams
    count); ``buyers_total``: calls all buyer certificates together may have in flight."""

    per_identity: int
    buyers_total: int

    def workers(self, n_artists: int) -> int:
        """Worker threads so that every artist at its limit and all buyers at theirs still leave
        :data:`SPARE_WORKERS` free to refuse excess calls at once."""
        return n_artists * self.per_identity + self.buyers_total + SPARE_WORKERS


class ConcurrencyLimiter:
    """Thread-safe in-flight call counts per identity ``(role, id)``."""

    def __init__(self, limits: CallLimits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._calls: Counter[tuple[pki.Role, str]] = Counter()

    def acquire(self, caller: Caller) -> Callable[[], None]:
        """Take a slot for ``caller``; returns its (idempotent) release.  Raises :class:`TooManyCalls`."""
        key = (caller.role, caller.subject_id)
        with self._lock:
            if self._calls[key] >= self.limits.per_identity:
                raise TooManyCalls(
                    f"{caller.role.value} {caller.subject_id!r} already has {self._calls[key]} calls in flight; "
                    f"at most {self.limits.per_identity} concurrent calls per identity (server.max_calls_per_identity)"
                )
            buyers = sum(n for (role, _), n in self._calls.items() if role is pki.Role.BUYER)
            if caller.role is pki.Role.BUYER and buyers >= self.limits.buyers_total:
                raise TooManyCalls(
                    f"buyers already have {buyers} calls in flight; at most {self.limits.buyers_total} "
                    "together (server.max_buyer_calls)"
                )
            self._calls[key] += 1
        released = threading.Event()

        def release() -> None:
            with self._lock:
                if not released.is_set():
                    released.set()
                    self._calls[key] -= 1
                    if self._calls[key] <= 0:
                        del self._calls[key]

        return release

    def in_flight(self, role: pki.Role, subject_id: str) -> int:
        with self._lock:
            return self._calls.get((role, subject_id), 0)


Identify = Callable[[grpc.ServicerContext], Caller]
Admit = Callable[[str, Caller, Mapping[str, str]], None]


class CallGate(grpc.ServerInterceptor):
    """Serves every handler in request-streaming form behind identity, concurrency and ``admit``
    checks (see the module docstring).  ``identify`` and ``admit`` raise :class:`Rejected`."""

    def __init__(self, limiter: ConcurrencyLimiter, identify: Identify, admit: Admit) -> None:
        self.limiter, self.identify, self.admit = limiter, identify, admit

    def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method.rsplit("/", 1)[-1]
        metadata = {k: v for k, v in (handler_call_details.invocation_metadata or ()) if isinstance(v, str)}
        stream_in, stream_out = handler.request_streaming, handler.response_streaming
        behaviour = {
            (False, False): handler.unary_unary,
            (False, True): handler.unary_stream,
            (True, False): handler.stream_unary,
            (True, True): handler.stream_stream,
        }[(stream_in, stream_out)]
        gated = self._gated(behaviour, method, metadata, stream_in, stream_out)
        make = grpc.stream_stream_rpc_method_handler if stream_out else grpc.stream_unary_rpc_method_handler
        return make(
            gated, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
        )

    def _gated(
        self, behaviour: Callable, method: str, metadata: Mapping[str, str], stream_in: bool, stream_out: bool
    ) -> Callable:
        def gated(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            release: Callable[[], None] | None = None
            try:
                caller = self.identify(context)
                release = self.limiter.acquire(caller)
                self.admit(method, caller, metadata)
                response = behaviour(requests if stream_in else _only_message(requests, method), context)
            except Rejected as exc:
                if release is not None:
                    release()
                refuse(context, method, getattr(grpc.StatusCode, exc.code), exc)
            except BaseException:
                if release is not None:
                    release()
                raise
            if not stream_out:
                release()
                return response
            context.add_callback(release)  # also freed if the client goes away mid-stream
            return _releasing(response, release)

        return gated


def _only_message(requests: Iterator[Any], method: str) -> Any:
    """The single request message of a unary method (received only now, after admission)."""
    message = next(iter(requests), None)
    if message is None:
        raise Malformed(f"{method} expects one request message, got none")
    return message


def _releasing(responses: Iterator[Any], release: Callable[[], None]) -> Iterator[Any]:
    try:
        yield from responses
    finally:
        release()
