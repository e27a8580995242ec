"""The training process keeps freed memory for the next step (`tada.allocator`): no page faults per step."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

STEPS = r"""
import json, resource, sys, torch
from tada.checkpoint import seed_everything
from tada.config import Config
from tada.methods import build_model, get_method
from tada.optim import build_optimizer
from tada.train import train_step

if sys.argv[1] == "default":  # seed_everything without the allocator settings
    import tada.allocator
    tada.allocator._applied = False
config = Config().replace({"train.num_threads": 1})
seed_everything(0, True, 1)
model = build_model(config, 10, 1).train()
opt, method = build_optimizer(model, config.optim), get_method("tada")
x, y = torch.randn(256, 1, 28, 28), torch.randint(0, 10, (128,))
for step in range(1, 7):
    train_step(model, opt, config, method, x, y, step)
windows = []  # three windows of 10 steps; the quietest counts (a busy machine can fault in a stray page or two)
for start in (7, 17, 27):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for step in range(start, start + 10):
        train_step(model, opt, config, method, x, y, step)
    windows.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
print(json.dumps(min(windows)))
"""


def faults_per_step(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt tuning is glibc's")
def test_a_training_step_reuses_freed_memory_instead_of_faulting_it_in_again():
    retained, default = faults_per_step("retain"), faults_per_step("default")
    # measured: ~0-100 faults per step retained, ~5,000 with glibc's defaults (LeNet TADA, 128 + 128 images)
    assert retained < 0.1 * default, f"{retained} page faults per step retained vs {default} with glibc's defaults"
    assert retained < 500, f"{retained} page faults per step (each ~4 KiB of memory handed back and faulted in again)"
