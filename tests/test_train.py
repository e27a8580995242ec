import math

import numpy as np
import pytest
import torch

from tada.config import ConfigError
from tada.data.default_task import build_default_task
from tada.methods import METHODS
from tada.train import train


def test_same_seed_gives_identical_metrics_twice(tiny_config, tiny_task):
    a = train(tiny_config, tiny_task)
    b = train(tiny_config, tiny_task)
    assert a.history == b.history
    assert a.evaluations == b.evaluations
    for (name, pa), pb in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name


def test_a_different_seed_gives_a_different_run(tiny_config, tiny_task):
    a = train(tiny_config, tiny_task)
    b = train(tiny_config.replace({"train.seed": 1}), tiny_task)
    assert a.history != b.history


def test_logs_each_term_lr_and_grl_coefficient_and_reports_the_last_iterate(tiny_config, tiny_task):
    rows = []
    result = train(tiny_config, tiny_task, log=rows.append)
    assert {r.kind for r in rows} == {"train", "eval"}  # every row says what it is
    losses = [r.flat() for r in rows if r.kind == "train"]
    evals = [r.flat() for r in rows if r.kind == "eval"]
    assert [r["step"] for r in losses] == [4, 8, 12]
    assert [r["step"] for r in evals] == [6, 12]
    assert {"source_ce", "local_adv", "global_adv", "entropy", "lr", "grl_coeff"} <= set(losses[0])
    assert losses[0]["grl_coeff"] < losses[-1]["grl_coeff"]
    assert losses[0]["lr"] > losses[-1]["lr"]
    assert result.final == evals[-1]
    assert 0.0 <= result.final["target_accuracy"] <= 1.0
    assert 1 - math.log(2) <= result.final["target_mean_local_attention"] <= 1


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_trains_through_the_same_loop(tiny_config, tiny_task, name):
    result = train(tiny_config.replace({"method.name": name}), tiny_task)
    for row in result.history:
        assert all(math.isfinite(v) for v in row.values())
    present = set(result.history[-1]) - {"step", "lr", "grl_coeff", "loss"}
    expected = {"source_only": 1, "dann": 2, "tada": 4, "tada_no_local": 3, "tada_no_global": 3}[name]
    assert len(present) == expected


def test_a_few_hundred_iterations_on_a_tiny_batch_drive_the_source_loss_down(tiny_config):
    config = tiny_config.replace({
        "data.source_train_per_class": 2, "train.batch_size": 20, "model.bottleneck_dropout": 0.0,
        "train.iterations": 300, "train.log_interval": 50, "train.eval_interval": 300, "method.name": "tada",
    })
    result = train(config, build_default_task(config.data))
    first, last = result.history[0]["source_ce"], result.history[-1]["source_ce"]
    assert first > 1.5 and last < 0.25 * first, (first, last)


def test_crops_and_flips_for_the_resnet_protocol():
    from tada.data.task import center_crop, crop_batch

    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    centre = crop_batch(x, 4, augment=False)
    assert torch.equal(centre, x[:, :, 1:5, 1:5])
    assert np.array_equal(center_crop(x[:, 0].numpy(), 4), x[:, 0, 1:5, 1:5].numpy())
    generator = torch.Generator().manual_seed(0)
    windows = {tuple(crop_batch(x, 4, augment=True, generator=generator)[0, 0].flatten().tolist())
               for _ in range(200)}
    # every window is a crop of image 0, possibly mirrored; 9 positions x 2 flips are all reached
    crops = {tuple(w.flatten().tolist()) for t in range(3) for left in range(3)
             for w in (x[0, 0, t:t + 4, left:left + 4], x[0, 0, t:t + 4, left:left + 4].flip(-1))}
    assert windows == crops


def test_training_with_a_load_size_crops_and_evaluates_centre_crops(tiny_config, tiny_task):
    from tada.data.task import DomainTask, ImageSet

    big = {name: ImageSet(np.pad(getattr(tiny_task, name).images, ((0, 0), (2, 2), (2, 2)), mode="edge"),
                          getattr(tiny_task, name).labels) for name in ("source_train", "target_train")}
    task = DomainTask(tiny_task.classes, big["source_train"], tiny_task.source_test, big["target_train"],
                      tiny_task.target_test)
    config = tiny_config.replace({"data.load_size": 32, "train.augment": True, "train.iterations": 4})
    result = train(config, task)
    assert result.final["step"] == 4 and 0 <= result.final["target_accuracy"] <= 1
    with pytest.raises(ConfigError, match=r"data.load_size must be 0 or >= data.image_size \(28\), got 20"):
        tiny_config.replace({"data.load_size": 20})


def test_every_evaluation_reports_the_label_free_validators(tiny_config, tiny_task):
    from tada.validators import VALIDATORS

    result = train(tiny_config, tiny_task)
    for row in result.evaluations:
        assert set(VALIDATORS) | {"atc_threshold", "target_accuracy"} <= set(row)
        assert 0 <= row["estimated_target_accuracy"] <= 1 and math.isfinite(row["devn"])


