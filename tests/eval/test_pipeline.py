"""Evaluations end to end on the emulator: every stage is a real batchery job through the official
SDKs, the emulator's synthetic knobs give the statistics something to find."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
import yaml

from batchery.errors import ConfigError, InputError, JobError
from batchery.eval.config import load_config
from batchery.eval.pipeline import EvalStopped, jury_verdict, run_evaluation
from batchery.eval.specs import load_inputs, load_spec
from batchery.eval.verdicts import ComplianceVerdict
from batchery.store import Store

ROOT = Path(__file__).parents[2]
REAL_SPEC = ROOT.parent / "shared" / "data" / "openai_model_spec.jsonl"  # the workspace's shared data (CI has it)
DEMO = ROOT / "examples" / "eval"
DEMO_ITEMS = 30  # the demo spec: 10 statements x 3 inputs


def spec_inputs(tmp_path: Path, per_statement: int = 1) -> Path:
    """Inputs for the real spec: the user queries of each statement's own examples."""
    lines = []
    for raw in REAL_SPEC.read_bytes().splitlines():
        statement = orjson.loads(raw)
        queries = [e["user_query"] for e in statement["metadata"].get("examples", []) if e.get("user_query")]
        for query in (queries or [f"Tell me about {statement['id']}."])[:per_statement]:
            lines.append(orjson.dumps({"statement_id": statement["id"], "input": query}))
    path = tmp_path / "inputs.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def write_config(tmp_path: Path, **overrides) -> Path:
    config = {
        "name": "spec-test", "spec": str(DEMO / "spec.jsonl"), "inputs": str(DEMO / "inputs.jsonl"), "emulate": True,
        "candidates": [{"name": "strong", "provider": "openai", "model": "gpt-4o"},
                       {"name": "weak", "provider": "mistral", "model": "mistral-small-latest"}],
        "judges": [{"provider": "anthropic", "model": "claude-haiku-4-5"},
                   {"provider": "gemini", "model": "gemini-2.5-flash"},
                   {"provider": "groq", "model": "llama-3.3-70b-versatile"}],
        "jury": "majority", "pairwise": {"reversed_share": 1.0},
        "behaviour": {"quality": {"gpt-4o": 0.95, "mistral-small-latest": 0.5}, "judge_noise": {"*": 0.03},
                      "position_bias": {"llama-3.3-70b-versatile": 0.9}},
        "store": str(tmp_path / "store"), "out": str(tmp_path / "out"),
    }
    config.update(overrides)
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def evaluate(path: Path, **kwargs):
    config = load_config(path)
    with Store(config.store) as store:
        return run_evaluation(config, store, **kwargs)


@pytest.mark.skipif(not REAL_SPEC.exists(), reason=f"the real spec is not at {REAL_SPEC}")
def test_the_real_spec_runs_through_generation_jury_pairwise_and_report(tmp_path):
    data, report = evaluate(write_config(tmp_path, spec=str(REAL_SPEC), inputs=str(spec_inputs(tmp_path))))
    board = {row["candidate"]: row for row in data["leaderboard"]}
    assert [row["candidate"] for row in data["leaderboard"]] == ["strong", "weak"]
    assert board["strong"]["n"] == board["weak"]["n"] == 46  # one input per statement, all judged
    assert board["strong"]["rate"] > 0.85 and board["weak"]["rate"] < 0.7
    assert board["strong"]["lo"] < board["strong"]["rate"] < board["strong"]["hi"]
    assert board["strong"]["method"] == "korn-graubard"  # an interval over the 46 statements
    assert len({row["statement"] for row in data["statements"]}) == 46
    assert data["agreement"]["fleiss_kappa"] > 0.5
    pairwise = data["pairwise"]
    assert [r["item"] for r in pairwise["bradley_terry"]] == ["strong", "weak"]
    assert pairwise["position_bias"]["share_first"] > 0.5  # one judge prefers position A on ties
    assert {c["stage"] for c in data["costs"]} >= {"generate", "judge", "compare"}
    assert all(c["usd"] is not None and c["input_tokens"] > 0 for c in data["costs"])
    html = report.read_text()
    assert 'id="leaderboard"' in html and "strong" in html
    assert (report.parent / "leaderboard.csv").exists()


