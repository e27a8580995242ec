"""uvicorn's h11 protocol, answering requests its HTTP parser refuses in the service's JSON and counting them.

uvicorn answers bytes that h11 cannot parse as a request (``Content-Length: abc``, two conflicting
``Content-Length`` values, a broken request line or header) with a plain-text 400 before the app sees them, so
neither the app's error shape nor its metrics would apply. This protocol sends
``{"error": "bad_content_length" | "malformed_request", "detail": ...}`` instead, with h11's status for the error
(400, 431 for an over-long head, 501 for an unsupported ``Transfer-Encoding``), and closes the connection as
uvicorn does.

It also bounds what connections can hold (uvicorn itself has no header timeout and no connection cap, so a client
sending its headers a byte every few seconds held a connection for ever, and enough of them, under a small
descriptor limit, starved ``/health``):

- ``header_timeout``: a request's headers must arrive within this many seconds of the connection opening or of the
  previous answer; otherwise 408 ``header_timeout`` and the connection is closed (the body has ``body_timeout``).
- ``max_connections`` open connections in all (at most the process's descriptor limit less `RESERVED_FDS`, so
  accepting never runs out of descriptors), ``max_connections_per_client`` from one client address: a connection
  over either is answered 503 ``too_many_connections`` at once and closed, and those already open keep being served.
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
import resource
import sys
from collections import Counter

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from tada.serving.metrics import ServiceMetrics
from tada.serving.settings import ServeSettings

log = logging.getLogger("tada.serving")
RESERVED_FDS = 64  # descriptors kept for everything but client connections (model, logs, capture, threads)


def connection_cap(requested: int) -> int:
    """``requested``, lowered to the soft descriptor limit less `RESERVED_FDS` where that is smaller."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return requested
    return max(1, min(requested, soft - RESERVED_FDS))


def refusal(error: BaseException | None) -> tuple[int, str, str]:
    """``(status, code, detail)`` of the answer to h11's ``error`` (None: an unknown reason)."""
    status = getattr(error, "error_status_hint", 400)
    reason = str(error) if error is not None else "unknown"
    if "Content-Length" in reason:  # h11's "bad Content-Length" and "conflicting Content-Length headers"
        return status, "bad_content_length", (f"Content-Length must be one number of bytes (0-9 only, one value), "
                                              f"the HTTP parser refused the request: {reason}")
    return status, "malformed_request", f"the request is not valid HTTP/1.1, the HTTP parser refused it: {reason}"


def json_h11_protocol(metrics: ServiceMetrics, settings: ServeSettings | None = None) -> type[H11Protocol]:
    """An `H11Protocol` subclass for ``uvicorn.run(http=...)`` whose parser refusals are JSON, counted in
    ``metrics`` as rejected and under endpoint ``other``, method ``unknown`` (neither was read), with the header
    timeout and connection caps of ``settings`` (default `ServeSettings`)."""
    settings = settings or ServeSettings()
    cap = connection_cap(settings.max_connections)
    per_client = min(settings.max_connections_per_client, cap)
    if cap < settings.max_connections:
        log.warning("max_connections lowered from %d to %d: the descriptor limit (ulimit -n) is %d",
                    settings.max_connections, cap, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    open_by_client: Counter[str] = Counter()  # one event loop: no lock needed
    total = [0]

    class JsonH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None
        _counted: str | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            client = self.client[0] if self.client else "unknown"
            if total[0] >= cap or open_by_client[client] >= per_client:
                what = (f"{open_by_client[client]} connections from {client} are open, at most {per_client}"
                        if total[0] < cap else f"{total[0]} connections are open, at most {cap}")
                self._refuse(503, "too_many_connections", f"{what}: close some, or retry later",
                             headers=[(b"retry-after", b"5")])
                return
            self._counted = client
            open_by_client[client] += 1
            total[0] += 1
            self._arm_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_header_timer()
            if self._counted is not None:
                open_by_client[self._counted] -= 1
                if not open_by_client[self._counted]:
                    del open_by_client[self._counted]
                total[0] -= 1
                self._counted = None
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._header_timer is not None and self.conn.their_state is not h11.IDLE:
                self._disarm_header_timer()  # the request line and headers are in

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self._arm_header_timer()  # the next request's headers, on a kept-alive connection

        def _arm_header_timer(self) -> None:
            self._disarm_header_timer()
            self._header_timer = self.loop.call_later(settings.header_timeout, self._header_timed_out)

        def _disarm_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_timed_out(self) -> None:
            self._header_timer = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return
            self._refuse(408, "header_timeout", f"the request's headers did not arrive within the limit of "
                         f"{settings.header_timeout:g} s: send them at once")

        def _refuse(self, status: int, code: str, detail: str,
                    headers: list[tuple[bytes, bytes]] | None = None) -> None:
            """Answer ``status`` with the service's JSON error outside any request cycle, and close."""
            body = json.dumps({"error": code, "detail": detail}).encode()
            head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"), *(headers or [])]
            phrase = http.HTTPStatus(status).phrase.encode()
            try:
                for event in (h11.Response(status_code=status, headers=head, reason=phrase), h11.Data(data=body),
                              h11.EndOfMessage()):
                    self.transport.write(self.conn.send(event))
            except h11.LocalProtocolError:  # h11 cannot answer in its state: just close
                pass
            self.transport.close()
            metrics.count_unparsed(code, status)

        def send_400_response(self, msg: str) -> None:
            # uvicorn calls this inside its `except h11.RemoteProtocolError`, the only place that knows why.
            status, code, detail = refusal(sys.exc_info()[1])
            self._refuse(status, code, detail)

    return JsonH11Protocol
