"""Training speed: iterations per second and peak memory of source-only, DANN and TADA with the same backbone and
batch, and TADA's overhead over DANN (target: at most 1.3x a DANN step, `--target`).

Each (backbone, method) runs in its own process, so its peak memory is its own: the same step the training loop
takes (one forward of source + target, the method's loss terms, backward, SGD step) on random images, after
warm-up steps. The K region discriminators are one batched einsum per layer (`tada.models.discriminators`).

    python benchmarks/training_speed.py                       # LeNet at 32 px and ResNet-50 at 224 px, on the CPU
                                                              # (region discriminators 1024 and 256 wide)
    python benchmarks/training_speed.py --setups lenet32      # just one
    python benchmarks/training_speed.py --kernels pinned      # only the default kernels (no native comparison)

With ``--kernels both`` (the default) every step is timed twice, interleaved: with the CPU kernels pinned as
``import tada`` pins them (`tada.cpu_kernels`, what every run uses: ATen and oneDNN at AVX2, MKL at its
vendor-independent COMPATIBLE branch) and with ``TADA_CPU_KERNELS=native`` (the libraries' own choice: AVX-512
where the CPU has it). The table is the pinned one; the pin's cost is pinned over native step time, per setup and
method (above 1 on AVX2-only machines too: MKL's COMPATIBLE branch gives up its AVX2 kernels).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("source_only", "dann", "tada")
SETUPS = {  # name: (params overrides, warm-up steps, timed steps)
    "lenet32": ({"model.backbone": "lenet", "data.image_size": 32, "data.color_mode": "L", "train.batch_size": 32,
                 "model.region_discriminator_hidden": 64}, 10, 60),
    "resnet50_224": ({"model.backbone": "resnet50", "data.image_size": 224, "data.color_mode": "RGB",
                      "train.batch_size": 4, "model.region_discriminator_hidden": 1024,
                      "optim.backbone_lr_mult": 0.1}, 2, 4),
    "resnet50_224_w256": ({"model.backbone": "resnet50", "data.image_size": 224, "data.color_mode": "RGB",
                           "train.batch_size": 4, "model.region_discriminator_hidden": 256,
                           "optim.backbone_lr_mult": 0.1}, 2, 4),
}


def measure(setup: str, method: str, threads: int) -> dict[str, float]:
    """Run in a fresh process: time the training step of ``method`` on ``setup``."""
    import torch

    from tada.checkpoint import seed_everything
    from tada.config import Config
    from tada.methods import build_model, get_method
    from tada.optim import build_optimizer
    from tada.train import train_step

    overrides, warmup, steps = SETUPS[setup]
    config = Config().replace({**overrides, "method.name": method})
    seed_everything(0, deterministic=True, num_threads=threads)
    channels = 3 if config.data.color_mode == "RGB" else 1
    size, batch = config.data.image_size, config.train.batch_size
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model = build_model(config, num_classes=31, in_channels=channels).train()
    optimizer = build_optimizer(model, config.optim)
    spec = get_method(method)
    x = torch.randn(2 * batch, channels, size, size)
    y = torch.randint(0, 31, (batch,))

    def step() -> None:  # the training loop's own step (tada.train.train_step), half way through training
        train_step(model, optimizer, config, spec, x, y, config.train.iterations // 2)

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - start) / steps
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    regions = model.region_discriminators.num_regions if model.region_discriminators is not None else 0
    return {"ms_per_step": 1000 * seconds, "it_per_s": 1 / seconds, "peak_rss_mb": peak_kib / 1024,
            "training_mb": (peak_kib - before) / 1024, "regions": regions,
            "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6}


def cpu_flags() -> str:
    """Which vector extension the CPU has at most: what the pin's cost depends on."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return "unknown CPU"
    return "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"


def run_child(setup: str, method: str, threads: int, kernels: str) -> dict[str, float]:
    """`measure` in a fresh process with the pinned (`tada.cpu_kernels`) or the native kernels."""
    from tada.cpu_kernels import PINS, SWITCH

    env = {k: v for k, v in os.environ.items() if k not in PINS and k != SWITCH}
    env["PYTHONPATH"] = str(ROOT)
    if kernels == "native":
        env[SWITCH] = "native"
    child = subprocess.run([sys.executable, __file__, "--threads", str(threads), "--child", setup, method],
                           capture_output=True, text=True, env=env)
    if child.returncode != 0:
        raise SystemExit(f"{setup}/{method} ({kernels} kernels) failed:\n{child.stderr}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setups", nargs="+", choices=list(SETUPS), default=list(SETUPS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--target", type=float, default=1.3, help="max TADA / DANN step-time ratio")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "training_speed.json")
    parser.add_argument("--kernels", choices=("both", "pinned", "native"), default="both",
                        help="time the pinned kernels (tada.cpu_kernels), the native ones, or both (the pin's cost)")
    parser.add_argument("--child", nargs=2, metavar=("SETUP", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(*args.child, threads=args.threads)))
        return 0

    started = time.perf_counter()
    results: dict[str, dict[str, dict[str, float]]] = {}
    for setup in args.setups:
        overrides = SETUPS[setup][0]
        print(f"\n{setup}: {overrides['model.backbone']} at {overrides['data.image_size']} px, "
              f"{overrides['train.batch_size']} source + {overrides['train.batch_size']} target images per step, "
              f"{args.threads} threads", flush=True)
        results[setup] = {}
        for method in METHODS:
            for kernels in (("pinned", "native") if args.kernels == "both" else (args.kernels,)):
                measured = run_child(setup, method, args.threads, kernels)
                if kernels == "native" and args.kernels == "both":
                    results[setup][method]["native_ms_per_step"] = measured["ms_per_step"]
                    results[setup][method]["pin_cost"] = results[setup][method]["ms_per_step"] / measured["ms_per_step"]
                else:
                    results[setup][method] = measured

    lines = ["| setup | method | ms / step | it / s | peak RSS (MB) | parameters (M) | regions K |",
             "|---|---|---|---|---|---|---|"]
    verdicts = []
    for setup, by_method in results.items():
        for method, r in by_method.items():
            lines.append(f"| {setup} | {method} | {r['ms_per_step']:.1f} | {r['it_per_s']:.2f} | "
                         f"{r['peak_rss_mb']:.0f} | {r['parameters_m']:.2f} | {r['regions'] or '—'} |")
        ratio = by_method["tada"]["ms_per_step"] / by_method["dann"]["ms_per_step"]
        by_method["tada_over_dann"] = ratio
        verdicts.append(f"{setup}: TADA step = {ratio:.2f}x DANN step (target <= {args.target}: "
                        f"{'met' if ratio <= args.target else 'NOT met'})")
    if args.kernels == "both":
        costs = [f"{setup} {method} {r['pin_cost']:.2f}x" for setup, by_method in results.items()
                 for method, r in by_method.items() if isinstance(r, dict)]
        verdicts.append("The CPU kernel pin's cost (pinned / native step time, interleaved): " + ", ".join(costs))
    report = "\n".join(lines) + "\n\n" + "\n".join(verdicts)
    print("\n" + report)
    command = "python benchmarks/training_speed.py" + ("" if argv is None and len(sys.argv) == 1 else
                                                       " " + " ".join(sys.argv[1:]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": command, "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                                               f"{cpu_flags()}", "kernels": args.kernels,
                                    "threads": args.threads, "target_ratio": args.target, "results": results,
                                    "markdown": report, "seconds": round(time.perf_counter() - started, 1)},
                                   indent=2) + "\n")
    print(f"\n({time.perf_counter() - started:.0f} s; JSON: {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
