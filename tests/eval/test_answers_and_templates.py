"""A team's own answers as candidates, and its own judge and pairwise prompts as Jinja2 templates:
end to end on the emulator, and every bad line or template refused at config load, naming the
file and line, before anything is sent."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import yaml

from batchery.emulator.fake_model import IGNORES_GUIDELINE
from batchery.errors import ConfigError
from batchery.eval.config import RankingConfig, load_config
from batchery.eval.items import load_answers
from batchery.eval.pipeline import run_evaluation
from batchery.eval.prompts import builtin_output, declared_output
from batchery.eval.specs import load_inputs, load_spec
from batchery.store import Store

DEMO = Path(__file__).parents[2] / "examples" / "eval"


def small_inputs(tmp_path: Path, n: int = 4, ids: bool = False) -> Path:
    """The demo's first n inputs (two statements), each with an id when asked."""
    lines = [orjson.loads(raw) for raw in (DEMO / "inputs.jsonl").read_bytes().splitlines()[:n]]
    path = tmp_path / "inputs.jsonl"
    path.write_bytes(b"".join(orjson.dumps({**line, **({"id": f"q{i}"} if ids else {})}) + b"\n"
                              for i, line in enumerate(lines)))
    return path


def config_file(tmp_path: Path, **overrides) -> Path:
    config = {
        "name": "own", "spec": str(DEMO / "spec.jsonl"), "inputs": str(small_inputs(tmp_path)), "emulate": True,
        "candidates": [{"name": "strong", "provider": "openai", "model": "gpt-4o"},
                       {"name": "weak", "provider": "mistral", "model": "mistral-small-latest"}],
        "judges": [{"provider": "anthropic", "model": "claude-haiku-4-5"}],
        "pairwise": {"reversed_share": 1.0},
        "behaviour": {"quality": {"gpt-4o": 0.95, "mistral-small-latest": 0.5}, "unparsable": {"*": 0.4}},
        "store": str(tmp_path / "store"), "out": str(tmp_path / "out"),
    }
    config.update(overrides)
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def evaluate(path: Path):
    config = load_config(path)
    with Store(config.store) as store:
        data, _ = run_evaluation(config, store)
        return data, sorted(job.name for job in store.list_jobs())


def write_lines(path: Path, lines: list) -> Path:
    path.write_bytes(b"".join((line if isinstance(line, bytes) else orjson.dumps(line)) + b"\n" for line in lines))
    return path


# -- existing answers as candidates ---------------------------------------------------------------


def test_existing_answers_are_judged_compared_and_reported_and_nothing_is_generated_for_them(tmp_path):
    inputs = [orjson.loads(raw) for raw in small_inputs(tmp_path).read_bytes().splitlines()]
    answers = write_lines(tmp_path / "answers.jsonl", [  # three of four inputs; one answer ignores the guideline
        {"statement_id": inputs[0]["statement_id"], "input": inputs[0]["input"], "answer": "I cannot see that."},
        {"statement_id": inputs[1]["statement_id"], "input": inputs[1]["input"],
         "answer": "It is covered." + IGNORES_GUIDELINE},
        {"statement_id": inputs[3]["statement_id"], "input": inputs[3]["input"], "answer": "I am an AI assistant."},
    ])
    data, jobs = evaluate(config_file(tmp_path, candidates=[
        {"name": "strong", "provider": "openai", "model": "gpt-4o"}, {"name": "mine", "answers": "answers.jsonl"}]))
    assert answers.exists()
    assert [j for j in jobs if ".generate." in j] == [j for j in jobs if j.startswith("own.generate.strong.")]
    board = {row["candidate"]: row for row in data["leaderboard"]}
    assert board["mine"]["n"] == 3 and board["mine"]["compliant"] == 2  # the judged ones, as generated ones are
    assert {r["item"] for r in data["pairwise"]["bradley_terry"]} == {"strong", "mine"}  # compared too
    mine = next(c for c in data["candidates"] if c["name"] == "mine")
    assert mine == {"name": "mine", "provider": "answers", "model": "answers.jsonl", "missing": 1}
    assert any(note.startswith("mine: 1 input(s) have no answer") for note in data["notes"])
    items = [orjson.loads(raw) for raw in (tmp_path / "out" / "items.jsonl").read_bytes().splitlines()]
    statuses = [item["status"] for item in items if item["candidate"] == "mine"]
    assert statuses == ["succeeded", "succeeded", "missing", "succeeded"]


