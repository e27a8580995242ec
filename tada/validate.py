"""Data validation with a Great Expectations (1.x) suite over a materialised dataset's manifest.

Three tables are validated, each by its own expectation suite in one checkpoint:

* ``files``: one row per manifest entry, with what decoding the file actually found (readable, width, height, mode,
  sha256 matches). Files exist and decode; sizes and modes are as expected; labels are in the class list; labelled
  splits have labels; both domains share the class list; paths are unique; row count.
* ``class_counts``: images per (domain, split, class) within the bounds in params.
* ``contents``: one row per distinct file content (sha256) per domain: it appears in one split only.

The result is a machine-readable report and Data Docs HTML. Any failed expectation fails validation with a short
human summary: which expectation, how many rows, a few example paths.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from tada.config import ValidateConfig
from tada.data.manifest import read_manifest
from tada.io import replace_dir, staging_dir

EXAMPLES = 5


@dataclass(frozen=True)
class ValidationOutcome:
    success: bool
    report: dict[str, Any]
    summary: str


def inspect_file(path: Path, expected_sha256: str) -> dict[str, Any]:
    """What is actually on disk: readable ('ok', 'missing', 'corrupt: ...'), decoded size and mode, checksum."""
    if not path.is_file():
        return {"readable": "missing", "actual_width": None, "actual_height": None, "actual_mode": None,
                "sha256_matches": False}
    data = path.read_bytes()
    try:
        with Image.open(path) as im:
            im.load()  # a full decode: truncated or garbled files fail here, not only bad headers
            width, height, mode = im.width, im.height, im.mode
    except Exception as e:  # noqa: BLE001 - any decoder error means the file is unusable
        return {"readable": f"corrupt: {type(e).__name__}: {e}", "actual_width": None, "actual_height": None,
                "actual_mode": None, "sha256_matches": hashlib.sha256(data).hexdigest() == expected_sha256}
    return {"readable": "ok", "actual_width": width, "actual_height": height, "actual_mode": mode,
            "sha256_matches": hashlib.sha256(data).hexdigest() == expected_sha256}


def build_tables(root: Path) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The three pandas tables the suites run on, and the class list."""
    import pandas as pd

    rows, classes = read_manifest(root)
    files = pd.DataFrame([{**r.__dict__, **inspect_file(root / r.path, r.sha256)} for r in rows])
    if files.empty:
        files = pd.DataFrame(columns=["path", "domain", "split", "label", "readable"])
    files["label"] = files["label"].replace("", None)
    labelled = files[files["label"].notna()]
    counts = (
        labelled.groupby(["domain", "split", "label"]).size().rename("count").reset_index()
        if not labelled.empty else pd.DataFrame(columns=["domain", "split", "label", "count"])
    )
    # Classes absent from a labelled split count as 0, so a missing class shows up as a count out of bounds.
    full = pd.MultiIndex.from_product(
        [sorted(set(zip(labelled["domain"], labelled["split"], strict=True))), list(classes)]
    ) if not labelled.empty else []
    if len(full):
        counts = counts.set_index(["domain", "split", "label"]).reindex(
            [(d, s, c) for (d, s), c in full], fill_value=0
        ).reset_index()
    contents = (
        files.groupby(["domain", "sha256"]).agg(splits=("split", "nunique"), example=("path", "first")).reset_index()
        if "sha256" in files else pd.DataFrame(columns=["domain", "sha256", "splits", "example"])
    )
    return {"files": files, "class_counts": counts, "contents": contents}, classes


