import io
import json
import re

from tada.progress import TrainingProgress, evaluation_line, json_line
from tada.train import LogRow

ROWS = [LogRow("train", 5, {"lr": 0.01, "grl_coeff": 0.5, "loss": 2.5, "source_ce": 2.25}),
        LogRow("train", 10, {"lr": 0.005, "grl_coeff": 0.9, "loss": 1.75, "source_ce": 1.5}),
        LogRow("eval", 10, {"source_accuracy": 0.9, "target_accuracy": 0.625, "estimated_target_accuracy": 0.75})]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_without_a_terminal_every_row_is_a_json_line_and_nothing_else():
    out, err = io.StringIO(), io.StringIO()
    with TrainingProgress(20, out, err) as progress:
        for row in ROWS:
            progress(row)
    assert [json.loads(line) for line in out.getvalue().splitlines()] == [
        {"kind": r.kind, "step": r.step, **r.values} for r in ROWS]
    assert err.getvalue() == ""


def test_on_a_terminal_a_bar_with_the_step_the_losses_and_each_evaluation():
    out, err = Terminal(), Terminal()
    with TrainingProgress(20, out, err) as progress:
        for row in ROWS:
            progress(row)
    assert out.getvalue() == ""  # no JSON line on a terminal
    bar = err.getvalue()
    assert " 50%|" in bar and "10/20" in bar
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d, [\d.]+step/s", bar)  # elapsed<left, rate
    assert "loss=1.75, L_y=1.5]" in bar and "lr=" not in bar  # source_ce as the paper writes it
    assert "step 10: target accuracy 0.6250, estimated target accuracy 0.7500, source accuracy 0.9000" in bar


def test_rows_go_to_the_file_and_the_bar_to_the_terminal():
    out, err = io.StringIO(), Terminal()  # tada train > rows.jsonl
    with TrainingProgress(20, out, err) as progress:
        for row in ROWS:
            progress(row)
    assert len(out.getvalue().splitlines()) == 3 and "10/20" in err.getvalue()


def test_json_line_rounds_floats_and_evaluation_line_skips_missing_scores():
    assert json.loads(json_line(LogRow("train", 3, {"loss": 1 / 3}))) == {"kind": "train", "step": 3, "loss": 0.33333}
    assert evaluation_line(LogRow("eval", 4, {"source_accuracy": 0.5, "snd": 1.0})) == "step 4: source accuracy 0.5000"
