"""`tada.cpu_kernels`: the AVX2 pin that makes a seeded run the same bits on every x86-64 CPU."""

import os
import platform
import subprocess
import sys

import pytest

from tada.cpu_kernels import PINS, SWITCH, pin


def test_the_pins_are_set_unless_already_set_or_switched_off(monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    env = {"MKL_CBWR": "AVX2"}
    added = pin(env)
    assert env == {**PINS, "MKL_CBWR": "AVX2"} and "MKL_CBWR" not in added
    assert pin({SWITCH: "native"}) == {}
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert pin({}) == {}


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the pin applies to x86-64 only")
def test_a_fresh_process_that_imports_tada_runs_torch_on_avx2_kernels():
    env = {k: v for k, v in os.environ.items() if k not in PINS and k != SWITCH}
    code = ("import tada, torch, os; torch.ones(8).sum(); "
            "print(torch.backends.cpu.get_cpu_capability(), os.environ['MKL_CBWR'], os.environ['ONEDNN_MAX_CPU_ISA'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["AVX2", "COMPATIBLE,STRICT", "AVX2"]


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the pin applies to x86-64 only")
def test_mkl_runs_its_vendor_independent_branch():
    """MKL reports the branch each call ran in its verbose mode: ``COMPATIBLE`` (the same bits on Intel and AMD),
    not ``AUTO`` (what it falls back to on a non-Intel CPU when asked for ``AVX2``)."""
    env = {k: v for k, v in os.environ.items() if k not in PINS and k != SWITCH}
    env["MKL_VERBOSE"] = "1"
    code = "import tada, torch; torch.ones(64, 64) @ torch.ones(64, 64)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    calls = [line for line in out.splitlines() if line.startswith("MKL_VERBOSE SGEMM")]
    assert calls and all("CNR:COMPATIBLE,STRICT" in line for line in calls), out


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the pin applies to x86-64 only")
def test_a_stage_process_runs_numpy_and_openblas_without_avx512():
    """NumPy's own loops (exp, log, sums) and its OpenBLAS (the validators' SVD, scikit-learn) pick AVX-512 kernels
    when the CPU has them, at import: a stage imports `pipelines` first, which imports `tada`, which pins them."""
    env = {k: v for k, v in os.environ.items() if k not in PINS and k != SWITCH}
    code = ("import pipelines, numpy, threadpoolctl; "
            "from numpy._core._multiarray_umath import __cpu_features__ as f; "
            "print(f['X86_V4'], [i.get('architecture') for i in threadpoolctl.threadpool_info() "
            "if i['internal_api'] == 'openblas'][0])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "Haswell"], out.stderr
    assert "ImportWarning" not in out.stderr
