"""Pin PyTorch's CPU kernels to one instruction set, so that a seeded run gives the same bits on any x86-64 CPU.

PyTorch picks kernels by what the CPU can do: ATen's vectorised kernels (AVX2 or AVX-512), oneDNN's convolutions
and MKL's matrix products each have a code path per instruction set, and their results differ in the last bits, so
the same ``params.yaml`` trained different models on an AVX-512 and an AVX2 machine (the default ``dvc repro``:
target accuracy 0.8701 against 0.8497) and the golden-results test failed on the latter. Every x86-64 CPU sold in
the last decade has AVX2, so that is the pin:

| library | variable | value |
|---|---|---|
| ATen (PyTorch's own kernels) | ``ATEN_CPU_CAPABILITY`` | ``avx2`` |
| oneDNN (convolutions) | ``ONEDNN_MAX_CPU_ISA`` | ``AVX2`` |
| MKL (BLAS, LAPACK) | ``MKL_CBWR`` (conditional numerical reproducibility) | ``COMPATIBLE,STRICT`` |
| OpenBLAS (NumPy's and SciPy's BLAS, LAPACK: the validators, scikit-learn) | ``OPENBLAS_CORETYPE`` | ``Haswell`` |
| NumPy's own loops (exp, log, sums) | ``NPY_DISABLE_CPU_FEATURES`` | its dispatch targets above AVX2 |

MKL is the exception to "AVX2 everywhere": on a CPU that is not Intel's it ignores the ``AVX2`` branch (its
verbose mode reports ``CNR:AUTO``) and runs a code path of its own, so an AMD machine trained other bits than an
Intel one under an AVX2 pin (the golden results recorded on an AVX2-only machine did not hold on an AVX-512 Xeon;
under QEMU's EPYC-Rome model, vendor AuthenticAMD, a 3-step run differed from the same run on the Xeon and on QEMU's
Haswell model). ``COMPATIBLE`` is the one branch MKL keeps the same on Intel and other x86-64 CPUs (SSE2 without the
approximate reciprocals); with it the EPYC-Rome, Haswell and Xeon runs are the same bits. It costs the matrix
products their AVX2 kernels (`benchmarks/training_speed.py --kernels both` measures the whole pin's cost).

The libraries read these once: PyTorch's when their first kernel runs, NumPy's and OpenBLAS when NumPy is first
imported. So they are set when ``tada`` is imported (`pin`): import ``tada`` (or ``pipelines``, which imports it)
before NumPy; the stage processes, torchrun's ranks and the tests do, and every process they start inherits them.
Unpinned, NumPy's AVX-512 loops and OpenBLAS' AVX-512 kernels gave the validators of the same predictions (the
batch nuclear norm's SVD, DEV's logistic regression) one unit in the last place apart from an AVX2 machine's.
A variable already set is left alone; ``TADA_CPU_KERNELS=native`` leaves all of them to the libraries (faster on an
AVX-512 machine, but its results are its own). On other architectures (aarch64: NEON/SVE) nothing is pinned: the
results are reproducible on the same kind of CPU, and golden results recorded on x86-64 do not apply there.
"""

from __future__ import annotations

import os
import platform

PINS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "COMPATIBLE,STRICT",
        "OPENBLAS_CORETYPE": "Haswell",
        "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR"}  # NumPy's dispatch targets above AVX2
SWITCH = "TADA_CPU_KERNELS"  # "native": no pin


def pin(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Set the pins in ``environ`` (``os.environ``) unless switched off or not on x86-64; returns those set now."""
    environ = os.environ if environ is None else environ
    if environ.get(SWITCH, "").lower() == "native" or platform.machine().lower() not in ("x86_64", "amd64"):
        return {}
    added = {k: v for k, v in PINS.items() if k not in environ}
    environ.update(added)
    return added