def test_running_it_again_sends_nothing_and_gives_the_same_numbers(tmp_path):
    path = write_config(tmp_path, pairwise=None)
    first, _ = evaluate(path)
    progress: list = []
    second, _ = evaluate(path, on_progress=progress.append)
    assert progress == []  # no stage ran: every answer and verdict came from the store
    assert second["leaderboard"] == first["leaderboard"]
    config = load_config(path)
    with Store(config.store) as store:
        jobs = [j for j in store.list_jobs() if j.name.startswith("spec-test.")]
        assert all(j.state == "done" for j in jobs) and len(jobs) == 2 + 3
    # and the report alone can be rebuilt without any connection
    third, _ = evaluate(path, send=False)
    assert third["leaderboard"] == first["leaderboard"]


def test_failed_generations_are_counted_as_failed_never_judged(tmp_path):
    path = write_config(tmp_path, candidates=[
        {"name": "good", "provider": "openai", "model": "gpt-4o"},
        {"name": "broken", "provider": "openai", "model": "missing-model"}], pairwise=None,
        judges=[{"provider": "anthropic", "model": "claude-haiku-4-5"}])
    data, _ = evaluate(path)
    board = {row["candidate"]: row for row in data["leaderboard"]}
    assert board["broken"]["failed"] == DEMO_ITEMS and board["broken"]["n"] == 0 and board["broken"]["rate"] is None
    judged = [c for c in data["costs"] if c["stage"] == "judge"]
    assert judged[0]["requests"] == DEMO_ITEMS  # only the good candidate's answers went to the judge


def test_unreadable_verdicts_are_asked_again_once(tmp_path):
    path = write_config(tmp_path, pairwise=None, candidates=[{"name": "c", "provider": "openai", "model": "gpt-4o"}],
                        judges=[{"provider": "gemini", "model": "gemini-2.5-flash"}],
                        behaviour={"unparsable": {"gemini-2.5-flash": 1.0}})  # every first reply is prose
    data, _ = evaluate(path)
    row = data["leaderboard"][0]
    assert row["unparsed"] == 0 and row["n"] == DEMO_ITEMS
    # A reply that does not fit the verdict schema is asked again by the judge stage's own job (the
    # structured-output check of every run), so no verdict is left for a separate re-ask stage.
    assert not [c for c in data["costs"] if c["stage"] == "judge-reask"]
    with Store(tmp_path / "store") as store:
        judge = next(j for j in store.list_jobs() if ".judge." in j.name)
        assert store.attempts(judge.id) == {2: DEMO_ITEMS}


def test_judge_calls_that_fail_are_failed_verdicts_not_unparsed_nor_non_compliant(tmp_path):
    path = write_config(tmp_path, pairwise=None, candidates=[{"name": "c", "provider": "openai", "model": "gpt-4o"}],
                        judges=[{"provider": "anthropic", "model": "missing-judge"}])
    data, _ = evaluate(path)
    row = data["leaderboard"][0]
    assert row["failed"] == DEMO_ITEMS and row["unparsed"] == 0
    assert row["n"] == 0 and row["rate"] is None and row["compliant"] == 0


def test_a_budget_stops_the_evaluation_and_a_higher_one_resumes_it(tmp_path):
    path = write_config(tmp_path, pairwise=None, budget_usd=0.001)
    with pytest.raises(EvalStopped, match="max-cost"):
        evaluate(path)
    raw = yaml.safe_load(path.read_text())
    raw["budget_usd"] = 100
    path.write_text(yaml.safe_dump(raw))
    data, _ = evaluate(path)
    assert data["leaderboard"][0]["n"] == DEMO_ITEMS
    generate = [c for c in data["costs"] if c["stage"] == "generate"]
    assert len(generate) == 2  # each candidate's generation job exists once: resumed, not restarted


