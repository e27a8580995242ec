"""Load test of the HTTP service on the loopback interface: a bounded number of POST /predict requests from
concurrent clients; prints throughput, latency percentiles and the error count, and writes them as JSON.

    python benchmarks/loadtest.py --model models/model.onnx                 # starts the service itself, 2000 x 16
    python benchmarks/loadtest.py --url http://127.0.0.1:8000 --requests 500 --concurrency 4

Only loopback addresses are accepted: this is a benchmark of this machine, never traffic to somebody else's server.
Each client is a thread with one keep-alive connection (http.client, no extra dependency), so the client side costs
little next to the server, but it shares the CPU cores with it: the figures are those of client and server on one
machine. A request is an error if it does not answer 200 with one prediction per image sent. Exit status 1 if any
request failed or the error count is over ``--max-errors``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import ipaddress
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

MAX_REQUESTS = 100_000  # bounded: a load test, not a flood
BOUNDARY = "tada-loadtest-boundary"


def loopback(url: str) -> tuple[str, int]:
    """``(host, port)`` of ``url``, which must be ``http://`` on a loopback address."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise SystemExit(f"loadtest: --url must be http://HOST:PORT, got {url!r}")
    addresses = {info[4][0] for info in socket.getaddrinfo(parts.hostname, parts.port or 80)}
    if not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise SystemExit(f"loadtest: {parts.hostname} is not a loopback address ({', '.join(sorted(addresses))}); "
                         "this script only loads a service on this machine")
    return parts.hostname, parts.port or 80


def multipart(images: list[bytes]) -> bytes:
    body = io.BytesIO()
    for i, data in enumerate(images):
        body.write(f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"{i}.png\"\r\n"
                   "Content-Type: image/png\r\n\r\n".encode())
        body.write(data + b"\r\n")
    body.write(f"--{BOUNDARY}--\r\n".encode())
    return body.getvalue()


