"""How much memory decompression-amplified images can make the service hold: many concurrent requests of small PNGs
that each decode to a 4096 x 4096 RGBA image (65 kB on the wire, 64 MiB decoded).

    python benchmarks/serving_memory.py                 # models/model.onnx; JSON in benchmarks/results/
    python benchmarks/serving_memory.py --clients 16 --requests 2    # a quick look

For each ``--max-decoding-bytes`` setting (the default 512 MiB, a tighter 128 MiB, and 1 TiB, i.e. no budget), a
fresh ``tada serve`` is started, warmed up with a normal image, its peak resident memory reset
(``/proc/PID/clear_refs``), and ``--clients`` clients send ``--requests`` requests each of one bomb at once. Reported:
the resident memory before, the peak during (``VmHWM``) and after the burst settles, and how the requests were
answered. The stated bound: the peak stays within the warm service's memory plus the decode budget plus the bodies
of the requests in flight (``clients x body``) plus `SLACK_MIB` for the runtime's own buffers; after the burst, the
service is back within `SLACK_MIB` of where it started. Exit status 1 if the default budget misses either.
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import io
import json
import platform
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
_spec = importlib.util.spec_from_file_location("loadtest", HERE / "loadtest.py")
loadtest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(loadtest)

from tada.io import write_json_atomic  # noqa: E402

MIB = 2**20
SLACK_MIB = 128
BUDGETS = {"default (512 MiB)": 512 * MIB, "128 MiB": 128 * MIB, "none (1 TiB)": 1 << 40}


def bomb(side: int = 4096) -> bytes:
    """A PNG of ``side`` x ``side`` RGBA zeros: tens of kB that decode to ``4 * side**2`` bytes."""
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((side, side, 4), np.uint8), "RGBA").save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def burst(port: int, body: bytes, clients: int, requests: int) -> Counter:
    answers: Counter = Counter()
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        start.wait()
        for _ in range(requests):
            try:
                connection.request("POST", "/predict", body=body,
                                   headers={"Content-Type": f"multipart/form-data; boundary={loadtest.BOUNDARY}"})
                response = connection.getresponse()
                payload = json.loads(response.read())
                outcome = f"{response.status} {payload.get('error', 'ok')}"
            except (OSError, http.client.HTTPException, ValueError) as e:
                outcome = f"{type(e).__name__}"
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
            with lock:
                answers[outcome] += 1
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


def measure(model: Path, budget: int, body: bytes, warm: bytes, clients: int, requests: int) -> dict:
    port = loadtest.free_port()
    cmd = [sys.executable, "-m", "tada.serving", str(model), "--port", str(port), "--max-decoding-bytes",
           str(budget), "--max-connections-per-client", str(max(64, clients)), "--body-timeout", "300"]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise SystemExit(f"serving_memory: the service exited: {process.stderr.read()}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("serving_memory: the service did not start within 60 s") from None
                time.sleep(0.2)
        burst(port, warm, 4, 5)  # onnxruntime's arenas, the threads, Pillow: what any traffic brings
        before = status_kib(process.pid, "VmRSS")
        Path(f"/proc/{process.pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        started = time.perf_counter()
        answers = burst(port, body, clients, requests)
        seconds = time.perf_counter() - started
        peak = status_kib(process.pid, "VmHWM")
        time.sleep(2.0)
        after = status_kib(process.pid, "VmRSS")
    finally:
        process.terminate()
        process.wait(timeout=30)
    bound = before / 1024 + budget / MIB + clients * len(body) / MIB + SLACK_MIB
    return {"budget_bytes": budget, "rss_before_mib": round(before / 1024, 1), "rss_peak_mib": round(peak / 1024, 1),
            "rss_after_mib": round(after / 1024, 1), "bound_mib": round(bound, 1),
            "within_bound": peak / 1024 <= bound, "returned": after / 1024 <= before / 1024 + SLACK_MIB,
            "answers": dict(answers), "seconds": round(seconds, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "model.onnx")
    parser.add_argument("--clients", type=int, default=40)
    parser.add_argument("--requests", type=int, default=5, help="requests per client, each one bomb")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serving_memory.json")
    args = parser.parse_args(argv)
    if not args.model.is_file():
        raise SystemExit(f"serving_memory: no model at {args.model}: run `dvc repro` first, or pass --model")
    image = bomb()
    body, warm = loadtest.multipart([image]), loadtest.multipart([loadtest.load_images(None, {"model": {
        "input_size": [1, 28, 28]}}, 1)[0]])
    results = {}
    for name, budget in BUDGETS.items():
        results[name] = measure(args.model, budget, body, warm, args.clients, args.requests)
        print(json.dumps({name: results[name]}), file=sys.stderr, flush=True)
    lines = [f"{args.clients} clients x {args.requests} requests, each one PNG of {len(image) / 1024:.0f} kB that "
             "decodes to 4096 x 4096 RGBA (64 MiB):", "",
             "| decode budget | RSS before (MiB) | peak (MiB) | after (MiB) | bound (MiB) | answers |",
             "|---|---|---|---|---|---|"]
    for name, r in results.items():
        answers = ", ".join(f"{n} × {k}" for k, n in sorted(r["answers"].items()))
        lines.append(f"| {name} | {r['rss_before_mib']} | {r['rss_peak_mib']} | {r['rss_after_mib']} | "
                     f"{r['bound_mib'] if r['budget_bytes'] < 1 << 40 else '-'} | {answers} |")
    default = results["default (512 MiB)"]
    ok = default["within_bound"] and default["returned"]
    lines += ["", f"Default budget: peak within the bound {'(met)' if default['within_bound'] else '(NOT met)'}, "
              f"memory given back after the burst {'(met)' if default['returned'] else '(NOT met)'}."]
    print("\n".join(lines))
    write_json_atomic(args.out, {
        "command": " ".join(["python", "benchmarks/serving_memory.py", *(argv if argv is not None else sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {platform.processor() or '?'}",
        "bomb_bytes": len(image), "clients": args.clients, "requests_per_client": args.requests,
        "slack_mib": SLACK_MIB, "results": results, "ok": ok, "markdown": "\n".join(lines)})
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
