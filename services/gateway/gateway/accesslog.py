"""One JSON line per call that reached the proxy, on the `gateway.access` logger.

Through `tracing.logs` a line looks like::

    {"time": "2025-01-01T12:00:00.123456+00:00", "level": "INFO",
     "logger": "gateway.access", "message": "/shop.orders.v1.OrdersService/GetOrder OK",
     "service": "gateway", "method": "/shop.orders.v1.OrdersService/GetOrder",
     "upstream": "orders:50052", "identity": "cus-demo", "credential": "jwt",
     "peer": "ipv4:127.0.0.1:50612", "code": "OK", "duration_ms": 1.234,
     "request_bytes": 14, "response_bytes": 120,
     "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"}

`identity` is the authenticated subject (null for anonymous callers) and
`credential` the kind that vouched for it, never the credential itself.
Byte counts are message payloads. Health and reflection, answered by the
gateway itself, are not logged (probes would drown the traffic), nor is a
request the transport refused before the proxy saw it (over the size limit).
The logger is set to INFO so the access log does not depend on LOG_LEVEL;
GATEWAY_ACCESS_LOG=false turns it off.
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc

from gateway.auth import Identity

__all__ = ["ACCESS_LOGGER", "AccessLog", "CallRecord"]

ACCESS_LOGGER = "gateway.access"


class CallRecord:
    """What the proxy learns about one call, filled in as the call goes."""

    __slots__ = (
        "code",
        "identity",
        "method",
        "peer",
        "request_bytes",
        "response_bytes",
        "started",
        "upstream",
    )

    def __init__(self, method: str, upstream: str | None) -> None:
        self.method = method
        self.upstream = upstream
        self.started = time.perf_counter()
        self.identity: Identity | None = None
        self.peer = ""
        # What an exception that escapes the proxy becomes (mesh.interceptors).
        self.code = grpc.StatusCode.INTERNAL
        self.request_bytes = 0
        self.response_bytes = 0


class AccessLog:
    def __init__(self, enabled: bool = True, logger: logging.Logger | None = None) -> None:
        self._log = logger or logging.getLogger(ACCESS_LOGGER)
        self._log.setLevel(logging.INFO)
        self.enabled = enabled

    def write_soon(self, record: CallRecord) -> None:
        """Writes `record` on the event loop's next turn.

        A handler calls this as it ends; grpc.aio then sends the response
        before the line is formatted and written, which would otherwise add
        tens of microseconds to every call's latency. The callback runs in a
        copy of the handler's context, so the line still gets its trace id.
        """
        if self.enabled:
            asyncio.get_running_loop().call_soon(self.write, record)

    def write(self, record: CallRecord) -> None:
        if not self.enabled:
            return
        identity = record.identity
        code = record.code.name
        self._log.info(
            "%s %s",
            record.method,
            code,
            extra={
                "method": record.method,
                "upstream": record.upstream,
                "identity": None if identity is None else identity.subject,
                "credential": None if identity is None else identity.credential,
                "peer": record.peer,
                "code": code,
                "duration_ms": round((time.perf_counter() - record.started) * 1000, 3),
                "request_bytes": record.request_bytes,
                "response_bytes": record.response_bytes,
            },
        )