def test_ties_and_each_judges_position_bias_reach_summary_json(tmp_path):
    """Two judges under majority: when they disagree the answer is a tie (its own column, never
    unparsed, every reply was read); the judge that picks the first answer 90% of the time between
    equal answers is flagged on its own, with its share and p-value in summary.json, and the
    Bradley–Terry fit carries its first-position effect."""
    path = write_config(tmp_path, judges=[{"name": "fair", "provider": "anthropic", "model": "claude-haiku-4-5"},
                                          {"name": "biased", "provider": "groq", "model": "llama-3.3-70b-versatile"}],
                        behaviour={"quality": {"gpt-4o": 0.9, "mistral-small-latest": 0.85},
                                   "judge_noise": {"*": 0.15}, "position_bias": {"llama-3.3-70b-versatile": 0.95}})
    _, report = evaluate(path)
    summary = orjson.loads((report.parent / "summary.json").read_bytes())
    for row in summary["leaderboard"]:
        assert row["ties"] > 0 and row["unparsed"] == 0  # disagreements are ties, not unreadable
        assert row["n"] + row["ties"] == DEMO_ITEMS
        assert row["method"] == "korn-graubard" and row["lo"] < row["rate"] < row["hi"]
    judges = {r["judge"]: r for r in summary["pairwise"]["judges"]}
    assert set(judges) == {"fair", "biased"}
    assert judges["biased"]["flagged"] and judges["biased"]["p_value"] < 0.01
    assert judges["biased"]["share_first"] > judges["fair"]["share_first"]
    assert not judges["fair"]["flagged"] and judges["fair"]["p_value"] is not None
    order = {r["judge"]: r for r in summary["pairwise"]["order_effect"]}
    assert order["biased"]["log_odds"] > order["fair"]["log_odds"]
    assert all(r["elo_lo"] < r["elo"] < r["elo_hi"] for r in summary["pairwise"]["bradley_terry"])
    assert summary["agreement"]["pairs"][0]["lo"] is not None
    html = report.read_text()
    assert 'id="judge-bias"' in html and "position bias</strong>" in html


def test_jury_rules():
    yes = ComplianceVerdict(True, None, 0.9, "")
    no = ComplianceVerdict(False, None, 0.9, "")
    assert jury_verdict([yes, yes, no], "majority") == (True, None)
    assert jury_verdict([yes, no], "majority") == ("tie", None)  # an even split is a tie, not unparsed
    assert jury_verdict([yes, yes, no, no], "majority") == ("tie", None)
    assert jury_verdict([yes, yes, no], "unanimous") == (False, None)
    assert jury_verdict([yes, no], "mean") == ("tie", None)
    assert jury_verdict([yes, yes, no], "mean") == (True, None)
    assert jury_verdict([], "majority") == (None, None)
    assert jury_verdict([None, None], "majority") == (None, None)
    likert = [ComplianceVerdict(True, 5, None, ""), ComplianceVerdict(False, 2, None, "")]
    assert jury_verdict(likert, "mean") == (False, 3.5)
    four = [ComplianceVerdict(True, 5, None, ""), ComplianceVerdict(False, 3, None, "")]
    assert jury_verdict(four, "mean") == (True, 4.0)  # the scale's threshold is inclusive: 4 complies


def test_jury_rules_count_the_whole_jury_not_the_replies_that_were_read():
    yes = ComplianceVerdict(True, None, 0.9, "")
    no = ComplianceVerdict(False, None, 0.9, "")
    # majority: more than half of the WHOLE jury; an unread reply that could decide leaves it unparsed.
    assert jury_verdict([yes, yes, None], "majority") == (True, None)
    assert jury_verdict([yes, None, None], "majority") == (None, None)  # 1 of 3 is not a majority
    assert jury_verdict([yes, no, None], "majority") == (None, None)  # the unread reply decides: not a tie
    assert jury_verdict([yes, None], "majority") == (None, None)
    # unanimous: every judge read and agreed; one read "no" is enough to fail it.
    assert jury_verdict([yes, yes, yes], "unanimous") == (True, None)
    assert jury_verdict([yes, yes, None], "unanimous") == (None, None)
    assert jury_verdict([yes, None, no], "unanimous") == (False, None)
    # mean: over the replies that were read (a missing score has no value to average).
    assert jury_verdict([yes, None, None], "mean") == (True, None)


def test_unanimous_does_not_grow_laxer_and_majority_drops_nothing_as_replies_fail():
    """Simulated juries: 3 judges with independent verdicts (P(yes) = 0.8). Unanimity must not
    rise as replies go unread, and 2 fully read judges under majority never yield 'unparsed'."""
    import numpy as np

    rng = np.random.default_rng(12)
    yes = ComplianceVerdict(True, None, 0.9, "")
    no = ComplianceVerdict(False, None, 0.9, "")
    votes = rng.random((4000, 3)) < 0.8
    shares = []
    for unread in (0.0, 0.25, 0.5):
        lost = rng.random(votes.shape) < unread
        outcomes = [jury_verdict([None if gone else (yes if v else no) for v, gone in zip(row, miss)], "unanimous")[0]
                    for row, miss in zip(votes, lost)]
        shares.append(sum(o is True for o in outcomes) / len(outcomes))
    assert shares[0] == pytest.approx(0.8**3, abs=0.03)
    assert shares[0] >= shares[1] >= shares[2]  # fewer read replies can only make unanimity rarer
    two = [jury_verdict([yes if a else no, yes if b else no], "majority")[0] for a, b in votes[:, :2]]
    assert None not in two  # every reply was read: nothing is unparsed
    assert sum(o == "tie" for o in two) / len(two) == pytest.approx(2 * 0.8 * 0.2, abs=0.03)