def test_select_keeps_the_snapshot_with_the_best_validator_and_reports_the_last_iterate(tiny_config, tiny_task):
    config = tiny_config.replace({"train.iterations": 24, "train.eval_interval": 6})
    last = train(config, tiny_task)
    chosen = train(config.replace({"train.select": "info_max"}), tiny_task)
    assert chosen.history == last.history and chosen.evaluations == last.evaluations  # selection changes no step
    best = max(last.evaluations, key=lambda r: r["info_max"])  # the first of equals, as selection keeps it
    assert chosen.selection == {"rule": "info_max", "step": best["step"], "score": best["info_max"]}
    assert chosen.final == best and chosen.last == last.final == last.evaluations[-1]
    # the returned weights are that snapshot's: evaluating them again gives its numbers
    from tada.evaluate import HeldOut, evaluate_heldout

    again = evaluate_heldout(chosen.model, HeldOut.from_task(tiny_task, 2048), 512, config.validators)
    assert again == {k: v for k, v in best.items() if k != "step"}
    assert last.selection == {"rule": "last", "step": 24}


def test_select_never_names_target_labels(tiny_config):
    with pytest.raises(ConfigError, match="train.select must be one of last, source_accuracy"):
        tiny_config.replace({"train.select": "target_accuracy"})


def test_each_torchrun_rank_draws_its_own_dropout_masks_and_crops():
    from tada.distributed import DistributedContext

    shared = torch.Generator().manual_seed(7)
    shared_state = shared.get_state()
    torch.manual_seed(7)
    before = torch.get_rng_state()
    single = DistributedContext(0, 1, torch.device("cpu"), False)
    assert single.own_random_streams(7, shared) is shared  # one process: crops from the batch-order generator,
    assert torch.equal(torch.get_rng_state(), before)  # and nothing re-seeded: its runs do not change
    assert single.gather("x") == ["x"]

    def draws(rank: int, seed: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(seed)  # every rank is seeded alike first (seed_everything), then made its own
        augment = DistributedContext(rank, 2, torch.device("cpu"), True).own_random_streams(seed, shared)
        return torch.rand(256), torch.rand(256, generator=augment)  # a dropout mask's draws, a crop's

    (mask0, crop0), (mask1, crop1) = draws(0), draws(1)
    assert not torch.equal(mask0, mask1) and not torch.equal(crop0, crop1)  # rank 1's image i: not rank 0's masks
    assert not torch.equal(mask0, crop0)  # masks and crops are separate streams
    torch.manual_seed(7)
    assert not torch.equal(torch.rand(256), mask0)  # and neither is the seed's own stream, which built the weights
    assert all(torch.equal(a, b) for a, b in zip(draws(1), (mask1, crop1), strict=True))  # reproducible
    assert not torch.equal(draws(1, seed=8)[0], mask1)  # and a function of the seed
    assert torch.equal(shared.get_state(), shared_state)  # the batch order, shared by all ranks, is not touched


SHARED_EVALUATION = """
import sys
from pathlib import Path

import numpy as np
import torch

from tada.config import Config
from tada.data.task import ImageSet
from tada.distributed import DistributedContext
from tada.evaluate import HeldOut, evaluate_heldout, predict_shared
from tada.methods import build_model

dist = DistributedContext.from_env("cpu")
torch.manual_seed(0)  # the same weights on every rank
model = build_model(Config(), 10, 1)
with torch.no_grad():  # each rank's running statistics drift in training (its own share of every batch)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.add_(dist.rank)
seen = []
model.register_forward_hook(lambda module, args, out: seen.append(len(args[0])))
rng = np.random.default_rng(0)
images, labels = rng.integers(0, 256, (140, 28, 28), dtype=np.uint8), rng.integers(0, 10, 140)
held_out = HeldOut(ImageSet(images[:37], labels[:37]), images[37:60], images[60:101],
                   ImageSet(images[101:], labels[101:]))
dist.share_main_buffers(model)
metrics = evaluate_heldout(model, held_out, 16, Config().validators, dist)
one = predict_shared(model, images[:1], 16, dist)  # fewer images than ranks: rank 0 has none
torch.save({"metrics": metrics, "one": one, "seen": sum(seen), "state": model.state_dict(), "held_out": held_out},
           Path(sys.argv[1]) / f"rank{dist.rank}.pt")
dist.close()
"""


@pytest.mark.slow
def test_torchrun_ranks_share_the_evaluation_of_rank_0s_model(tmp_path):
    """Under torchrun each rank predicts its share of the held-out images with rank 0's buffers, and every rank
    ends with the metrics one process gets from rank 0's model."""
    import subprocess
    import sys

    from tada.config import Config
    from tada.evaluate import evaluate_heldout, predict
    from tada.methods import build_model

    (tmp_path / "shared_evaluation.py").write_text(SHARED_EVALUATION)
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(tmp_path / "shared_evaluation.py"), str(tmp_path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    for name, value in rank0["state"].items():  # rank 1 now holds rank 0's running statistics
        assert torch.equal(rank1["state"][name], value), name
    assert rank0["metrics"] == rank1["metrics"]
    # 140 images (37 + 23 + 41 + 39), each predicted once, on one rank: 18 + 11 + 20 + 19 on rank 0, the rest on
    # rank 1, which also has the one image of the last call
    assert (rank0["seen"], rank1["seen"]) == (68, 72 + 1)
    model = build_model(Config(), 10, 1)
    model.load_state_dict(rank0["state"])
    alone = evaluate_heldout(model, rank0["held_out"], 16, Config().validators)
    assert alone.keys() == rank0["metrics"].keys()
    for name, value in alone.items():
        assert rank0["metrics"][name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    expected = predict(model, rank0["held_out"].source_val.images[:1], 16)
    assert rank0["one"].keys() == expected.keys()
    for name, value in expected.items():
        assert torch.allclose(rank0["one"][name], value, atol=1e-6), name
