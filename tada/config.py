"""One frozen, typed, nested configuration, mirrored 1:1 by ``params.yaml``.

`load_config` rejects unknown keys, wrong types and out-of-range values, naming the dotted key path
(``train.iterations must be > 0, got -5``). Keys left out take the defaults below, which equal the repository's
``params.yaml``; that file spells every key out, so no coefficient of the objective hides in code (a test checks
both).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tada.config_schema import ConfigError, build, rules, to_plain
from tada.io import read_text

__all__ = ["Config", "ConfigError", "config_from_dict", "load_config", "parse_overrides", "yaml_value"]

DATASETS = ("synthetic_to_handwritten", "handwritten_to_synthetic", "synthetic_to_heavy_synthetic",  # generated
            "synthetic_to_inverted_handwritten", "synthetic_to_handwritten_label_shift",  # (tada.data.shift_tasks)
            "office31", "office_home", "image_clef", "visda2017", "digits", "folder")
BACKBONES = ("dtn", "lenet", "resnet101", "resnet18", "resnet34", "resnet50")  # == backbones.available_backbones()
METHODS = ("source_only", "dann", "tada", "tada_no_local", "tada_no_global")  # == methods.METHODS
VALIDATORS = ("source_accuracy", "neg_entropy", "info_max", "snd", "bnm", "devn", "class_ami",
              "estimated_target_accuracy")  # == validators.VALIDATORS, every one higher-is-better


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, with YAML 1.2 floats: ``1e-4`` is a number (as DVC, which uses YAML 1.2, reads it),
    not the string YAML 1.1 makes of it."""


def _unique_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    """A mapping whose keys are unique: DVC refuses a params file with a duplicate key, so we do too (PyYAML would
    silently keep the last value)."""
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping", node.start_mark,
                f"found duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"""),
    list("-+0123456789"),
)


