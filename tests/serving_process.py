"""``tada serve`` as a real process on a free loopback port, and a client loop that keeps sending images to it,
for the tests of the production loop (release swaps, capture, replicas, kill -9)."""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

START_S = 180  # onnxruntime's start on a busy 2-core machine takes seconds; the wait is bounded, not tight


def _loadtest():
    """benchmarks/loadtest.py (not a package): its multipart encoder and free-port finder serve here too."""
    spec = importlib.util.spec_from_file_location("loadtest", Path(__file__).resolve().parents[1] / "benchmarks"
                                                  / "loadtest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_LOADTEST = _loadtest()
BOUNDARY, free_port, multipart = _LOADTEST.BOUNDARY, _LOADTEST.free_port, _LOADTEST.multipart


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
            timeout: float = 60) -> tuple[int, dict[str, str], dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(data or b"null")
    finally:
        conn.close()


def get_text(port: int, path: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path)
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def predict(port: int, images: list[bytes], token: str | None = None) -> tuple[int, dict[str, str], dict]:
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return request(port, "POST", "/predict", multipart(images), headers)


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    log: Path

    def health(self) -> dict:
        return request(self.port, "GET", "/health", timeout=30)[2]

    def wait_for(self, condition: Callable[[dict], bool], what: str, timeout: float = START_S) -> dict:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the server exited {self.process.returncode}: {self.log.read_text()}"
            with contextlib.suppress(OSError, http.client.HTTPException, ValueError):
                last = self.health()
                if condition(last):
                    return last
            time.sleep(0.1)
        raise AssertionError(f"{what}: not within {timeout} s; last /health {last}\n{self.log.read_text()[-3000:]}")

    def release(self) -> str | None:
        return self.health()["release"]["release"]


@contextlib.contextmanager
def serving(model: Path, log: Path, *args: str, cwd: Path | None = None, env: dict | None = None) -> Iterator[Server]:
    """``python -m tada.serving MODEL --port P ARGS`` until the block ends (SIGTERM, then SIGKILL)."""
    port = free_port()
    with open(log, "ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "tada.serving", str(model), "--port", str(port), *args],
                                   cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, **(env or {})})
    server = Server(process, port, log)
    try:
        server.wait_for(lambda h: True, "the server answering /health")
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(60)


@dataclass
class Answer:
    started: float
    finished: float
    status: int
    release: str | None  # the body's
    header_release: str | None
    labels: list[str] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)  # indices of the images sent
    error: str | None = None


class ClientLoop:
    """Threads that each send ``per_request`` images per request, cycling through ``images``, until stopped
    (bounded: at most ``max_requests`` each). Every answer is recorded; a connection error is an answer too."""

    def __init__(self, ports: list[int], images: list[bytes], threads: int = 2, per_request: int = 4,
                 token: str | None = None, max_requests: int = 20_000, pause: float = 0.0) -> None:
        self.ports, self.images, self.per_request, self.token = ports, images, per_request, token
        self.pause = pause  # seconds between a thread's requests: leave the cores to other work (training)
        self.max_requests = max_requests
        self.answers: list[list[Answer]] = [[] for _ in range(threads)]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def __enter__(self) -> ClientLoop:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(120)

    def wait(self, timeout: float = 600) -> None:
        """Until every thread has sent its ``max_requests``."""
        for t in self._threads:
            t.join(timeout)
            assert not t.is_alive(), "the client loop did not finish"

    def count(self) -> int:
        return sum(len(a) for a in self.answers)

    def _run(self, index: int) -> None:
        n = len(self.images)
        cursor = index * self.per_request * 7 % n
        for k in range(self.max_requests):
            if self._stop.is_set():
                return
            sent = [(cursor + j) % n for j in range(self.per_request)]
            cursor = (cursor + self.per_request * len(self._threads)) % n
            port = self.ports[k % len(self.ports)]
            started = time.monotonic()
            try:
                status, headers, body = predict(port, [self.images[i] for i in sent], self.token)
                labels = [p["label"] for p in body["predictions"]] if status == 200 else []
                self.answers[index].append(Answer(started, time.monotonic(), status, (body or {}).get("release"),
                                                  headers.get("x-tada-release"), labels, sent))
            except (OSError, http.client.HTTPException, ValueError) as e:
                self.answers[index].append(Answer(started, time.monotonic(), 0, None, None, [], sent, repr(e)))
            if self.pause:
                self._stop.wait(self.pause)