def test_answers_may_name_the_input_by_its_id(tmp_path):
    inputs = small_inputs(tmp_path, ids=True)
    statements = load_spec(DEMO / "spec.jsonl")
    texts = load_inputs(inputs, statements)
    answers = write_lines(tmp_path / "answers.jsonl", [{"id": "q2", "answer": "two"}, {"id": "q0", "answer": "zero"}])
    given = load_answers(answers, statements, texts, inputs)
    first = next(iter(texts))
    assert {item: r.text for item, r in given.items()} == {f"{first}#0": "zero", f"{first}#2": "two"}
    assert all(r.ok for r in given.values())


@pytest.mark.parametrize("line, message", [
    (b'{"statement_id": "no_invented_facts", "input": ', "answers.jsonl:2: "),
    ({"statement_id": "no_invented_facts", "input": "X?"}, "answers.jsonl:2: field 'answer' must be a string"),
    ({"statement_id": "nope", "input": "X?", "answer": "a"}, "answers.jsonl:2: no statement 'nope' in the spec"),
    ({"statement_id": "no_invented_facts", "input": "Not an input.", "answer": "a"},
     "answers.jsonl:2: statement 'no_invented_facts' has no such input"),
    ({"id": "q9", "answer": "a"}, "answers.jsonl:2: no input with id 'q9'"),
    ({"id": "q0", "answer": "again"}, "answers.jsonl:2: a second answer to the same input (first at "),
    ({"answer": "a"}, "answers.jsonl:2: give 'statement_id' and 'input'"),
])
def test_a_bad_answers_line_is_a_config_error_naming_file_and_line(tmp_path, line, message):
    inputs = small_inputs(tmp_path, ids=True)
    statements = load_spec(DEMO / "spec.jsonl")
    answers = write_lines(tmp_path / "answers.jsonl", [{"id": "q0", "answer": "first"}, line])
    with pytest.raises(ConfigError, match="^" + str(answers.parent).replace("\\", "\\\\") + "/" + _re(message)):
        load_answers(answers, statements, load_inputs(inputs, statements), inputs)


def _re(text: str) -> str:
    import re

    return re.escape(text)


def test_bad_answers_stop_the_evaluation_before_anything_is_sent(tmp_path):
    write_lines(tmp_path / "answers.jsonl", [{"statement_id": "nope", "input": "X?", "answer": "a"}])
    path = config_file(tmp_path, candidates=[{"name": "strong", "provider": "openai", "model": "gpt-4o"},
                                             {"name": "mine", "answers": "answers.jsonl"}])
    with pytest.raises(ConfigError, match=r"answers\.jsonl:1: no statement 'nope'"):
        evaluate(path)
    with Store(tmp_path / "store") as store:
        assert store.list_jobs() == []


@pytest.mark.parametrize("candidate, message", [
    ({"name": "mine", "answers": "gone.jsonl"}, "candidates[0].answers: no such file"),
    ({"name": "mine", "answers": "a.jsonl", "provider": "openai"}, "not generated: drop provider"),
    ({"answers": "a.jsonl"}, "a candidate with 'answers' needs a 'name'"),
    ({"name": "mine"}, "give 'provider' and 'model'"),
])
def test_an_answers_candidate_is_either_answers_or_a_model(tmp_path, candidate, message):
    (tmp_path / "a.jsonl").write_text("")
    with pytest.raises(ConfigError, match=_re(message)):
        load_config(config_file(tmp_path, candidates=[candidate]))


# -- your own prompts ---------------------------------------------------------------------------

# Job names (stage, model and a digest of the requests) the evaluation above made before templates
# existed: a store made then finds every stage done, so nothing is sent or paid again. (The verdicts
# the `unparsable` knob spoils are asked again inside the judge and compare jobs, by the check of
# structured output every run makes, so no -reask stage is left to run; a store made before that
# holds its -reask jobs, which the same requests find done.)
BUILTIN_JOBS = ["own.compare.anthropic-claude-haiku-4-5.d05e3fd5b1",
                "own.generate.strong.5e637a6a1f", "own.generate.weak.d72917448d",
                "own.judge.anthropic-claude-haiku-4-5.c743b4d7ca"]


