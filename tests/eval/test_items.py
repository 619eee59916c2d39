"""Every answer readable (items.jsonl, items.csv, pairs.jsonl, the report's table), failures in
the leaderboard, and human labels calibrating the jury, end to end on the emulator."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
import yaml
from test_pipeline import DEMO_ITEMS, evaluate, write_config

from batchery.emulator.fake_model import IGNORES_GUIDELINE
from batchery.errors import InputError
from batchery.eval.config import load_config
from batchery.store import Store


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_answer_and_judgement_is_written_out_and_failures_are_in_the_leaderboard(tmp_path):
    path = write_config(tmp_path, candidates=[
        {"name": "strong", "provider": "openai", "model": "gpt-4o"},
        {"name": "weak", "provider": "mistral", "model": "mistral-small-latest"},
        {"name": "broken", "provider": "openai", "model": "missing-model"}])
    data, report = evaluate(path)
    out = report.parent

    items = read_jsonl(out / "items.jsonl")
    assert len(items) == 3 * DEMO_ITEMS and len({i["id"] for i in items}) == len(items)
    first = items[0]
    assert first["id"] == f"strong:{first['statement_id']}:0" and first["input_index"] == 0
    assert first["answer"].startswith("Emulated answer to:") and first["status"] == "succeeded"
    assert set(first["judges"]) == {"anthropic/claude-haiku-4-5", "gemini/gemini-2.5-flash",
                                    "groq/llama-3.3-70b-versatile"}
    assert all(j["explanation"] and 0.6 <= j["confidence"] <= 0.95 for j in first["judges"].values())
    board = {row["candidate"]: row for row in data["leaderboard"]}
    for name in ("strong", "weak"):
        mine = [i for i in items if i["candidate"] == name]
        results = [i["jury"]["result"] for i in mine]
        assert results.count("compliant") == board[name]["compliant"]
        assert results.count("compliant") + results.count("non-compliant") == board[name]["n"]
    weak_bad = [i for i in items if i["candidate"] == "weak" and IGNORES_GUIDELINE in i["answer"]]
    assert weak_bad and all(i["jury"]["result"] != "compliant" or i["jury"]["yes"] < 3 for i in weak_bad)
    broken = [i for i in items if i["candidate"] == "broken"]
    assert all(i["status"] == "failed" and i["answer"] is None and i["jury"]["result"] == "failed"
               and i["judges"] == {} and i["error"] for i in broken)

    with (out / "items.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == [i["id"] for i in items]
    assert rows[0]["gemini/gemini-2.5-flash.explanation"] == first["judges"]["gemini/gemini-2.5-flash"]["explanation"]
    assert rows[0]["gemini/gemini-2.5-flash.status"] == "judged" and rows[0]["gemini/gemini-2.5-flash.verdict"] in {
        "true", "false"}
    assert rows[0]["jury_result"] == first["jury"]["result"] and rows[0]["answer"] == first["answer"]

    pairs = read_jsonl(out / "pairs.jsonl")
    assert len(pairs) == DEMO_ITEMS * 2 * 3  # strong vs weak on each input, both orders, 3 judges
    ids = {i["id"] for i in items}
    assert all(p["first_item"] in ids and p["second_item"] in ids for p in pairs)
    assert {p["winner_name"] for p in pairs} <= {"strong", "weak", "tie", None}
    assert all(p["explanation"] for p in pairs if p["winner"] is not None)

    # Failures in view: their share, and the rate had they counted as non-compliant answers.
    assert board["broken"]["failure_rate"] == 1.0 and board["broken"]["rate_failed_as_noncompliant"] == 0.0
    assert board["strong"]["failure_rate"] == 0.0 and board["strong"]["generations"] == DEMO_ITEMS
    assert board["strong"]["rate_failed_as_noncompliant"] == board["strong"]["rate"]
    with (out / "leaderboard.csv").open(newline="") as f:
        assert {r["candidate"]: r["failure_rate"] for r in csv.DictReader(f)}["broken"] == "1.0"
    html = report.read_text()
    assert html.count("<tr data-id=") == 3 * DEMO_ITEMS and "If failed = non-compliant" in html


def test_failure_figures_count_failed_generations_as_non_compliant():
    from batchery.eval.pipeline import _failure_figures
    from batchery.export import Result

    def result(status: str) -> Result:
        return Result(None, "k", status, None, None, {}, None, 1, "openai", "m", None)

    answers = {f"s#{i}": result("failed" if i < 3 else "succeeded") for i in range(30)}
    # 25 judged, 20 of them compliant; 2 more answered but every judge call failed (in "failed", not generations)
    figures = _failure_figures({"failed": 5, "compliant": 20, "n": 25}, answers)
    assert figures["failed_generations"] == 3 and figures["generations"] == 30
    assert figures["failure_rate"] == pytest.approx(0.1) and figures["failure_lo"] < 0.1 < figures["failure_hi"]
    assert figures["rate_failed_as_noncompliant"] == pytest.approx(20 / 28)


def _truth(item: dict) -> bool:
    """The emulator marks every answer that ignores the guideline: the labels a careful person gives."""
    return IGNORES_GUIDELINE not in item["answer"]


def test_human_labels_calibrate_the_rates_and_eval_report_recomputes_sending_nothing(tmp_path):
    path = write_config(tmp_path, pairwise=None, judges=[{"provider": "openai", "model": "gpt-4o-mini"}], behaviour={
        "quality": {"gpt-4o": 0.8, "mistral-small-latest": 0.5}, "judge_noise": {"*": 0.3}})  # a noisy judge
    evaluate(path)
    config = load_config(path)
    items = read_jsonl(config.out / "items.jsonl")
    weak = [i for i in items if i["candidate"] == "weak"]
    strong = [i for i in items if i["candidate"] == "strong"]
    labels = [{"id": i["id"], "label": _truth(i)} for i in weak + strong[::2]]  # every weak answer, half the strong
    (tmp_path / "labels.jsonl").write_text("".join(json.dumps(line) + "\n" for line in labels))
    raw = yaml.safe_load(path.read_text())
    raw["human_labels"] = "labels.jsonl"  # relative to the config
    path.write_text(yaml.safe_dump(raw))
    with Store(config.store) as store:
        before = [(j.name, j.state, store.counts(j.id)) for j in store.list_jobs()]

    result = subprocess.run([sys.executable, "-m", "batchery", "eval", "report", str(path)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    with Store(config.store) as store:
        assert [(j.name, j.state, store.counts(j.id)) for j in store.list_jobs()] == before  # nothing sent

    summary = json.loads((config.out / "summary.json").read_text())
    board = {row["candidate"]: row for row in summary["leaderboard"]}
    weak_truth = sum(map(_truth, weak)) / len(weak)
    calibrated = board["weak"]["calibrated"]
    assert calibrated["labels"] == DEMO_ITEMS  # all labelled: the estimate is the labels' own rate
    assert calibrated["estimate"] == pytest.approx(weak_truth) and calibrated["low"] <= weak_truth <= calibrated["high"]
    strong_cal = board["strong"]["calibrated"]
    assert strong_cal["labels"] == DEMO_ITEMS // 2 and 0 <= strong_cal["lambda"] <= 1
    assert strong_cal["low"] <= strong_cal["estimate"] <= strong_cal["high"]
    assert board["strong"]["rate"] is not None  # the jury-only figures stay beside the calibrated ones
    labelled = read_jsonl(config.out / "items.jsonl")
    assert sum(i["human_label"] is not None for i in labelled) == len(labels)
    html = (config.out / "report.html").read_text()
    assert 'id="calibration"' in html and "human label ≠ jury" in html

    (tmp_path / "labels.jsonl").write_text('{"id": "weak:no_invented_facts:0", "label": true}\n'
                                           '{"id": "weak:nope:0", "label": true}\n')
    with pytest.raises(InputError, match=r"labels\.jsonl:2: field 'id': no answer 'weak:nope:0'"):
        evaluate(path, send=False)


def test_a_bad_labels_file_stops_the_evaluation_before_anything_is_sent(tmp_path):
    (tmp_path / "labels.jsonl").write_text('{"id": "strong:no_invented_facts:0", "label": "yes"}\n')
    path = write_config(tmp_path, pairwise=None, human_labels=str(tmp_path / "labels.jsonl"))
    with pytest.raises(InputError, match=r"labels\.jsonl:1: field 'label'"):
        evaluate(path)
    with Store(load_config(path).store) as store:
        assert store.list_jobs() == []


def test_the_demo_labels_name_answers_of_the_demo():
    from test_pipeline import DEMO

    from batchery.eval.calibration import load_labels
    from batchery.eval.items import known_ids
    from batchery.eval.specs import load_inputs, load_spec

    config = load_config(DEMO / "demo.yaml")
    inputs = load_inputs(config.inputs, load_spec(config.spec))
    labels = load_labels(config.human_labels, config.scale, known_ids(config, inputs))
    assert len(labels) == 40 and {k.split(":")[0] for k in labels} == {c.name for c in config.candidates}


def test_an_answer_whose_judge_calls_failed_reads_failed_not_unparsed_and_is_no_failed_generation(tmp_path):
    path = write_config(tmp_path, pairwise=None, candidates=[{"name": "c", "provider": "openai", "model": "gpt-4o"}],
                        judges=[{"name": "gone", "provider": "anthropic", "model": "missing-judge"}])
    data, report = evaluate(path)
    items = read_jsonl(report.parent / "items.jsonl")
    assert all(i["jury"]["result"] == "failed" and i["judges"]["gone"]["status"] == "failed"
               and i["answer"] for i in items)
    row = data["leaderboard"][0]
    assert row["failed"] == DEMO_ITEMS and row["failed_generations"] == 0 and row["failure_rate"] == 0.0
    assert "call failed" in report.read_text()