def test_bad_config_spec_and_inputs_name_the_file_and_place(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nspec: s.jsonl\ninputs: i.jsonl\ncandidates: []\njudges:\n  - {provider: openai}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: ") as problem:
        load_config(path)
    assert "judges[0].model: field required" in str(problem.value) and "candidates:" in str(problem.value)
    spec = tmp_path / "spec.jsonl"
    spec.write_text('{"id": "a", "text": "Be kind."}\n{"id": "b", "text": "Be brief.", "type": "RULE"}\n')
    with pytest.raises(InputError, match=r"spec\.jsonl:2: field 'type'"):
        load_spec(spec)
    spec.write_text('{"id": "a", "text": "Be kind."}\n')
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text('{"statement_id": "a", "input": "hi"}\n{"statement_id": "zz", "input": "hi"}\n')
    with pytest.raises(InputError, match=r"inputs\.jsonl:2: no statement 'zz'"):
        load_inputs(inputs, load_spec(spec))
    folder = tmp_path / "per_statement"
    folder.mkdir()
    (folder / "a.json").write_text('{"inputs": ["hello", "how are you?"]}')
    assert load_inputs(folder, load_spec(spec)) == {"a": ["hello", "how are you?"]}
    (folder / "a.json").write_text('{"inputs": "hello"}')
    with pytest.raises(InputError, match=r"a\.json: expected"):
        load_inputs(folder, load_spec(spec))


def test_unreadable_configs_specs_and_report_folders_are_clear_errors(tmp_path):
    path = tmp_path / "eval.yaml"
    path.write_bytes(b"name: caf\xe9\n")  # Latin-1, not UTF-8
    with pytest.raises(ConfigError, match=r"eval\.yaml: not valid UTF-8"):
        load_config(path)
    with pytest.raises(ConfigError, match="is a folder, not a config file"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match=r"gone\.yaml: no such config file"):
        load_config(tmp_path / "gone.yaml")
    (tmp_path / "taken").write_text("a file\n")
    for out in ("taken", "taken/report"):  # the report folder is, or lies under, an existing file
        with pytest.raises(ConfigError, match=r"out: .*taken is a file, not a folder"):
            load_config(write_config(tmp_path, out=str(tmp_path / out)))
    with pytest.raises(InputError, match="is a folder, not a file"):
        load_spec(tmp_path)
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "a.json").mkdir()
    with pytest.raises(InputError, match=r"a\.json: is a folder, not a file"):
        load_inputs(tmp_path / "inputs", load_spec(DEMO / "spec.jsonl"))


@pytest.mark.parametrize("params, message", [
    ({"prompt": "hi"}, "[0].params.prompt: set by batchery's prompts, not a parameter"),
    ({"messages": [], "model": "x"}, "[0].params.messages: set by batchery's prompts, not a parameter"),
    ({"temperature": 9}, "[0].params: field 'temperature' must be between 0 and 2"),
    ({"max_tokens": 2**70}, "[0].params: field 'max_tokens' must be a positive integer"),
])
def test_candidate_and_judge_params_are_checked_when_the_config_is_read(tmp_path, params, message):
    for role in ("candidates", "judges"):
        models = [{"provider": "openai", "model": "gpt-4o-mini", "params": params}]
        with pytest.raises(ConfigError, match=rf"{role}{re.escape(message)}"):
            load_config(write_config(tmp_path, **{role: models}))


def test_the_demo_evaluation_config_is_complete():
    config = load_config(DEMO / "demo.yaml")
    statements = load_spec(config.spec)
    inputs = load_inputs(config.inputs, statements)
    assert len(statements) == 10 and all(len(inputs[s.id]) == 3 for s in statements)
    assert len({c.provider for c in config.candidates}) == 3 and len({j.provider for j in config.judges}) == 4