def test_the_builtin_prompts_make_byte_identical_requests_so_existing_stores_keep_their_cache(tmp_path):
    _, jobs = evaluate(config_file(tmp_path))
    assert jobs == BUILTIN_JOBS
    _, jobs = evaluate(config_file(tmp_path, judge_prompt="builtin", compare_prompt=["builtin"]))
    assert jobs == BUILTIN_JOBS  # named explicitly: the same jobs, found done


STRICT = """You grade one answer against a rule ({{ type }}, {{ section }}).
Rule: {{ statement }}
{% for e in examples %}Good example: {{ e.good_response }}
{% endfor %}<user_input>{{ input }}</user_input>
<answer>{{ answer }}</answer>
Reply as JSON: reason, verdict (pass or fail), confidence."""

PAIR = ("Which answer follows \"{{ statement }}\" better?\n<user_input>{{ input }}</user_input>\n"
        "<answer_a>{{ answer_a }}</answer_a>\n<answer_b>{{ answer_b }}</answer_b>\nReply with JSON: winner A, B or tie.")


def test_each_template_is_its_own_stage_and_column_with_bias_and_agreement_per_template(tmp_path):
    (tmp_path / "strict.j2").write_text(STRICT)
    judges = [{"provider": "anthropic", "model": "claude-haiku-4-5"},
              {"name": "g", "provider": "gemini", "model": "gemini-2.5-flash"}]
    data, jobs = evaluate(config_file(
        tmp_path, judges=judges, behaviour={"quality": {"gpt-4o": 0.95, "mistral-small-latest": 0.5}},
        judge_prompt=["builtin", {"file": "strict.j2", "output": {
            "fields": {"reason": "string", "verdict": {"type": "string", "enum": ["pass", "fail"]},
                       "confidence": {"type": "number", "minimum": 0, "maximum": 1}},
            "verdict": "verdict", "values": {"pass": True, "fail": False}}}],
        compare_prompt=["builtin", {"name": "short", "text": PAIR}]))
    stages = {job.split(".")[1] for job in jobs}
    assert {"judge", "judge@strict", "compare", "compare@short"} <= stages
    items = [orjson.loads(raw) for raw in (tmp_path / "out" / "items.jsonl").read_bytes().splitlines()]
    assert set(items[0]["judges"]) == {"anthropic/claude-haiku-4-5", "anthropic/claude-haiku-4-5/strict",
                                       "g", "g/strict"}
    assert all(v["status"] == "judged" for item in items for v in item["judges"].values())
    header = (tmp_path / "out" / "items.csv").read_text().splitlines()[0]
    assert "g/strict.verdict" in header
    rows = {row["template"]: row for row in data["templates"]}
    assert set(rows) == {"builtin", "strict", "short"}
    assert rows["strict"]["fleiss_kappa"] is not None and "fleiss_kappa" in rows["builtin"]  # None: all agree on one label
    assert rows["builtin"]["raters"] == ["anthropic/claude-haiku-4-5", "g"]
    for name in ("builtin", "short"):  # the templates x directions grid: bias and consistency per template
        assert rows[name]["n"] > 0 and rows[name]["share_first"] is not None
        assert rows[name]["reversed_pairs"] > 0 and rows[name]["pairwise_kappa"] is not None
    assert {r["judge"] for r in data["pairwise"]["judges"]} == {"anthropic/claude-haiku-4-5", "g",
                                                               "anthropic/claude-haiku-4-5/short", "g/short"}
    report = tmp_path / "out"
    assert (report / "template_bias.csv").read_text().splitlines()[0].startswith("template,")
    assert "Prompt templates" in (report / "report.html").read_text()


def test_a_judge_s_own_prompts_replace_the_evaluation_s(tmp_path):
    (tmp_path / "strict.j2").write_text(STRICT.replace("pass or fail", "true or false"))
    config = load_config(config_file(tmp_path, judge_prompt="strict.j2", judges=[
        {"name": "a", "provider": "anthropic", "model": "claude-haiku-4-5"},
        {"name": "b", "provider": "gemini", "model": "gemini-2.5-flash", "judge_prompt": "builtin"}]))
    assert [t.rater("a") for t in config.templates(config.judges[0], "judge")] == ["a/strict"]
    assert [t.rater("b") for t in config.templates(config.judges[1], "judge")] == ["b"]


