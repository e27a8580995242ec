import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from serving_model import tiny_model

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "loadtest.py"


def load_script():
    spec = importlib.util.spec_from_file_location("loadtest", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_only_loopback_services_are_loaded():
    loadtest = load_script()
    assert loadtest.loopback("http://127.0.0.1:8000") == ("127.0.0.1", 8000)
    assert loadtest.loopback("http://[::1]:9000") == ("::1", 9000)
    for url in ("http://10.0.0.7:8000", "https://127.0.0.1:8000", "127.0.0.1:8000"):
        with pytest.raises(SystemExit, match="loopback|must be http"):
            loadtest.loopback(url)


@pytest.mark.slow
def test_load_test_reports_throughput_and_latency_percentiles_without_errors(tmp_path):
    out = tmp_path / "loadtest.json"
    run = subprocess.run([sys.executable, str(SCRIPT), "--model", str(tiny_model().onnx), "--requests", "300",
                          "--concurrency", "8", "--images-per-request", "2", "--out", str(out)],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "300 requests (2 images each), 8 concurrent clients" in run.stdout and ": 0 errors" in run.stdout
    assert "throughput" in run.stdout and "requests/s" in run.stdout
    assert all(f"p{q} " in run.stdout for q in (50, 95, 99))
    result = json.loads(out.read_text())
    assert result["errors"] == 0 and result["throughput_rps"] > 0
    assert result["latency_ms"]["p50"] <= result["latency_ms"]["p95"] <= result["latency_ms"]["p99"]
    assert result["service_counted_predict_requests"] == 300 + 16  # the run and its warm-up, as /metrics counted


@pytest.mark.slow
def test_the_production_loop_benchmark_measures_capture_cost_and_swaps_under_load(tmp_path):
    out = tmp_path / "production_loop.json"
    script = ROOT / "benchmarks" / "production_loop.py"
    run = subprocess.run([sys.executable, str(script), "--model", str(tiny_model().onnx), "--requests", "200",
                          "--concurrency", "4", "--rounds", "1", "--swaps", "3", "--out", str(out)],
                         capture_output=True, text=True, cwd=ROOT, timeout=900)
    result = json.loads(out.read_text())
    assert "| capture | p50 (ms)" in run.stdout and "3 swaps under 4-way load" in run.stdout, run.stdout + run.stderr
    summary = result["capture_cost"]["summary"]
    assert set(summary) == {"off", "rate 1.0", "rate 0.1"}
    assert summary["off"]["captured"] == 0 and summary["rate 1.0"]["captured"] == 208  # unique: 8 warm-up + 200
    assert 0 < summary["rate 0.1"]["captured"] < 60
    assert all(s["errors"] == 0 for s in summary.values())
    swaps = result["swaps"]
    assert swaps["swaps"] == 3 and swaps["server_swaps"] == 3 and swaps["failed"] == 0 and swaps["requests"] > 0
    assert set(swaps["answered_by"]) == {"release-a", "release-b"}
    assert result["targets_met"]["no_failed_request_over_swaps"]
    assert run.returncode == (0 if all(result["targets_met"].values()) else 1)