def build_suites(
    cfg: ValidateConfig, classes: tuple[str, ...], image_size: int, target_labelled: bool = True
) -> dict[str, list]:
    """Expectations per table; each carries a ``meta.summary`` used in the human report.

    ``target_labelled``: whether any target image has a label; a wholly unlabelled target (your own data, before
    anyone labelled it) cannot be checked for its class set.
    """
    import great_expectations as gx
    from great_expectations.expectations.row_conditions import Column

    E = gx.expectations
    c = list(classes)
    source, target = Column("domain") == "source", Column("domain") == "target"
    files = [
        E.ExpectColumnValuesToBeInSet(column="readable", value_set=["ok"],
                                      meta={"summary": "image files exist and decode"}),
        E.ExpectColumnValuesToBeInSet(column="sha256_matches", value_set=[True],
                                      meta={"summary": "file contents match the manifest's sha256"}),
        E.ExpectColumnValuesToBeUnique(column="path", meta={"summary": "each file is listed once"}),
        E.ExpectColumnValuesToBeInSet(column="domain", value_set=["source", "target"],
                                      meta={"summary": "domain is source or target"}),
        E.ExpectColumnValuesToBeInSet(column="split", value_set=["train", "test"],
                                      meta={"summary": "split is train or test"}),
        E.ExpectColumnValuesToBeInSet(column="label", value_set=c,
                                      meta={"summary": f"labels are in the class list ({len(c)} classes)"}),
        E.ExpectColumnValuesToNotBeNull(column="label", row_condition=source | (Column("split") == "test"),
                                        meta={"summary": "source images and test images are labelled"}),
        E.ExpectColumnDistinctValuesToEqualSet(column="label", value_set=c, row_condition=source,
                                               meta={"summary": "the source domain has every class"}),
    ]
    if target_labelled:
        files.append(E.ExpectColumnDistinctValuesToEqualSet(
            column="label", value_set=c, row_condition=target,
            meta={"summary": "the target domain has every class (labelled split)"}))
    files += [
        E.ExpectColumnValuesToBeInSet(column="actual_mode", value_set=list(cfg.image_modes),
                                      meta={"summary": f"image modes are {', '.join(cfg.image_modes)} "
                                                       "(validate.image_modes; 16-bit I;16 and CMYK are converted "
                                                       "when allowed)"}),
        E.ExpectTableRowCountToBeBetween(min_value=cfg.min_rows, meta={"summary": f"at least {cfg.min_rows} images"}),
    ]
    if cfg.check_image_size:
        files += [
            E.ExpectColumnValuesToBeInSet(column=f"actual_{side}", value_set=[image_size],
                                          meta={"summary": f"images are {image_size} pixels {word}"})
            for side, word in (("width", "wide"), ("height", "high"))
        ]
    counts = [
        E.ExpectColumnValuesToBeBetween(column="count", min_value=cfg.min_per_class, max_value=cfg.max_per_class,
                                        row_condition=Column("split") == "train",
                                        meta={"summary": f"every class has {cfg.min_per_class}..{cfg.max_per_class} "
                                                         "images in each labelled training split"}),
        E.ExpectColumnValuesToBeBetween(column="count", min_value=1, max_value=cfg.max_per_class,
                                        row_condition=Column("split") == "test",
                                        meta={"summary": "every class has held-out images in each test split"}),
    ]
    contents = [
        E.ExpectColumnValuesToBeBetween(column="splits", max_value=1,
                                        meta={"summary": "no file content is in two splits of a domain"}),
    ]
    return {"files": files, "class_counts": counts, "contents": contents}


def _examples(table_name: str, table: Any, result: dict[str, Any]) -> list[str]:
    indices = result.get("unexpected_index_list") or []
    if table_name == "files" and indices:
        return [str(table.loc[i, "path"]) + _why(table.loc[i]) for i in indices[:EXAMPLES]]
    if table_name == "class_counts" and indices:
        return [f"{r.domain}/{r.split} class {r.label!r}: {r['count']} images" for _, r in
                table.loc[indices[:EXAMPLES]].iterrows()]
    if table_name == "contents" and indices:
        return [f"{table.loc[i, 'example']} (same content in {table.loc[i, 'splits']} splits)"
                for i in indices[:EXAMPLES]]
    return []


def _why(row: Any) -> str:
    return f" ({row['readable']})" if row.get("readable", "ok") != "ok" else ""


