"""The quality gate: a newly trained model replaces the production model only if it is not worse.

Layout under the models directory::

    production -> releases/<id>     a symbolic link, switched atomically (a new link renamed over the old one)
    releases/<id>/                  model.onnx, model.pt, metrics.json, export.json, release.json
    gate_history.jsonl              every decision of the gate, one JSON object per line, and every release
                                    activated by hand (``"action": "activate"``: a rollback)

A release is written completely under a temporary name, then renamed into ``releases/``; only then does the link
move. A crash at any point leaves ``production`` pointing at a complete release: the previous one or the new one.

The metric (``promote.metric``) is the target accuracy when the target has labelled test images; without target
labels (``auto``) it is a label-free validator (``promote.label_free_metric``, `tada.validators`), so a user with
unlabelled target data still gets a gate that looks at the target, not at the source. Both numbers the gate compares
come from the same held-out data. The candidate's are the evaluate stage's; the
production model's are its stored metrics when it was evaluated on the very same dataset (same manifest checksum),
and are recomputed on the current data otherwise (new target data arrived since it was promoted).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tada.config import PromoteConfig
from tada.io import read_text, replace_dir, staging_dir, write_json_atomic
from tada.validators import metric_value

RELEASE_FILES = {"model.onnx": "onnx", "model.pt": "checkpoint", "metrics.json": "metrics", "export.json": "export"}


class PromotionError(RuntimeError):
    """The gate cannot decide or cannot promote (missing or inconsistent artifacts)."""


@dataclass(frozen=True)
class Candidate:
    """The artifacts of one pipeline run."""

    onnx: Path
    checkpoint: Path
    metrics: Path
    export: Path
    manifest: Path  # the dataset the metrics were computed on


@dataclass(frozen=True)
class Decision:
    """One decision of the gate. ``metric`` is what was compared (``auto`` resolved), ``labels_used`` whether it
    needed target labels, ``estimates`` ATC's estimated target accuracy of both models (label-free)."""

    promoted: bool
    reason: str
    metric: str
    labels_used: bool
    candidate: float
    production: float | None  # None: there was no comparable production model
    production_source: str | None  # how the production number was obtained
    tolerance: float
    release: str | None  # the production release after the decision
    previous_release: str | None
    decided_at: str
    estimates: dict[str, float | None]
    context: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def decide(metric: str, candidate: float, production: float | None, tolerance: float) -> tuple[bool, str]:
    """Promote unless the candidate is worse than production by more than ``tolerance`` (higher is better)."""
    if production is None:
        return True, "no production model yet"
    margin = candidate - production
    if margin >= 0:
        return True, f"{metric} {candidate:.4f} >= production's {production:.4f} (+{margin:.4f})"
    if -margin <= tolerance:
        return True, (f"{metric} {candidate:.4f} is below production's {production:.4f} by {-margin:.4f}, within the "
                      f"tolerance {tolerance}")
    return False, (f"{metric} {candidate:.4f} is worse than production's {production:.4f} by {-margin:.4f}, more than "
                   f"the tolerance {tolerance}")


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        return json.loads(read_text(path))
    except FileNotFoundError:
        raise PromotionError(f"{what} not found: {path}") from None
    except json.JSONDecodeError as e:
        raise PromotionError(f"{what} {path} is not valid JSON: {e}") from None
    except ValueError as e:  # not UTF-8
        raise PromotionError(f"{what}: {e}") from None


def _metric(metrics: dict[str, Any], metric: str, path: Path) -> float:
    value = metric_value(metrics, metric)
    if value is None:
        raise PromotionError(f"{path}: no numeric {metric!r} (keys: {', '.join(sorted(metrics))})")
    return value


def resolve_metric(cfg: PromoteConfig, candidate_metrics: dict[str, Any]) -> str:
    """``promote.metric``, with ``auto`` resolved: the target accuracy when the candidate was scored on labelled
    target images, else ``promote.label_free_metric``."""
    if cfg.metric != "auto":
        return cfg.metric
    return "target_accuracy" if "target_accuracy" in candidate_metrics else cfg.label_free_metric