def test_pair_sampling_covers_items_evenly_with_random_order_and_a_reversed_share():
    from collections import Counter

    from batchery.eval.ranking import sample_pairs

    ids = [f"item-{i}" for i in range(30)]
    pairs = sample_pairs(ids, per_item=6, reversed_share=0.25, seed=1)
    unordered = {frozenset(p) for p in pairs}
    assert 85 <= len(unordered) <= 90  # about 30 items x 6 opponents / 2
    meets = Counter(i for pair in unordered for i in pair)
    assert min(meets.values()) >= 4 and max(meets.values()) <= 8
    reversed_pairs = len(pairs) - len(unordered)
    assert 10 <= reversed_pairs <= 36  # about a quarter judged both ways
    firsts = Counter(a for a, _ in pairs)
    assert len(firsts) > 20  # order is randomised, not sorted
    assert sample_pairs(ids, 6, 0.25, seed=1) == pairs  # deterministic from the seed
    assert len({frozenset(p) for p in sample_pairs(ids[:4], 10, 0.0, seed=0)}) == 6  # capped at all pairs


def test_ranking_items_on_a_trait_end_to_end(tmp_path):
    from batchery.eval.config import RankingConfig
    from batchery.eval.ranking import run_ranking

    items = tmp_path / "essays.jsonl"
    items.write_bytes(b"".join(orjson.dumps({"id": f"e{i}", "text": f"Essay number {i} argues a point."}) + b"\n"
                               for i in range(8)))
    path = tmp_path / "rank.yaml"
    path.write_text(yaml.safe_dump({
        "name": "rank-test", "items": str(items), "trait": "clarity of argument", "emulate": True,
        "judges": [{"provider": "openai", "model": "gpt-4o-mini"}], "comparisons_per_item": 4,
        "reversed_share": 1.0, "behaviour": {"position_bias": {"gpt-4o-mini": 0.9}},
        "store": str(tmp_path / "store"), "out": str(tmp_path / "out")}))
    config = load_config(path, RankingConfig)
    with Store(config.store) as store:
        data, report = run_ranking(config, store)
    strengths = data["pairwise"]["bradley_terry"]
    assert sorted(r["item"] for r in strengths) == [f"e{i}" for i in range(8)]
    bias = data["pairwise"]["position_bias"]
    assert bias["share_first"] > 0.75 and bias["p_value"] < 0.01  # the biased judge is caught
    (judge,) = data["pairwise"]["judges"]
    assert judge["flagged"] and judge["consistency"] < 0.5  # it keeps the position, not the verdict
    (order,) = data["pairwise"]["order_effect"]
    assert order["share_first"] > 0.75 and order["share_lo"] > 0.5
    assert data["pairwise"]["reverse_consistency"]["n"] >= 14  # (about) 16 pairs, each judged both ways
    assert report.exists()


def test_a_likert_evaluation_reports_mean_scores_and_ranks_by_compliance(tmp_path):
    path = write_config(tmp_path, pairwise=None, scale="likert", jury="mean",
                        judges=[{"provider": "anthropic", "model": "claude-haiku-4-5"},
                                {"provider": "openai", "model": "gpt-4o-mini"}])
    data, _ = evaluate(path)
    board = {row["candidate"]: row for row in data["leaderboard"]}
    assert data["scale"] == "likert" and [r["candidate"] for r in data["leaderboard"]] == ["strong", "weak"]
    assert 4 <= board["strong"]["likert_mean"] <= 5 and board["weak"]["likert_mean"] < board["strong"]["likert_mean"]
    assert data["agreement"]["pairs"][0]["kappa"] is not None  # agreement on the 1-5 scores


