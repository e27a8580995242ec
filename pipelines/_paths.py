"""Where the stages read and write; dvc.yaml declares the same paths."""

PARAMS = "params.yaml"
DATA = "data"
VALIDATION_REPORT = "reports/validation.json"
VALIDATION_FAILED = "reports/validation_failed.json"
DATA_DOCS = "reports/data_docs"
DATA_DOCS_FAILED = "reports/data_docs_failed"
MODEL = "models/model.pt"
TRAIN_DIR = "reports/train"  # dvclive: metrics.json and plots/metrics/**.tsv
TRAIN_SUMMARY = "reports/train/summary.json"
METRICS = "reports/metrics.json"  # the summary: accuracies, validators
EVALUATION = "reports/evaluation.json"  # per-class accuracy, attention and domain statistics, ATC threshold
FIGURES = "reports/figures"
ONNX_MODEL = "models/model.onnx"
EXPORT_REPORT = "reports/export.json"
EXPORT_FAILED = "reports/export_failed.json"
MANIFEST = "data/manifest.csv"
MODELS = "models"  # production -> releases/<id>, releases/, gate_history.jsonl (tada.promote.ModelStore)
GATE_REPORT = "reports/gate.json"
DATA_DOCS_INDEX = "reports/data_docs/index.html"
TRAIN_CURVES = "reports/train/plots/metrics"  # dvclive's TSVs: train/<term>.tsv, eval/<metric>.tsv
REPORT = "reports/index.html"  # the run report (tada.report): every output above in one offline page
REPORT_INPUTS = {"metrics": METRICS, "evaluation": EVALUATION, "validation": VALIDATION_REPORT,
                 "export": EXPORT_REPORT, "train_summary": TRAIN_SUMMARY, "curves": TRAIN_CURVES, "figures": FIGURES,
                 "data_docs": DATA_DOCS_INDEX}  # tada.report.run.RunPaths' fields
