"""Count the protobuf bytes the server receives and sends, per RPC method.

A gRPC server interceptor wraps every handler and adds ``ByteSize()`` of each request and
response message (serialised protobuf payload; gRPC framing, HTTP/2 and TLS overhead are not
included).  Totals are cumulative since start; the server logs them with every saved round so
a benchmark can take per-round differences.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import grpc


class ByteMeter(grpc.ServerInterceptor):
    """Thread-safe cumulative byte counters: ``received[method]`` and ``sent[method]`` in bytes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.received: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()

    def totals(self) -> tuple[int, int]:
        """(bytes received, bytes sent) over all methods so far."""
        with self._lock:
            return sum(self.received.values()), sum(self.sent.values())

    def _add(self, counter: Counter[str], method: str, message: Any) -> None:
        size = message.ByteSize() if hasattr(message, "ByteSize") else 0
        with self._lock:
            counter[method] += size

    def _count_stream(self, counter: Counter[str], method: str, messages: Iterator[Any]) -> Iterator[Any]:
        for message in messages:
            self._add(counter, method, message)
            yield message

    def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method.rsplit("/", 1)[-1]
        if handler.unary_unary:
            return handler._replace(unary_unary=self._wrap(handler.unary_unary, method, False, False))
        if handler.unary_stream:
            return handler._replace(unary_stream=self._wrap(handler.unary_stream, method, False, True))
        if handler.stream_unary:
            return handler._replace(stream_unary=self._wrap(handler.stream_unary, method, True, False))
        if handler.stream_stream:
            return handler._replace(stream_stream=self._wrap(handler.stream_stream, method, True, True))
        return handler

    def _wrap(self, behaviour: Callable, method: str, stream_in: bool, stream_out: bool) -> Callable:
        def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
            if stream_in:
                request = self._count_stream(self.received, method, request)
            else:
                self._add(self.received, method, request)
            response = behaviour(request, context)
            if stream_out:
                return self._count_stream(self.sent, method, response)
            self._add(self.sent, method, response)
            return response

        return wrapped