def yaml_value(text: str) -> Any:
    """Parse YAML (a params file, or one ``KEY=VALUE`` value from a command line)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def _yaml_problem(error: yaml.YAMLError) -> str:
    """One line: what is wrong and where (PyYAML's own message spans several, with a source excerpt)."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem


def parse_overrides(pairs: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["train.iterations=500", "optim.lr=1e-3"]`` -> ``{"train.iterations": 500, "optim.lr": 0.001}``: each value
    read as YAML 1.2 (`yaml_value`), as DVC's ``-S`` reads it. The keys are checked when the overrides are applied."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected KEY=VALUE (e.g. train.iterations=500), got {pair!r}")
        try:
            overrides[key] = yaml_value(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"{key}={value}: not a YAML value ({_yaml_problem(e)})") from None
    return overrides


@dataclass(frozen=True)
class RenderConfig:
    """Random rendering of the synthetic source digits (see `tada.data.synthetic.RenderSpec`)."""

    height: tuple[float, float] = field(default=(0.6, 0.9), metadata=rules(interval=(0.1, 1.0)))
    stroke: tuple[float, float] = field(default=(0.0, 1.5), metadata=rules(interval=(0.0, 5.0)))
    rotation: float = field(default=15.0, metadata=rules(ge=0, le=180))
    translation: float = field(default=0.08, metadata=rules(ge=0, le=0.5))
    blur: float = field(default=1.0, metadata=rules(ge=0))
    noise: float = field(default=0.05, metadata=rules(ge=0, le=1))


@dataclass(frozen=True)
class FolderConfig:
    """``data.name: folder``: your own images. Each of ``source``, ``target`` and ``target_test`` is a directory in
    ImageFolder layout (``class_name/image.jpg``; a target directory of images without class folders is unlabelled)
    or a CSV/list file of ``path,label`` rows (label optional for the target; paths relative to the file)."""

    source: str | None = None
    target: str | None = None
    target_test: str | None = None  # optional labelled target test set; else a labelled target is evaluated on
    target_recent: int = field(default=0, metadata=rules(ge=0))  # flat target folder: only its newest N images
    target_since: str | None = None  # flat target folder: only images modified at or after this ISO 8601 time

    def __post_init__(self) -> None:
        if self.target_since is not None:
            since_timestamp(self.target_since)  # a bad time is refused when the params are loaded


def since_timestamp(text: str) -> float:
    """``data.folder.target_since`` as a POSIX timestamp (a time without a zone is UTC)."""
    import datetime as dt

    try:
        when = dt.datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise ConfigError(f"data.folder.target_since must be an ISO 8601 time such as 2026-12-01T00:00:00Z, "
                          f"got {text!r}") from None
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()


@dataclass(frozen=True)
class DataConfig:
    """The domain-adaptation task.

    ``name`` picks the dataset (`tada.data.registry`); ``source`` and ``target`` name its domains (benchmarks only).
    ``generation_seed`` fixes the identity of the generated default dataset (like a dataset version); the run's seed
    is ``train.seed``.
    """

    name: str = field(default="synthetic_to_handwritten", metadata=rules(choices=DATASETS))
    source: str = ""  # a domain of the benchmark, e.g. amazon (office31)
    target: str = ""  # e.g. webcam
    image_size: int = field(default=28, metadata=rules(ge=16, le=512))  # the network's input, S x S
    load_size: int = field(default=0, metadata=rules(ge=0, le=1024))  # resize to this, then crop S (0: S, no crop)
    color_mode: str = field(default="L", metadata=rules(choices=("L", "RGB")))  # what the model is fed
    cache_dir: str = ".cache/datasets"  # downloaded archives and their extracted trees (outside DVC's data/)
    mirror: str | None = None  # base URL serving the archives under their official file names
    archive_dir: str | None = None  # a local directory holding the archives (air-gapped machines)
    folder: FolderConfig = field(default_factory=FolderConfig)
    source_val_fraction: float = field(default=0.1, metadata=rules(gt=0, le=0.5))  # held out, when no test split
    num_workers: int = field(default=2, metadata=rules(ge=0, le=64))  # threads decoding images when loading
    decoded_cache: str | None = ".cache/decoded"  # decoded pixels, memory-mapped (None: decode into memory)

    def __post_init__(self) -> None:
        if self.load_size and self.load_size < self.image_size:
            raise ConfigError(f"data.load_size must be 0 or >= data.image_size ({self.image_size}), "
                              f"got {self.load_size}")
    source_train_per_class: int = field(default=500, metadata=rules(gt=0))
    source_test_per_class: int = field(default=100, metadata=rules(gt=0))
    target_test_fraction: float = field(default=0.3, metadata=rules(gt=0, lt=1))
    generation_seed: int = field(default=0, metadata=rules(ge=0))
    render: RenderConfig = field(default_factory=RenderConfig)


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = field(default="lenet", metadata=rules(choices=BACKBONES))
    pretrained: bool = False
    weights_path: str | None = None
    bottleneck_dim: int = field(default=256, metadata=rules(gt=0))
    bottleneck_dropout: float = field(default=0.5, metadata=rules(ge=0, lt=1))
    discriminator_hidden: int = field(default=1024, metadata=rules(gt=0))
    region_discriminator_hidden: int = field(default=64, metadata=rules(gt=0))
    # batchnorm (the lab's research library) or dropout (the original DANN) in the hidden layers of the global
    # discriminator, and of each region discriminator
    discriminator_norm: str = field(default="batchnorm", metadata=rules(choices=("batchnorm", "dropout")))
    region_discriminator_norm: str = field(default="dropout", metadata=rules(choices=("batchnorm", "dropout")))
    discriminator_dropout: float = field(default=0.5, metadata=rules(ge=0, lt=1))  # where the norm is dropout


@dataclass(frozen=True)
class MethodConfig:
    """The objective ``L_y + gamma * L_h + lambda * (L_l + L_g)`` and which terms are on (by ``name``)."""

    name: str = field(
        default="tada",
        metadata=rules(choices=METHODS),
    )
    adversarial_weight: float = field(default=1.0, metadata=rules(ge=0))  # lambda
    entropy_weight: float = field(default=0.1, metadata=rules(ge=0))  # gamma
    grl_warmup: float = field(default=1000.0, metadata=rules(gt=0))  # iterations: coeff 0.46 * grl_max after them
    grl_max: float = field(default=1.0, metadata=rules(ge=0))
    detach_local_attention: bool = False
    detach_global_attention: bool = False


@dataclass(frozen=True)
class OptimConfig:
    """SGD with ``lr_i = lr * (1 + lr_gamma * i) ** -lr_beta`` at iteration ``i``; the backbone gets
    ``lr * backbone_lr_mult``."""

    lr: float = field(default=0.01, metadata=rules(gt=0))
    backbone_lr_mult: float = field(default=1.0, metadata=rules(ge=0))
    region_lr_mult: float = field(default=16.0, metadata=rules(ge=0))
    momentum: float = field(default=0.9, metadata=rules(ge=0, lt=1))
    nesterov: bool = True
    weight_decay: float = field(default=1e-3, metadata=rules(ge=0))  # digits; the ResNet-50 presets: 5e-4
    lr_gamma: float = field(default=0.001, metadata=rules(ge=0))  # per iteration
    lr_beta: float = field(default=0.75, metadata=rules(ge=0))


@dataclass(frozen=True)
class TrainConfig:
    seed: int = field(default=0, metadata=rules(ge=0))
    iterations: int = field(default=3000, metadata=rules(gt=0))
    batch_size: int = field(default=32, metadata=rules(gt=0))  # per domain: B source + B target per step
    eval_interval: int = field(default=500, metadata=rules(gt=0))
    log_interval: int = field(default=50, metadata=rules(gt=0))
    eval_batch_size: int = field(default=512, metadata=rules(gt=0))
    num_threads: int = field(default=2, metadata=rules(ge=0))  # 0: leave torch's default
    deterministic: bool = True
    device: str = field(default="auto", metadata=rules(choices=("auto", "cpu", "cuda")))  # auto: cuda if present
    augment: bool = False  # random crop (from data.load_size) and horizontal flip of training images
    checkpoint_interval: int = field(default=500, metadata=rules(ge=0))  # steps between resumable checkpoints
    checkpoint_dir: str = ".cache/checkpoints"  # one subdirectory per training fingerprint (params + data)
    nproc: int = field(default=1, metadata=rules(ge=1, le=64))  # processes (torchrun, DDP): gloo on CPU, nccl on GPU
    precision: str = field(default="fp32", metadata=rules(choices=("fp32", "bf16")))  # bf16: autocast
    channels_last: bool = False  # NHWC memory format for the convolutions (GPU)
    sync_batchnorm: bool = True  # with several GPU processes, BatchNorm statistics over the global batch
    pin_memory: bool = True  # page-locked host tensors for asynchronous copies to the GPU
    # keep the evaluation snapshot with the best score of this label-free validator (last: the last iterate)
    select: str = field(default="last", metadata=rules(choices=("last", *VALIDATORS)))
    init_from: str | None = None  # warm start: the weights of a checkpoint (e.g. models/production/model.pt)


@dataclass(frozen=True)
class ValidatorsConfig:
    """The label-free validators computed at every evaluation (`tada.validators`)."""

    max_images: int = field(default=2048, metadata=rules(ge=16))  # per image set, evenly spaced
    snd_temperature: float = field(default=0.05, metadata=rules(gt=0))
    atc_score: str = field(default="negative_entropy", metadata=rules(choices=("negative_entropy",
                                                                                 "max_confidence")))


@dataclass(frozen=True)
class ValidateConfig:
    """Bounds for the Great Expectations suite run by the validate stage."""

    min_per_class: int = field(default=10, metadata=rules(ge=0))  # per domain, labelled split and class
    max_per_class: int = field(default=100_000, metadata=rules(gt=0))
    min_rows: int = field(default=100, metadata=rules(ge=0))
    # PIL modes allowed on disk; I;16 (16-bit grayscale) and CMYK are converted (tada.preprocessing) when allowed
    image_modes: tuple[str, ...] = field(default=("L",), metadata=rules(
        subset=("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I;16B", "I")))
    check_image_size: bool = True  # every image is data.image_size square


@dataclass(frozen=True)
class EvaluateConfig:
    batch_size: int = field(default=512, metadata=rules(gt=0))
    tsne_points: int = field(default=500, metadata=rules(gt=10))  # per domain
    tsne_perplexity: float = field(default=30.0, metadata=rules(gt=0))
    attention_images: int = field(default=16, metadata=rules(gt=0, le=64))


@dataclass(frozen=True)
class ExportConfig:
    opset: int = field(default=18, metadata=rules(ge=17, le=23))
    parity_tolerance: float = field(default=1e-4, metadata=rules(gt=0))  # max |logit difference| vs PyTorch
    parity_batch_sizes: tuple[int, ...] = field(default=(1, 32), metadata=rules(gt=0))
    # max |domain probability difference| a low-rank global discriminator may add (tada.export.low_rank_monitor);
    # 0 keeps the full layer
    monitor_tolerance: float = field(default=0.03, metadata=rules(ge=0, lt=1))


@dataclass(frozen=True)
class StageTimeouts:
    """Seconds each DVC stage may run under the Prefect flow before it is killed."""

    fetch: int = field(default=7200, metadata=rules(gt=0))
    validate: int = field(default=3600, metadata=rules(gt=0))
    train: int = field(default=86400, metadata=rules(gt=0))
    evaluate: int = field(default=3600, metadata=rules(gt=0))
    export: int = field(default=1800, metadata=rules(gt=0))
    report: int = field(default=600, metadata=rules(gt=0))


@dataclass(frozen=True)
class FlowConfig:
    """The Prefect flow (`pipelines/flow.py`): orchestration only, read by no DVC stage."""

    fetch_retries: int = field(default=3, metadata=rules(ge=0, le=20))  # fetch reaches the network
    retry_delay: float = field(default=30.0, metadata=rules(ge=0))  # seconds before the first retry, then doubled
    timeouts: StageTimeouts = field(default_factory=StageTimeouts)


@dataclass(frozen=True)
class PromoteConfig:
    """The quality gate at the end of the flow: promote the candidate unless it is worse than production by more
    than ``tolerance`` on ``metric`` (higher is better). ``auto``: the target accuracy when the target has labelled
    test images, else ``label_free_metric`` (a validator: no target label needed)."""

    metric: str = field(default="auto", metadata=rules(choices=("auto", "target_accuracy", *VALIDATORS)))
    label_free_metric: str = field(default="info_max", metadata=rules(choices=VALIDATORS))
    tolerance: float = field(default=0.005, metadata=rules(ge=0, le=1))  # in the metric's own units
    keep_releases: int = field(default=5, metadata=rules(ge=1))  # promoted releases kept under models/releases


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    validators: ValidatorsConfig = field(default_factory=ValidatorsConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    promote: PromoteConfig = field(default_factory=PromoteConfig)

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    def digest(self) -> str:
        """A short hash of the resolved configuration, for provenance."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def replace(self, overrides: dict[str, Any]) -> Config:
        """A copy with dotted-key overrides (``{"train.iterations": 10}``), validated like a file."""
        data = self.to_dict()
        for dotted, value in overrides.items():
            node = data
            *parents, leaf = dotted.split(".")
            for i, key in enumerate(parents):
                if not isinstance(node.get(key), dict):
                    raise ConfigError(f"{'.'.join(parents[: i + 1])} is not a section of the configuration")
                node = node[key]
            if leaf not in node:
                raise ConfigError(f"unknown key {dotted}")
            node[leaf] = value
        return config_from_dict(data)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Validate a nested mapping (as read from ``params.yaml``) into a `Config`."""
    return build(Config, data, "")


def load_config(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> Config:
    """Read and validate a params file; ``overrides`` are dotted keys applied on top."""
    path = Path(path)
    try:
        data = yaml_value(read_text(path))
    except FileNotFoundError:
        raise ConfigError(f"params file not found: {path}") from None
    except ValueError as e:  # not UTF-8
        raise ConfigError(str(e)) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {_yaml_problem(e)}") from None
    try:
        config = config_from_dict(data or {})
        return config.replace(overrides) if overrides else config
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
