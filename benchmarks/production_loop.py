"""What the production loop costs the service: capture's cost on request latency, and release swaps under load.

    python benchmarks/production_loop.py                      # models/model.onnx; JSON in benchmarks/results/
    python benchmarks/production_loop.py --requests 500 --rounds 1 --swaps 5     # a quick look

1. **Capture's cost.** The service is started with capture off, at sampling 1.0 and at 0.1, in interleaved rounds
   (a slow spell of the machine touches every configuration alike), and loaded by ``--concurrency`` clients sending
   one unique image per request (never a duplicate: every sampled image is a new file, written and fsynced, the
   costliest case; the shift filter is opened so that random images are captured too). Latency p50 and p99 are the
   medians over the rounds. Target: p50 at each sampling rate within 5 % of capture off.
2. **Swaps under load.** A service follows a ``models/production`` link to one of two releases (copies of the model
   under different ids) while ``--concurrency`` clients keep sending; the link is moved ``--swaps`` times. A swap's
   duration is the time from the link moving to ``/health`` naming the new release. Target: 0 failed requests.

Loopback only, bounded: every request goes to a service this script started on 127.0.0.1. Exit status 1 if a
target is missed.
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
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
from tada.promote import ModelStore  # noqa: E402

P50_TARGET = 0.05  # capture's p50 within 5 % of capture off
CONFIGS = {"off": [], "rate 1.0": ["--capture-rate", "1.0"], "rate 0.1": ["--capture-rate", "0.1"]}


def unique_bodies(count: int, size: int, channels: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    shape = (size, size) if channels == 1 else (size, size, 3)
    images = []
    for _ in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(buffer, format="PNG")
        images.append(loadtest.multipart([buffer.getvalue()]))
    return images


def metadata(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/metadata", timeout=30) as response:
        return json.load(response)


def health(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/health", timeout=30) as response:
        return json.load(response)


def capture_cost(model: Path, requests: int, concurrency: int, rounds: int, threads: int) -> dict:
    results: dict[str, list[dict]] = {name: [] for name in CONFIGS}
    with tempfile.TemporaryDirectory(prefix="tada-capture-bench-") as tmp:
        for r in range(rounds):
            for name, extra in CONFIGS.items():
                args = ["--threads", str(threads)]
                if extra:
                    args += ["--capture", str(Path(tmp) / f"{r}-{name.replace(' ', '')}"),
                             "--capture-max-shift", "1e9", *extra]
                with loadtest.started_service(model, args, timeout=180) as url:
                    host, port = loadtest.loopback(url)
                    info = metadata(url)["model"]
                    channels, size, _ = info["input_size"]
                    bodies = unique_bodies(requests + 2 * concurrency, size, channels, seed=1000 * r + len(name))
                    loadtest.run_load(host, port, bodies[-2 * concurrency:], 1, 2 * concurrency, concurrency)
                    result = loadtest.run_load(host, port, bodies[:requests], 1, requests, concurrency)
                    if extra:
                        deadline = time.monotonic() + 120
                        while health(url)["capture"]["queued"] and time.monotonic() < deadline:
                            time.sleep(0.05)
                        result["capture"] = health(url)["capture"]
                    results[name].append(result)
                    print(f"round {r + 1}/{rounds}, capture {name}: p50 {result['latency_ms']['p50']} ms, p99 "
                          f"{result['latency_ms']['p99']} ms, {result['errors']} errors", flush=True)
    summary = {}
    off = statistics.median(x["latency_ms"]["p50"] for x in results["off"])
    for name, runs in results.items():
        p50 = statistics.median(x["latency_ms"]["p50"] for x in runs)
        summary[name] = {"p50_ms": p50, "p99_ms": statistics.median(x["latency_ms"]["p99"] for x in runs),
                         "throughput_rps": statistics.median(x["throughput_rps"] for x in runs),
                         "errors": sum(x["errors"] for x in runs), "p50_vs_off": round(p50 / off - 1, 4),
                         "captured": sum(x.get("capture", {}).get("captured", 0) for x in runs),
                         "dropped": sum(sum(x.get("capture", {}).get("dropped", {}).values()) for x in runs)}
    return {"summary": summary, "runs": results}


def swaps_under_load(model: Path, swaps: int, concurrency: int, threads: int, bodies: list[bytes]) -> dict:
    with tempfile.TemporaryDirectory(prefix="tada-swap-bench-") as tmp:
        store = ModelStore(Path(tmp) / "models")
        for rid in ("release-a", "release-b"):
            (store.releases / rid).mkdir(parents=True)
            (store.releases / rid / "model.onnx").write_bytes(model.read_bytes())
            (store.releases / rid / "release.json").write_text(json.dumps({"release": rid}))
        store.activate("release-a")
        with loadtest.started_service(store.link, ["--threads", str(threads), "--reload-interval", "0.1"],
                                      timeout=180) as url:
            host, port = loadtest.loopback(url)
            stop = threading.Event()
            counts = {"requests": 0, "failed": 0, "releases": {}}
            lock = threading.Lock()
            failures: list[str] = []

            def client(k: int) -> None:
                conn = http.client.HTTPConnection(host, port, timeout=60)
                i = k
                while not stop.is_set() and counts["requests"] < 200_000:
                    body = bodies[i % len(bodies)]
                    i += concurrency
                    try:
                        conn.request("POST", "/predict", body=body,
                                     headers={"Content-Type": f"multipart/form-data; boundary={loadtest.BOUNDARY}"})
                        response = conn.getresponse()
                        payload = json.loads(response.read())
                        ok, release = response.status == 200, payload.get("release")
                    except (OSError, http.client.HTTPException, ValueError) as e:
                        ok, release = False, None
                        failures.append(f"{type(e).__name__}: {e}")
                        conn.close()
                        conn = http.client.HTTPConnection(host, port, timeout=60)
                    with lock:
                        counts["requests"] += 1
                        counts["failed"] += not ok
                        counts["releases"][release] = counts["releases"].get(release, 0) + 1
                conn.close()

            workers = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
            for w in workers:
                w.start()
            durations = []
            try:
                time.sleep(1.0)
                for s in range(swaps):
                    release = ("release-b", "release-a")[s % 2]
                    started = time.perf_counter()
                    store.activate(release, reason="benchmark")
                    deadline = time.monotonic() + 120
                    while health(url)["release"]["release"] != release:
                        if time.monotonic() > deadline:
                            raise SystemExit(f"production_loop: the service did not swap to {release} in 120 s")
                        time.sleep(0.005)
                    durations.append(time.perf_counter() - started)
                    time.sleep(0.5)
            finally:
                stop.set()
                for w in workers:
                    w.join(120)
            final = health(url)["release"]
    ms = np.array(durations) * 1000
    return {"swaps": swaps, "concurrency": concurrency, "requests": counts["requests"], "failed": counts["failed"],
            "failure_examples": sorted(set(failures))[:5], "answered_by": counts["releases"],
            "swap_ms": {"median": round(float(np.median(ms)), 1), "max": round(float(ms.max()), 1),
                        "min": round(float(ms.min()), 1)},
            "server_swaps": final["swaps"], "reload_interval_s": 0.1}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "model.onnx")
    parser.add_argument("--requests", type=int, default=2000, help="per configuration and round")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--swaps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="the service's onnxruntime threads per request")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "production_loop.json")
    args = parser.parse_args(argv)
    if not args.model.is_file():
        raise SystemExit(f"production_loop: no model at {args.model}: run `dvc repro` first, or pass --model")
    if not (1 <= args.requests <= 20_000 and 1 <= args.concurrency <= 64 and 1 <= args.rounds <= 10
            and 1 <= args.swaps <= 200):
        raise SystemExit("production_loop: --requests 1..20000, --concurrency 1..64, --rounds 1..10, --swaps 1..200")
    cost = capture_cost(args.model, args.requests, args.concurrency, args.rounds, args.threads)
    info = None
    with loadtest.started_service(args.model, [], timeout=180) as url:
        info = metadata(url)["model"]
    channels, size, _ = info["input_size"]
    swap = swaps_under_load(args.model, args.swaps, args.concurrency, args.threads,
                            unique_bodies(256, size, channels, seed=7))
    summary = cost["summary"]
    within = all(summary[n]["p50_vs_off"] <= P50_TARGET for n in ("rate 1.0", "rate 0.1"))
    met = {"capture_p50_within_5_percent": within,
           "no_failed_request_over_swaps": swap["failed"] == 0,
           "no_failed_request_with_capture": all(v["errors"] == 0 for v in summary.values())}
    result = {"capture_cost": cost, "swaps": swap, "targets_met": met, "p50_target": P50_TARGET,
              "model": {k: info.get(k) for k in ("method", "backbone", "params_hash", "input_size")},
              "cpu_count": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
              "command": "python benchmarks/production_loop.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    print("\n| capture | p50 (ms) | p99 (ms) | p50 vs off | requests/s | images captured | dropped | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for name, s in summary.items():
        print(f"| {name} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} | {100 * s['p50_vs_off']:+.1f} % | "
              f"{s['throughput_rps']:.0f} | {s['captured']} | {s['dropped']} | {s['errors']} |")
    print(f"\n{swap['swaps']} swaps under {swap['concurrency']}-way load: {swap['failed']} failed of "
          f"{swap['requests']} requests; swap (link moved -> /health names it, polled every "
          f"{swap['reload_interval_s']} s) median {swap['swap_ms']['median']} ms, max {swap['swap_ms']['max']} ms")
    print("targets: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in met.items()))
    write_json_atomic(args.out, result)
    print(f"-> {args.out}")
    return 0 if all(met.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