@pytest.mark.parametrize("prompt, files, message", [
    ("strict.j2", {"strict.j2": "Rule: {{ statement }}\n\nAnswer: {{ anser }}"},
     "strict.j2:3: unknown variable 'anser' (did you mean 'answer'?); a judge prompt can use: statement,"),
    ("strict.j2", {"strict.j2": "Rule: {{ statement }}\n{% for e in examples %}{{ e }}\n"},
     "strict.j2:2: template syntax error: Unexpected end of template"),
    ("Compare {{ answer_a }}\nwith {{ answer_b }}", {}, "judge_prompt[0], line 1: unknown variable 'answer_a'"),
    ({"name": "x", "text": "{{ answer }}", "output": "likert"}, {},
     "judge_prompt[0].output: gives likert verdicts, but the evaluation's scale is binary"),
    ({"name": "x", "text": "{{ answer }}", "output": {"fields": {"ok": "boolean"}, "verdict": "pass"}}, {},
     "judge_prompt[0].output.verdict: 'pass' is not one of the fields (ok)"),
    ({"name": "x", "text": "{{ answer }}", "output": {"fields": {"v": "string"}, "verdict": "v"}}, {},
     "judge_prompt[0].output.fields.v: a judge's verdict field is boolean (binary) or integer"),
    ("gone.j2", {}, "judge_prompt[0].file: no such file"),
    ("{{ examples[3].user_query }}", {}, "judge_prompt[0]: template cannot be filled in"),
])
def test_template_errors_fail_at_config_load_naming_file_and_line(tmp_path, prompt, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=_re(message)):
        load_config(config_file(tmp_path, judge_prompt=prompt))


def test_declared_outputs_read_their_verdict_field_and_map_its_values():
    output = declared_output({"why": "string", "verdict": "string"}, "verdict", {"Pass": True, "FAIL": False}, "judge")
    assert output.schema["required"] == ["why", "verdict"] and output.kind == "binary"
    assert output.parse('{"why": "ok", "verdict": "pass"}').compliant is True
    assert output.parse('{"why": "no", "verdict": " Fail "}').compliant is False
    assert output.parse('{"why": "?", "verdict": "maybe"}') is None  # a value not declared: unparsed
    likert = declared_output({"grade": "integer"}, "grade", None, "judge")
    assert likert.kind == "likert" and likert.parse('{"grade": 4}').score == 4 and likert.parse('{"grade": 7}') is None
    pair = declared_output({"better": "string"}, "better", {"Response 1": "A", "Response 2": "B", "Same": "tie"},
                           "compare")
    assert pair.parse('{"better": "response 2"}').winner == "B"
    assert builtin_output("pairwise").parse('{"winner": "a"}').winner == "A"


def test_a_ranking_runs_a_grid_of_templates_by_both_directions_with_bias_per_template(tmp_path):
    from batchery.eval.ranking import run_ranking

    items = write_lines(tmp_path / "essays.jsonl", [{"id": f"e{i}", "text": f"Essay {i}."} for i in range(5)])
    path = tmp_path / "rank.yaml"
    path.write_text(yaml.safe_dump({
        "name": "grid", "items": str(items), "trait": "clarity", "emulate": True, "reversed_share": 1.0,
        "comparisons_per_item": 2, "judges": [{"provider": "openai", "model": "gpt-4o-mini"}],
        "compare_prompt": ["builtin", {"name": "plain", "text": "Which is clearer on {{ trait }}?\n"
                                       "<answer_a>{{ answer_a }}</answer_a>\n<answer_b>{{ answer_b }}</answer_b>"}],
        "store": str(tmp_path / "store"), "out": str(tmp_path / "out")}))
    config = load_config(path, RankingConfig)
    with Store(config.store) as store:
        data, _ = run_ranking(config, store)
        assert any(job.name.startswith("grid.rank@plain.") for job in store.list_jobs())
    rows = {row["template"]: row for row in data["templates"]}
    assert set(rows) == {"builtin", "plain"}
    assert rows["plain"]["reversed_pairs"] == rows["builtin"]["reversed_pairs"] > 0  # the same pairs, both ways