def test_an_evaluation_killed_mid_run_resumes_and_pays_for_nothing_twice(tmp_path, make_emulator, monkeypatch):
    """SIGKILL `batchery eval run --no-wait` while the graph's stages are being submitted together
    (in the middle of a window's creates: right after the provider made a batch whose answer the
    run may not have stored; and at a seeded random moment), window after window (batches stay
    open until the test moves the emulator's clock on), then run it to its end: the numbers equal
    an uninterrupted run's, the provider answered every request exactly once and no batch was
    created twice, and kills left several stages with batches open at once."""
    import os
    import random
    import signal
    import subprocess
    import sys
    import time

    window = 100.0

    def config_for(emulator, folder: Path) -> Path:
        folder.mkdir()
        models = {"candidates": [("strong", "openai", "gpt-4o"), ("weak", "mistral", "mistral-small-latest"),
                                 ("mid", "anthropic", "claude-sonnet-4-5")],
                  "judges": [("j1", "anthropic", "claude-haiku-4-5"), ("j2", "gemini", "gemini-2.5-flash"),
                             ("j3", "groq", "llama-3.3-70b-versatile")]}
        path = write_config(folder, emulate=False, behaviour=None, pairwise={"reversed_share": 1.0}, **{
            role: [{"name": n, "provider": p, "model": m, "base_url": emulator.base_url(p)} for n, p, m in entries]
            for role, entries in models.items()})
        return path

    keys = {f"{p}_API_KEY": "test-key" for p in ("OPENAI", "MISTRAL", "ANTHROPIC", "GEMINI", "GROQ")}
    for name, value in keys.items():
        monkeypatch.setenv(name, value)

    reference = make_emulator()  # the uninterrupted run, in this process
    expected, _ = evaluate(config_for(reference, tmp_path / "reference"))

    emulator = make_emulator(processing_seconds=window)
    path = config_for(emulator, tmp_path / "killed")
    rng = random.Random(7)

    def created() -> int:
        return sum(emulator.stats()["batches_created"].values())

    def stages_open() -> int:
        with Store(tmp_path / "killed" / "store") as store:
            return sum(bool(store.batches(job.id, ["creating", "submitted"])) for job in store.list_jobs())

    def run_killed(when) -> int | None:
        """`eval run --no-wait`, SIGKILLed once `when()` says so (None: it returned first); how many
        stages had batches open when it died."""
        proc = subprocess.Popen([sys.executable, "-m", "batchery", "eval", "run", str(path), "--no-wait"],
                                env={**os.environ, **keys}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        while proc.poll() is None and not when():
            time.sleep(0.002)  # watching for the moment to strike, not waiting for time to pass
        if proc.poll() is not None:
            assert proc.returncode == 0, proc.stderr.read()
            return None
        proc.send_signal(signal.SIGKILL)  # a deliberate fault injection
        proc.wait()
        return stages_open()

    open_at_kill = []
    for batches in (3, 6):  # the generations; then the judges and comparisons
        mid_creates = created() + rng.randint(2, batches - 1)  # after some of the window's creates, not all
        open_at_kill.append(run_killed(lambda: created() >= mid_creates))  # noqa: B023 - called at once
        if batches == 6:
            deadline = time.monotonic() + rng.uniform(0.5, 3.0)
            open_at_kill.append(run_killed(lambda: time.monotonic() > deadline))  # noqa: B023
        assert evaluate(path, wait=False) is None  # the rest of the window is submitted (here: cheaper)
        emulator.clock.advance(window)
    assert evaluate(path) is not None  # collects the last window and writes the report
    assert open_at_kill[0] is not None and open_at_kill[1] is not None and min(open_at_kill[:2]) >= 2, open_at_kill
    resumed = orjson.loads((tmp_path / "killed" / "out" / "summary.json").read_bytes())
    assert resumed["leaderboard"] == expected["leaderboard"]
    assert resumed["pairwise"]["bradley_terry"] == expected["pairwise"]["bradley_terry"]
    assert emulator.stats()["requests_processed"] == reference.stats()["requests_processed"]  # none billed twice
    created_now, expected_batches = emulator.stats()["batches_created"], reference.stats()["batches_created"]
    assert created_now == expected_batches, (created_now, expected_batches)  # and no batch created twice


def test_an_emulated_evaluation_is_never_read_back_as_a_real_one(tmp_path, emulator, monkeypatch):
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_bytes(b"".join(line + b"\n" for line in (DEMO / "inputs.jsonl").read_bytes().splitlines()[:2]))
    one = {"candidates": [{"name": "c", "provider": "openai", "model": "gpt-4o"}], "inputs": str(inputs),
           "judges": [{"provider": "openai", "model": "gpt-4o-mini"}], "pairwise": None}
    evaluate(write_config(tmp_path, **one))
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    real = {**one, "emulate": False, "candidates": [{**one["candidates"][0], "base_url": emulator.base_url("openai")}]}
    with pytest.raises(JobError, match="holds answers from the emulator, and this run goes to http"):
        evaluate(write_config(tmp_path, **real))
    assert emulator.stats()["files_uploaded"] == 0
