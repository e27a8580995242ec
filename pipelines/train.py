"""DVC stage `train`: train the method in params.yaml on the validated data; dvclive curves, checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys

from pipelines._paths import DATA, MODEL, PARAMS, TRAIN_DIR
from pipelines._stage import user_errors
from tada.config import load_config
from tada.data.decoded import load_task
from tada.data.task import check_trainable
from tada.distributed import is_main_process, resolve_device
from tada.io import replace_dir, staging_dir
from tada.progress import TrainingProgress
from tada.tracking import LiveLogger
from tada.train import LogRow, train


def torchrun_command(nproc: int) -> list[str]:
    """This stage again, as ``nproc`` processes under PyTorch's launcher (one machine)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "pipelines.train"]


def main() -> int:
    with user_errors("train"):
        config = load_config(PARAMS)
        resolve_device(config.train.device)
        if config.train.batch_size % config.train.nproc:
            raise ValueError(f"train.batch_size ({config.train.batch_size}) must divide evenly over train.nproc "
                             f"({config.train.nproc}) processes")
    if config.train.nproc > 1 and "WORLD_SIZE" not in os.environ:
        print(f"train: {config.train.nproc} processes: {' '.join(torchrun_command(config.train.nproc))}", flush=True)
        return subprocess.run(torchrun_command(config.train.nproc)).returncode
    with user_errors("train"):
        task = load_task(DATA, config.data)
        check_trainable(task, config.train.batch_size)  # train() checks too; here it is one line, not a traceback
    if not is_main_process():  # the other ranks train alongside and write nothing
        train(config, task)
        return 0
    with staging_dir(TRAIN_DIR) as staging, TrainingProgress(config.train.iterations) as progress:
        live = LiveLogger(staging)  # the curves appear only with a finished model

        def log(row: LogRow) -> None:
            live(row)
            progress(row)  # a bar on a terminal, JSON lines in DVC's and Prefect's logs

        result = train(config, task, log=log)
        result.save(config, task, MODEL, staging / "summary.json")
        live.close()
        replace_dir(staging, TRAIN_DIR)
    scores = ", ".join(f"{k} {result.final[k]:.4f}" for k in ("target_accuracy", "estimated_target_accuracy",
                                                             "source_accuracy") if k in result.final)
    print(f"train: {scores} ({result.selection['rule']}, step {result.selection['step']}) -> {MODEL}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