def _describe_failure(kwargs: dict[str, Any], result: dict[str, Any]) -> str:
    if "partial_missing_list" in result:  # distinct values against a set
        missing, extra = result.get("partial_missing_list") or [], result.get("partial_unexpected_list") or []
        parts = [f"missing classes {sorted(map(str, missing))}"] if missing else []
        parts += [f"unexpected classes {sorted(map(str, extra))}"] if extra else []
        return "; ".join(parts) or "class sets differ"
    count = result.get("unexpected_count")
    if count is not None:
        shown = result.get("partial_unexpected_list") or []
        values = sorted({str(v) for v in shown})[:EXAMPLES]
        return f"{count} row(s)" + (f", unexpected values {values}" if values else "")
    observed = result.get("observed_value")
    return f"observed {observed}" if observed is not None else "failed"


def validate_dataset(
    root: str | Path, cfg: ValidateConfig, image_size: int, docs_dir: str | Path, failed_docs_dir: str | Path
) -> ValidationOutcome:
    """Run the suites over the dataset at ``root`` and build Data Docs.

    The docs go to ``docs_dir`` when every expectation passes and to ``failed_docs_dir`` otherwise, each replaced
    whole, so a failing run never overwrites the docs of the last good one.
    """
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    root, docs_dir = Path(root), Path(docs_dir)
    tables, classes = build_tables(root)
    files = tables["files"]
    target_labelled = bool(((files["domain"] == "target") & files["label"].notna()).any()) if len(files) else True
    suites = build_suites(cfg, classes, image_size, target_labelled)

    with staging_dir(docs_dir) as staging:
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        for site in list(context.variables.data_docs_sites or {}):
            context.delete_data_docs_site(site)  # only ours, no second copy in a temporary directory
        context.add_data_docs_site(site_name="tada", site_config={
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                              "base_directory": str(staging.resolve())},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        })
        source = context.data_sources.add_pandas("dataset")
        definitions = []
        for name, expectations in suites.items():
            batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
            suite = context.suites.add(gx.ExpectationSuite(name=name))
            for expectation in expectations:
                suite.add_expectation(expectation)
            definitions.append(context.validation_definitions.add(
                gx.ValidationDefinition(name=name, data=batch, suite=suite)))
        report_items = []
        success = True
        for definition in definitions:
            name = definition.name
            result = definition.run(
                batch_parameters={"dataframe": tables[name]},
                result_format={"result_format": "COMPLETE", "unexpected_index_column_names": None},
            )
            success &= bool(result.success)
            for r in result.results:
                d = r.to_json_dict()
                config, res = d["expectation_config"], d.get("result", {})
                item = {
                    "table": name,
                    "expectation": config["type"],
                    "column": config["kwargs"].get("column"),
                    "summary": (config.get("meta") or {}).get("summary", config["type"]),
                    "success": bool(r.success),
                    "unexpected_count": res.get("unexpected_count"),
                }
                if not r.success:
                    if d.get("exception_info", {}).get("raised_exception"):
                        item["error"] = d["exception_info"].get("exception_message")
                    item["detail"] = item.get("error") or _describe_failure(config["kwargs"], res)
                    item["examples"] = _examples(name, tables[name], res)
                report_items.append(item)
        context.build_data_docs()
        failed = [i for i in report_items if not i["success"]]
        replace_dir(staging, docs_dir if success and not failed else failed_docs_dir)

    report = {
        "success": success and not failed,
        "dataset": str(root),
        "rows": int(len(tables["files"])),
        "classes": list(classes),
        "evaluated_expectations": len(report_items),
        "failed_expectations": len(failed),
        "results": report_items,
    }
    return ValidationOutcome(report["success"], report, summarise(report))


def summarise(report: dict[str, Any]) -> str:
    if report["success"]:
        return (f"validation passed: {report['evaluated_expectations']} expectations on {report['rows']} images "
                f"({len(report['classes'])} classes)")
    lines = [f"validation FAILED: {report['failed_expectations']} of {report['evaluated_expectations']} expectations "
             f"failed on {report['dataset']}"]
    for item in report["results"]:
        if item["success"]:
            continue
        lines.append(f"- {item['summary']} [{item['expectation']}"
                     f"{'(' + item['column'] + ')' if item['column'] else ''}]: {item['detail']}")
        lines += [f"    e.g. {example}" for example in item.get("examples", [])]
    return "\n".join(lines)