class ModelStore:
    """``production``, ``releases/`` and ``gate_history.jsonl`` under one models directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.link = self.root / "production"
        self.releases = self.root / "releases"
        self.history = self.root / "gate_history.jsonl"

    def current(self) -> Path | None:
        """The production release directory, or None when nothing was promoted yet."""
        if self.link.is_symlink():
            target = self.link.resolve()
            if not (target / "release.json").is_file():
                raise PromotionError(f"{self.link} points at {target}, which is not a complete release")
            return target
        if self.link.exists():
            raise PromotionError(f"{self.link} exists but is not the link the gate manages; move it away (the gate "
                                 f"keeps production as a link into {self.releases}/)")
        return None

    def release_info(self, release: Path) -> dict[str, Any]:
        return _read_json(release / "release.json", "release record")

    def promote(self, candidate: Candidate, record: dict[str, Any]) -> str:
        """Copy the candidate into a new release and point ``production`` at it. Returns the release id."""
        self.releases.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        release_id = f"{stamp}-{record['checkpoint_sha256'][:8]}"
        with staging_dir(self.releases / release_id) as staging:
            for name, attr in RELEASE_FILES.items():
                shutil.copyfile(getattr(candidate, attr), staging / name)
            write_json_atomic(staging / "release.json", {"release": release_id, **record})
            for name in (*RELEASE_FILES, "release.json"):
                with open(staging / name, "rb") as f:
                    os.fsync(f.fileno())
            replace_dir(staging, self.releases / release_id)
        self._point_at(release_id)
        return release_id

    def _point_at(self, release_id: str) -> None:
        link_tmp = self.root / f".production.{os.getpid()}.tmp"
        link_tmp.unlink(missing_ok=True)
        os.symlink(Path("releases") / release_id, link_tmp)
        try:
            os.replace(link_tmp, self.link)  # atomic: readers (a serving process following it) see old or new
        finally:
            link_tmp.unlink(missing_ok=True)

    def all_releases(self) -> list[dict[str, Any]]:
        """Every complete release, newest first: its record, and whether it is production."""
        current = self.current()
        found = []
        for release in sorted(self.releases.glob("*"), key=lambda p: p.name, reverse=True):
            if release.is_dir() and not release.name.startswith(".") and (release / "release.json").is_file():
                found.append({**self.release_info(release), "production": release.resolve() == current})
        return found

    def activate(self, release_id: str, reason: str = "activated by hand") -> str | None:
        """Point ``production`` at the existing release ``release_id`` (a rollback, or forward again); a serving
        process that follows the link picks it up. Recorded in the history. Returns the previous release id."""
        if not release_id or release_id.startswith(".") or "/" in release_id or "\\" in release_id:
            raise PromotionError(f"{release_id!r} is not a release id (a directory name under {self.releases})")
        release = self.releases / release_id
        if not (release / "release.json").is_file() or not (release / "model.onnx").is_file():
            known = ", ".join(r["release"] for r in self.all_releases()) or "none"
            raise PromotionError(f"no complete release {release_id!r} under {self.releases} (releases: {known})")
        current = self.current()
        previous = current.name if current is not None else None
        self._point_at(release_id)
        self._append({"action": "activate", "release": release_id, "previous_release": previous,
                      "reason": reason, "decided_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")})
        return previous

    def prune(self, keep: int) -> list[str]:
        """Remove all but the ``keep`` newest releases; the production release is never removed."""
        current = self.current()
        releases = sorted((p for p in self.releases.iterdir() if p.is_dir() and not p.name.startswith(".")),
                          key=lambda p: p.name, reverse=True) if self.releases.is_dir() else []
        removed = []
        for release in releases[keep:]:
            if current is not None and release.resolve() == current:
                continue
            shutil.rmtree(release)
            removed.append(release.name)
        return removed

    def record(self, decision: Decision) -> None:
        self._append(decision.to_dict())

    def _append(self, entry: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.history, "a") as f:  # one line per decision, appended whole
            f.write(json.dumps(entry, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())


def quality_gate(
    candidate: Candidate,
    store: ModelStore,
    cfg: PromoteConfig,
    evaluate_production: Callable[[Path], dict[str, float]],
    context: dict[str, Any] | None = None,
) -> Decision:
    """Compare the candidate with production on ``cfg.metric``; promote it if it is not worse by more than
    ``cfg.tolerance``. ``evaluate_production(checkpoint)`` recomputes the production model's metrics on the
    candidate's data when production was evaluated on other data. Every decision is appended to the history."""
    context = dict(context or {})
    metrics = _read_json(candidate.metrics, "candidate metrics")
    metric = resolve_metric(cfg, metrics)
    candidate_value = _metric(metrics, metric, candidate.metrics)
    estimates: dict[str, float | None] = {"candidate": metric_value(metrics, "estimated_target_accuracy"),
                                          "production": None}
    export = _read_json(candidate.export, "export report")
    for path in (candidate.onnx, candidate.checkpoint, candidate.manifest):
        if not path.is_file():
            raise PromotionError(f"candidate artifact not found: {path}")
    checkpoint_sha, data_sha = sha256_file(candidate.checkpoint), sha256_file(candidate.manifest)
    current = store.current()
    previous = current.name if current is not None else None
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")

    def finish(promoted: bool, reason: str, production: float | None, source: str | None, release: str | None):
        decision = Decision(promoted, reason, metric, metric == "target_accuracy", candidate_value, production,
                            source, cfg.tolerance, release, previous, now, estimates, context)
        store.record(decision)
        return decision

    if not export.get("passed"):
        return finish(False, f"the ONNX export failed its parity check ({candidate.export})", None, None, previous)
    production_value, source, not_comparable = None, None, None
    if current is not None:
        info = store.release_info(current)
        stored = _read_json(current / "metrics.json", "production metrics")
        if info.get("checkpoint_sha256") == checkpoint_sha and info.get("data_sha256") == data_sha:
            return finish(False, "the candidate is the production model (same checkpoint, same data)",
                          metric_value(stored, metric), "stored", previous)
        if info.get("data_sha256") == data_sha and metric_value(stored, metric) is not None:
            production_metrics, source = stored, "stored (evaluated on the same data)"
        else:  # new data since it was promoted, or a release that predates this metric
            source = "re-evaluated on the current data"
            try:
                production_metrics = evaluate_production(current / "model.pt")
            except ValueError as e:  # e.g. the class list changed: the old model cannot serve this data
                production_metrics, source = None, None
                not_comparable = f"the production model cannot be evaluated on the current data ({e})"
        if production_metrics is not None:
            production_value = _metric(production_metrics, metric, current)
            estimates["production"] = metric_value(production_metrics, "estimated_target_accuracy")
    promoted, reason = decide(metric, candidate_value, production_value, cfg.tolerance)
    reason = not_comparable or reason
    release = previous
    if promoted:
        release = store.promote(candidate, {"checkpoint_sha256": checkpoint_sha, "data_sha256": data_sha,
                                            "metric": metric, "value": candidate_value,
                                            "promoted_at": now, "reason": reason, **context})
        store.prune(cfg.keep_releases)
    return finish(promoted, reason, production_value, source, release)
