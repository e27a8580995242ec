"""The ``tada`` command line: ``tada train``, ``methods``, ``predict``, ``serve`` and ``releases``.

Every command imports what it needs when it runs: ``predict`` and ``serve`` never import torch, so they work in an
installation with only the serving dependencies (``pip install ".[serve]"``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tada.config import DataConfig
    from tada.data.task import DomainTask


def _prepared_task(cfg: DataConfig, log: Callable[[str], None]) -> DomainTask:
    """`materialise` into ``<data.cache_dir>/tasks/<key>`` (the key covers the data params), unless a complete copy
    is there already, then `load_task` from it: what ``tada train`` trains on without DVC. The user's folders are
    laid out again every time (cheap: hard links), since their files can change under the same params."""
    import dataclasses
    import fcntl
    import hashlib

    from tada.data.datasets import materialise
    from tada.data.decoded import load_task
    from tada.data.manifest import MANIFEST
    from tada.distributed import is_main_process

    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("num_workers", "decoded_cache")}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    root = Path(cfg.cache_dir).expanduser() / "tasks" / key
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{key}.lock", "w") as lock:  # torchrun's ranks: one lays it out, the others wait
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / MANIFEST).is_file() or (cfg.name == "folder" and is_main_process()):
            log(f"data: laying out {cfg.name} under {root}")
            materialise(cfg, root, log)
    return load_task(root, cfg)


def _train(args: argparse.Namespace) -> int:
    from tada.config import load_config, parse_overrides
    from tada.distributed import is_main_process
    from tada.progress import TrainingProgress
    from tada.train import train

    config = load_config(args.params, parse_overrides(args.set))
    task = _prepared_task(config.data, log=lambda line: print(line, file=sys.stderr, flush=True))
    if args.quiet or not is_main_process():  # under torchrun, rank 0 speaks for all
        result = train(config, task)
    else:
        with TrainingProgress(config.train.iterations) as progress:  # a bar on a terminal, else JSON lines
            result = train(config, task, log=progress)
    result.save(config, task, args.model, args.metrics)
    if is_main_process():  # under torchrun, rank 0 speaks for all
        scores = ", ".join(f"{k.replace('_', ' ')} {result.final[k]:.4f}" for k in
                           ("target_accuracy", "estimated_target_accuracy") if k in result.final)
        print(f"tada train: {scores} ({result.selection['rule']}, step {result.selection['step']}) -> {args.model}",
              file=sys.stderr)
    return 0


def _methods(_: argparse.Namespace) -> int:
    from tada.methods import METHODS

    for method in METHODS.values():
        flags = [f for f in ("local_attention", "global_adversarial", "entropy", "entropy_attention")
                 if getattr(method, f)]
        print(f"{method.name:16s} {', '.join(flags) or 'classification loss only'}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from tada.serving.batch import run

    return run(args.model, args.paths, args.output, args.format, args.top_k, args.batch_size, args.threads,
               args.shift_threshold, progress=not args.no_progress)


def _serve(args: argparse.Namespace) -> int:
    from tada.serving.server import run

    return run(args)


def _releases(args: argparse.Namespace) -> int:
    from tada.promote import ModelStore, PromotionError

    store = ModelStore(args.models)
    try:
        if args.activate:
            previous = store.activate(args.activate, args.reason)
            print(f"tada releases: production is now {args.activate} (was {previous}); a `tada serve "
                  f"{store.link}` picks it up by itself")
            return 0
        for release in store.all_releases():
            mark = "*" if release["production"] else " "
            print(f"{mark} {release['release']}  {release.get('metric', '?')}={release.get('value', '?')}  "
                  f"promoted {release.get('promoted_at', '?')}")
    except PromotionError as e:
        print(f"tada releases: error: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tada", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train the method in params.yaml on its data (any data.name; laid out under "
                                     "data.cache_dir/tasks the first time)")
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a param (repeatable)")
    p.add_argument("--model", type=Path, default=Path("models/model.pt"))
    p.add_argument("--metrics", type=Path, default=Path("reports/train_metrics.json"))
    p.add_argument("--quiet", action="store_true", help="neither the progress bar nor the log rows")
    p.set_defaults(func=_train)

    p = sub.add_parser("methods", help="list the methods and the parts of TADA each one uses")
    p.set_defaults(func=_methods)

    p = sub.add_parser("predict", help="predict image files and folders with an exported model (onnxruntime)")
    p.add_argument("model", type=Path, help="the exported model, e.g. models/model.onnx")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, or folders searched recursively")
    p.add_argument("-o", "--output", type=Path, default=None, help="write here (default: stdout)")
    p.add_argument("--format", choices=("csv", "json"), default=None, help="default: from --output's suffix, or csv")
    p.add_argument("--top-k", type=int, default=3, help="classes listed per image")
    p.add_argument("--batch-size", type=int, default=64, help="images per onnxruntime call")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: all cores)")
    p.add_argument("--shift-threshold", type=float, default=None,
                   help="shift score above which an image is flagged (default: the model's calibrated threshold)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_predict)

    p = sub.add_parser("releases", help="list the promoted releases (* production), or point production at one "
                                        "(--activate ID: a rollback); a server following models/production swaps")
    p.add_argument("--models", type=Path, default=Path("models"), help="the models directory (default: models)")
    p.add_argument("--activate", metavar="RELEASE_ID", help="make this existing release production")
    p.add_argument("--reason", default="activated by hand", help="recorded in models/gate_history.jsonl")
    p.set_defaults(func=_releases)

    p = sub.add_parser("serve", help="serve an exported model over HTTP (POST /predict, /health, /metrics)")
    from tada.serving.server import add_arguments  # argparse only: the server's imports happen when it runs

    add_arguments(p)
    p.set_defaults(func=_serve)

    args = parser.parse_args(argv)
    from tada.config import ConfigError
    from tada.data.download import DownloadError
    from tada.io import NO_SPACE, MissingLibraryError

    try:
        return args.func(args)
    except (ConfigError, DownloadError, FileNotFoundError, ValueError, MissingLibraryError) as e:
        print(f"tada: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in NO_SPACE:
            raise
        print(f"tada: error: {e.strerror if e.strerror and e.strerror.startswith('no space') else e}",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
