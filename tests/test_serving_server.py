"""The service behind a real uvicorn server on a free 127.0.0.1 port, configured as ``tada serve`` configures it
(`uvicorn_options`), fed by a raw socket: what no HTTP client library sends (a malformed ``Content-Length``, a
body trickled slower than ``body_timeout``) still gets the service's JSON error, is counted, and the server keeps
serving."""

import contextlib
import json
import select
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from prometheus_text import metric
from serving_model import tiny_model

from tada.serving.app import create_app
from tada.serving.server import make_predictor, uvicorn_options
from tada.serving.settings import ServeSettings

WAIT_S = 30  # the longest any single step may take on a busy 2-core machine
MULTIPART_HEAD = "POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


@contextlib.contextmanager
def running(tiny, **overrides) -> Iterator[int]:
    """A uvicorn server of the service for ``tiny`` on a free loopback port (port 0: the OS picks), in a thread;
    its port."""
    settings = ServeSettings(model=tiny.onnx, port=0, **overrides)
    app = create_app(make_predictor(settings), settings)  # as `tada serve` builds it
    server = uvicorn.Server(uvicorn.Config(**uvicorn_options(app, settings)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(WAIT_S)
        assert not thread.is_alive(), "the server did not stop"


def answer(raw: bytes) -> tuple[str, dict[str, str], dict]:
    """The status line, headers (lower-case names) and JSON body of a raw HTTP response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
    return status, headers, json.loads(body)


def still_serving(port: int) -> str:
    """``/metrics`` once ``/health`` has answered 200 on a new connection."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=WAIT_S) as client:
        health = client.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        return client.get("/metrics").text


MALFORMED = {  # name -> (request bytes, status line, error code, words of the message)
    "not a number": ((MULTIPART_HEAD + "Content-Length: abc\r\n\r\n").encode(), "HTTP/1.1 400 Bad Request",
                     "bad_content_length", "bad Content-Length"),
    "two conflicting values": ((MULTIPART_HEAD + "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello").encode(),
                               "HTTP/1.1 400 Bad Request", "bad_content_length",
                               "conflicting Content-Length headers"),
    "not HTTP": (b"HELLO THERE\r\n\r\n", "HTTP/1.1 400 Bad Request", "malformed_request", "not valid HTTP/1.1"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_request_the_http_parser_refuses_gets_a_json_error_and_the_server_keeps_serving(tiny, case):
    request, status_line, code, words = MALFORMED[case]
    with running(tiny) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as s:
            s.sendall(request)
            raw = b"".join(iter(lambda: s.recv(65536), b""))  # until the server closes the connection
        status, headers, body = answer(raw)
        assert status == status_line, raw
        assert headers["content-type"] == "application/json" and headers["connection"] == "close"
        assert set(body) == {"error", "detail"} and body["error"] == code and words in body["detail"], body
        if code == "bad_content_length":
            assert "Content-Length must be one number of bytes" in body["detail"]
        text = still_serving(port)
        assert metric(text, "tada_rejected_requests_total", reason=code) == 1
        assert metric(text, "tada_requests_total", endpoint="other", method="unknown", status=400) == 1


def test_a_body_trickled_slower_than_body_timeout_gets_a_json_408_and_the_connection_is_closed(tiny):
    timeout = 1.0
    with running(tiny, body_timeout=timeout) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as s:
            s.sendall((MULTIPART_HEAD + "Content-Length: 100000\r\n\r\n").encode())
            start, raw, sent, answered_after = time.monotonic(), b"", 0, None
            while True:  # one byte every timeout / 4 s: the body would take hours, but the client never goes quiet
                assert time.monotonic() - start < 10 * timeout + WAIT_S, "no answer, or the connection stayed open"
                if select.select([s], [], [], timeout / 4)[0]:
                    chunk = s.recv(65536)
                    if not chunk:
                        break  # closed by the server
                    answered_after = answered_after or time.monotonic() - start
                    raw += chunk
                elif answered_after is None:
                    s.sendall(b"x")
                    sent += 1
        assert sent >= 2 and answered_after >= 0.9 * timeout  # trickling all along, answered at the deadline
        status, headers, body = answer(raw)
        assert status == "HTTP/1.1 408 Request Timeout" and headers["connection"] == "close"
        assert body["error"] == "body_timeout", body
        assert "did not arrive within the limit of 1 s" in body["detail"] and "bytes received" in body["detail"]
        text = still_serving(port)
        assert metric(text, "tada_rejected_requests_total", reason="body_timeout") == 1
        assert metric(text, "tada_requests_total", endpoint="/predict", method="POST", status=408) == 1