def load_images(folder: Path | None, metadata: dict, count: int = 64) -> list[bytes]:
    """PNG files from ``folder`` (the first ``count``), or ``count`` random images of the model's size and mode."""
    if folder is not None:
        files = sorted(p for p in folder.rglob("*.png"))[:count]
        if not files:
            raise SystemExit(f"loadtest: no .png files under {folder}")
        return [p.read_bytes() for p in files]
    channels, size, _ = metadata["model"]["input_size"]
    rng = np.random.default_rng(0)
    encoded = []
    for _ in range(count):
        pixels = rng.integers(0, 256, (size, size) if channels == 1 else (size, size, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    return encoded


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def started_service(model: Path, extra: list[str], timeout: float = 60.0) -> Iterator[str]:
    """``python -m tada.serving MODEL`` on a free loopback port, stopped (SIGTERM, then SIGKILL) on exit."""
    port = free_port()
    cmd = [sys.executable, "-m", "tada.serving", str(model), "--host", "127.0.0.1", "--port", str(port), *extra]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise SystemExit(f"loadtest: the service exited with {process.returncode}: {process.stderr.read()}")
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{url}/health", timeout=1).read()
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"loadtest: the service did not answer /health within {timeout:.0f} s")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_load(host: str, port: int, bodies: list[bytes], images_per_request: int, requests: int,
             concurrency: int) -> dict:
    """``requests`` POST /predict over ``concurrency`` keep-alive connections; latencies and errors."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    next_request = iter(range(requests))

    def client() -> None:
        connection = http.client.HTTPConnection(host, port, timeout=60)
        while True:
            with lock:
                i = next(next_request, None)
            if i is None:
                break
            body = bodies[i % len(bodies)]
            headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
            start = time.perf_counter()
            try:
                connection.request("POST", "/predict", body=body, headers=headers)
                response = connection.getresponse()
                payload = response.read()
                elapsed = time.perf_counter() - start
                ok = response.status == 200 and len(json.loads(payload)["predictions"]) == images_per_request
                error = None if ok else f"HTTP {response.status}: {payload[:200]!r}"
            except (OSError, http.client.HTTPException, ValueError, KeyError) as e:
                elapsed, error = time.perf_counter() - start, f"{type(e).__name__}: {e}"
                connection.close()
                connection = http.client.HTTPConnection(host, port, timeout=60)
            with lock:
                latencies.append(elapsed)
                if error is not None:
                    errors.append(error)
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {
        "requests": requests, "concurrency": concurrency, "images_per_request": images_per_request,
        "errors": len(errors), "error_examples": sorted(set(errors))[:5], "seconds": round(seconds, 3),
        "throughput_rps": round(requests / seconds, 1),
        "throughput_images_per_s": round(requests * images_per_request / seconds, 1),
        "latency_ms": {f"p{q}": round(float(np.percentile(ms, q)), 2) for q in (50, 95, 99)}
        | {"mean": round(float(ms.mean()), 2), "max": round(float(ms.max()), 2)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="a running service on this machine, e.g. http://127.0.0.1:8000")
    target.add_argument("--model", type=Path, help="start `python -m tada.serving MODEL` on a free port for the run")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent clients")
    parser.add_argument("--images-per-request", type=int, default=1)
    parser.add_argument("--images", type=Path, default=None,
                        help="folder of .png files to send (default: random images of the model's size)")
    parser.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for the started service (repeatable), e.g. --server-arg=--threads=1")
    parser.add_argument("--max-errors", type=int, default=0, help="exit status 1 above this many errors")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/loadtest.json"))
    args = parser.parse_args(argv)
    if not 1 <= args.requests <= MAX_REQUESTS or not 1 <= args.concurrency <= 256 or args.images_per_request < 1:
        raise SystemExit(f"loadtest: --requests must be in 1..{MAX_REQUESTS}, --concurrency in 1..256, "
                         "--images-per-request >= 1")

    with contextlib.ExitStack() as stack:
        url = args.url or stack.enter_context(started_service(args.model, args.server_arg))
        host, port = loopback(url)
        with urllib.request.urlopen(f"{url}/metadata", timeout=10) as response:
            metadata = json.load(response)
        images = load_images(args.images, metadata)
        n = args.images_per_request
        bodies = [multipart([images[(i * n + j) % len(images)] for j in range(n)]) for i in range(len(images))]
        run_load(host, port, bodies, n, min(args.requests, 2 * args.concurrency), args.concurrency)  # warm-up
        result = run_load(host, port, bodies, n, args.requests, args.concurrency)
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
            counted = sum(float(line.rsplit(" ", 1)[1]) for line in response.read().decode().splitlines()
                          if line.startswith('tada_requests_total{endpoint="/predict"'))
    model = {k: metadata["model"].get(k) for k in ("method", "backbone", "params_hash", "input_size")}
    result |= {"url": url, "model": model, "service_counted_predict_requests": counted, "cpu_count": os.cpu_count(),
               "machine": platform.machine(), "python": platform.python_version(),
               "command": "python benchmarks/loadtest.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    lat = result["latency_ms"]
    print(f"{result['requests']} requests ({n} image{'s' * (n > 1)} each), {result['concurrency']} concurrent "
          f"clients, {url}: {result['errors']} errors")
    print(f"throughput {result['throughput_rps']} requests/s ({result['throughput_images_per_s']} images/s) "
          f"over {result['seconds']} s")
    print(f"latency ms: p50 {lat['p50']}  p95 {lat['p95']}  p99 {lat['p99']}  (mean {lat['mean']}, max {lat['max']})")
    for example in result["error_examples"]:
        print(f"  error: {example}")
    if args.out:
        from tada.io import write_json_atomic

        write_json_atomic(args.out, result)
        print(f"-> {args.out}")
    return 1 if result["errors"] > args.max_errors else 0


if __name__ == "__main__":
    sys.exit(main())
