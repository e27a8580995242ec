import os
import tempfile

# Prefect reads its settings when first imported: give the whole test session its own home, away from the user's
# profile and database, and an ephemeral server (for the flow tests) with time to start on a slow machine.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="tada-prefect-home-")
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("PREFECT_PROFILE", None)
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DVC_NO_ANALYTICS"] = "1"
os.environ["GX_ANALYTICS_ENABLED"] = "false"

import tada  # noqa: F401,I001 - first: it pins the CPU kernels before torch runs any (tada.cpu_kernels)
import pytest
import torch

from tada.config import Config


@pytest.fixture(autouse=True)
def _restore_torch_state():
    """Training switches deterministic algorithms and thread counts; keep tests independent of each other."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


@pytest.fixture
def tiny_config() -> Config:
    """The default task shrunk to seconds: few rendered images, small discriminators, a few iterations."""
    return Config().replace(
        {
            "data.source_train_per_class": 12,
            "data.source_test_per_class": 4,
            "model.bottleneck_dim": 32,
            "model.discriminator_hidden": 32,
            "model.region_discriminator_hidden": 16,
            "train.iterations": 12,
            "train.batch_size": 16,
            "train.eval_interval": 6,
            "train.log_interval": 4,
            "train.num_threads": 1,
        }
    )


@pytest.fixture
def tiny_task(tiny_config):
    from tada.data.default_task import build_default_task

    return build_default_task(tiny_config.data)


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (root only: CI runs as root)."""
    import subprocess

    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {result.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def pytest_addoption(parser):
    parser.addoption("--full-stack", action="store_true",
                     help="also run the tests marked full_stack (the training image, the compose topology)")


def pytest_collection_modifyitems(config, items):
    """Without --full-stack, the full_stack tests are deselected (and reported so), not skipped."""
    if config.getoption("--full-stack"):
        return
    heavy = [item for item in items if item.get_closest_marker("full_stack")]
    if heavy:
        config.hook.pytest_deselected(items=heavy)
        items[:] = [item for item in items if not item.get_closest_marker("full_stack")]
