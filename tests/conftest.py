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
    from tada.data.task import build_default_task

    return build_default_task(tiny_config.data)
