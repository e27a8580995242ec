"""uvicorn's h11 protocol, answering requests its HTTP parser refuses in the service's JSON and counting them.

uvicorn answers bytes that h11 cannot parse as a request (``Content-Length: abc``, two conflicting
``Content-Length`` values, a broken request line or header) with a plain-text 400 before the app sees them, so
neither the app's error shape nor its metrics would apply. This protocol sends
``{"error": "bad_content_length" | "malformed_request", "detail": ...}`` instead, with h11's status for the error
(400, 431 for an over-long head, 501 for an unsupported ``Transfer-Encoding``), and closes the connection as
uvicorn does.
"""

from __future__ import annotations

import http
import json
import sys

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from tada.serving.metrics import ServiceMetrics


def refusal(error: BaseException | None) -> tuple[int, str, str]:
    """``(status, code, detail)`` of the answer to h11's ``error`` (None: an unknown reason)."""
    status = getattr(error, "error_status_hint", 400)
    reason = str(error) if error is not None else "unknown"
    if "Content-Length" in reason:  # h11's "bad Content-Length" and "conflicting Content-Length headers"
        return status, "bad_content_length", (f"Content-Length must be one number of bytes (0-9 only, one value), "
                                              f"the HTTP parser refused the request: {reason}")
    return status, "malformed_request", f"the request is not valid HTTP/1.1, the HTTP parser refused it: {reason}"


def json_h11_protocol(metrics: ServiceMetrics) -> type[H11Protocol]:
    """An `H11Protocol` subclass for ``uvicorn.run(http=...)`` whose parser refusals are JSON, counted in
    ``metrics`` as rejected and under endpoint ``other``, method ``unknown`` (neither was read)."""

    class JsonH11Protocol(H11Protocol):
        def send_400_response(self, msg: str) -> None:
            # uvicorn calls this inside its `except h11.RemoteProtocolError`, the only place that knows why.
            status, code, detail = refusal(sys.exc_info()[1])
            body = json.dumps({"error": code, "detail": detail}).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                       (b"connection", b"close")]
            phrase = http.HTTPStatus(status).phrase.encode()
            for event in (h11.Response(status_code=status, headers=headers, reason=phrase), h11.Data(data=body),
                          h11.EndOfMessage()):
                self.transport.write(self.conn.send(event))
            self.transport.close()
            metrics.count_unparsed(code, status)

    return JsonH11Protocol
