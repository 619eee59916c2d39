"""The evaluation as a graph of jobs, on the emulator with a manual clock: batches take a fixed
processing time, every wait of the run advances the clock (no sleeping), so the number of waits is
the number of batch windows the evaluation took."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest
import yaml

from batchery.emulator import Emulator
from batchery.emulator.fake_model import Behaviour
from batchery.engine import PollPolicy
from batchery.eval.config import load_config
from batchery.eval.pipeline import EvalRunner, run_evaluation
from batchery.store import Store

DEMO = Path(__file__).parents[2] / "examples" / "eval"
WINDOW = 100.0  # the emulator's processing time: one batch window
PROVIDERS = ("openai", "mistral", "anthropic", "gemini", "groq")
CANDIDATES = [("strong", "openai", "gpt-4o"), ("weak", "mistral", "mistral-small-latest"),
              ("mid", "anthropic", "claude-sonnet-4-5")]
JUDGES = [("j1", "gemini", "gemini-2.5-flash"), ("j2", "groq", "llama-3.3-70b-versatile"),
          ("j3", "openai", "gpt-4o-mini")]


@pytest.fixture
def keys(monkeypatch) -> None:
    for provider in PROVIDERS:
        monkeypatch.setenv(f"{provider.upper()}_API_KEY", "test-key")


def graph_config(folder: Path, emulator: Emulator, *, statements: int = 2, **overrides) -> Path:
    """3 candidates and a jury of 3 on five providers, head to head with both orders, each model at
    the emulator through its base_url (so the emulator's clock is the test's)."""
    folder.mkdir(exist_ok=True)
    spec = folder / "spec.jsonl"
    spec.write_bytes(b"\n".join(DEMO.joinpath("spec.jsonl").read_bytes().splitlines()[:statements]) + b"\n")
    ids = {orjson.loads(line)["id"] for line in spec.read_bytes().splitlines()}
    inputs = [line for line in DEMO.joinpath("inputs.jsonl").read_bytes().splitlines()
              if orjson.loads(line)["statement_id"] in ids]
    (folder / "inputs.jsonl").write_bytes(b"\n".join(inputs) + b"\n")

    def models(entries):
        return [{"name": n, "provider": p, "model": m, "base_url": emulator.base_url(p)} for n, p, m in entries]

    config = {"name": "graph", "spec": "spec.jsonl", "inputs": "inputs.jsonl", "candidates": models(CANDIDATES),
              "judges": models(JUDGES), "jury": "majority", "pairwise": {"reversed_share": 1.0},
              "store": "store", "out": "out", **overrides}
    path = folder / "eval.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_graph_submits_every_generation_at_once_and_ends_in_two_batch_windows(tmp_path, make_emulator, keys):
    """Generation of the 3 candidates goes out in the first cycle, together; the 3 judge jobs and
    the 3 pairwise jobs go out together as soon as the answers are in; the whole evaluation waits
    2 batch windows (a stage list waited 1 + 3 + 3 = 7), each wait one sleep for every open batch,
    and each provider is polled with one list call per cycle."""
    emulator = make_emulator(processing_seconds=WINDOW)
    config = load_config(graph_config(tmp_path, emulator))
    open_at_each_wait: list[Counter] = []

    with Store(config.store) as store:
        def wait(seconds: float) -> None:
            open_now: Counter = Counter()
            for job in store.list_jobs():
                open_now[job.name.split(".")[1]] += len(store.batches(job.id, ["submitted"]))
            open_at_each_wait.append(open_now)
            emulator.clock.advance(seconds)

        poll = PollPolicy(initial=WINDOW, maximum=WINDOW, sleep=wait)
        runner = EvalRunner(config, store, poll=poll)
        evaluation = runner.run()
    assert evaluation is not None
    assert open_at_each_wait == [Counter(generate=3), Counter(judge=3, compare=3)]
    assert runner.windows() == (2, [["generate"], ["judge", "compare"]])
    assert len(evaluation.comparisons) == 3 * 3 * 2 * len(evaluation.answers["strong"])  # judges x pairs x orders
    assert all(len(verdicts) == 3 * len(evaluation.answers["strong"]) for verdicts in evaluation.verdicts.values())
    lists = emulator.stats()["batch_lists"]
    # cycles: submit+poll, poll (generation ends), submit+poll, poll (judges end): at most 4 lists each
    assert all(lists.get(p, 0) <= 4 for p in PROVIDERS), lists


def test_a_re_ask_starts_as_soon_as_its_verdicts_are_in_and_is_one_more_window(tmp_path, make_emulator, keys):
    """A judge whose replies cannot be read is asked again as soon as its own verdicts are in: the
    evaluation takes 3 windows, generate → judge and compare → their re-asks."""
    emulator = make_emulator(processing_seconds=WINDOW,
                             behaviour=Behaviour.from_dict({"unparsable": {"gemini-2.5-flash": 1.0}}))
    config = load_config(graph_config(tmp_path, emulator, statements=1))
    with Store(config.store) as store:
        waits: list[float] = []
        poll = PollPolicy(initial=WINDOW, maximum=WINDOW, sleep=lambda s: (waits.append(s), emulator.clock.advance(s)))
        result = run_evaluation(config, store, poll=poll)
    assert result is not None
    data, _ = result
    assert len(waits) == 3
    # The replies that do not fit the verdict schema are asked again inside the judge and compare
    # jobs (the structured-output check of every run), in the third window; no -reask stage is left.
    # (batch_windows counts stage rounds, so it says 2 here: see the structured branch's report.)
    assert not any("reask" in stage for window in data["window_stages"] for stage in window)
    assert all(row["unparsed"] == 0 for row in data["leaderboard"])


def test_no_wait_submits_what_it_can_and_each_later_run_or_collect_moves_the_graph_on(
        tmp_path, make_emulator, keys, monkeypatch):
    """`eval run --no-wait` submits the three generations and returns (exit 0), naming what is
    open and what waits; `eval status --json --refresh` shows every stage, asking each provider
    once; `batchery collect --all` finishes the generations, the next `--no-wait` run submits the
    judges and comparisons at once, and a last `eval run` ends it: nothing was sent twice."""
    from conftest import cli

    emulator = make_emulator(processing_seconds=WINDOW)
    path = str(graph_config(tmp_path, emulator, statements=1))
    monkeypatch.chdir(tmp_path)  # collect writes finished jobs' results files here

    code, _, err = cli("eval", "run", path, "--no-wait")
    assert code == 0, err
    assert "generate: strong | running |" in err and "judge: j1 | waiting for generate: strong, generate: weak" in err
    assert "batchery eval run" in err and "--refresh" in err
    created = emulator.stats()["batches_created"]
    assert {p: n for p, n in created.items() if n} == {"openai": 1, "mistral": 1, "anthropic": 1}

    before = emulator.stats()["batch_lists"]
    code, out, err = cli("eval", "status", path, "--json", "--refresh")
    assert code == 0, err
    after = emulator.stats()["batch_lists"]
    assert {p: after[p] - before.get(p, 0) for p in after if after[p] != before.get(p, 0)} == {
        "openai": 1, "mistral": 1, "anthropic": 1}  # one list call per provider with open batches
    stages = orjson.loads(out)["stages"]
    assert [(s["stage"], s["state"]) for s in stages] == [("generate", "running")] * 3 + [
        ("judge", "waiting")] * 3 + [("compare", "waiting")] * 3
    for stage in stages[:3]:  # each generation: one batch, at the provider (in batchery's words)
        assert list(stage["report"]["batch_states"].values()) == [1]
        assert set(stage["report"]["batch_states"]) <= {"submitted", "running"}

    emulator.clock.advance(WINDOW)
    code, _, err = cli("collect", "--all", "--store", str(tmp_path / "store"))
    assert code == 0, err
    code, _, err = cli("eval", "run", path, "--no-wait")
    assert code == 0, err
    assert "generate: strong | done |" in err and "judge: j1 | running |" in err and "compare: j3 | running |" in err
    assert sum(emulator.stats()["batches_created"].values()) == 3 + 6  # the judges and comparisons, together

    emulator.clock.advance(WINDOW)
    code, _, err = cli("eval", "run", path)
    assert code == 0, err
    assert "done in 1 batch window (judge, compare)" in err  # this run waited for the last window only
    with Store(tmp_path / "store") as store:
        jobs = [job for job in store.list_jobs() if job.name.startswith("graph.")]
        distinct = sum(sum(store.counts(job.id).values()) for job in jobs)
        assert len(jobs) == 9 and all(job.state == "done" for job in jobs)
    assert emulator.stats()["requests_processed"] == distinct  # each distinct request answered once
    assert sum(emulator.stats()["batches_created"].values()) == 9


def test_each_prompt_template_is_its_own_node_and_answers_candidates_need_no_generation(
        tmp_path, make_emulator, keys):
    """Two judges with two judge prompts and two pairwise prompts each, one generated candidate and
    one given as an answers file: only the generated one has a generation stage; then every
    (judge, prompt) stage, judging and comparing, goes out together in the next window, under the
    template's own stage name; the emulator cannot read these home-made prompts, so their replies
    are asked again (each template's own re-ask stage, as soon as its verdicts are in)."""
    emulator = make_emulator(processing_seconds=WINDOW)
    path = graph_config(tmp_path, emulator, statements=1, judges=[], candidates=[])
    config = yaml.safe_load(path.read_text())
    inputs = [orjson.loads(line) for line in (tmp_path / "inputs.jsonl").read_bytes().splitlines()]
    (tmp_path / "answers.jsonl").write_bytes(b"".join(orjson.dumps(
        {"statement_id": line["statement_id"], "input": line["input"], "answer": "I cannot know that."}) + b"\n"
        for line in inputs))
    strong = {"name": "strong", "provider": "openai", "model": "gpt-4o", "base_url": emulator.base_url("openai")}
    config.update(candidates=[strong, {"name": "mine", "answers": "answers.jsonl"}],
                  judges=[{"name": n, "provider": p, "model": m, "base_url": emulator.base_url(p)}
                          for n, p, m in JUDGES[:2]],
                  judge_prompt=["builtin", {"name": "strict", "text": "Rule: {{ statement }}\nAnswer: {{ answer }}"}],
                  compare_prompt=["builtin", {"name": "short", "text": "Input: {{ input }}\nA: {{ answer_a }}\n"
                                              "B: {{ answer_b }}\nWhich is better?"}])
    path.write_text(yaml.safe_dump(config))
    config = load_config(path)
    open_at_each_wait: list[Counter] = []

    with Store(config.store) as store:
        def wait(seconds: float) -> None:
            open_now: Counter = Counter()
            for job in store.list_jobs():
                open_now[job.name.split(".")[1]] += len(store.batches(job.id, ["submitted"]))
            open_at_each_wait.append(+open_now)
            emulator.clock.advance(seconds)

        runner = EvalRunner(config, store, poll=PollPolicy(initial=WINDOW, maximum=WINDOW, sleep=wait))
        evaluation = runner.run()
        generations = [job.name for job in store.list_jobs() if ".generate." in job.name]
    assert evaluation is not None
    assert generations == [g for g in generations if g.startswith("graph.generate.strong.")] and len(generations) == 1
    assert open_at_each_wait == [Counter(generate=1),
                                 Counter({"judge": 2, "judge@strict": 2, "compare": 2, "compare@short": 2}),
                                 Counter({"judge@strict-reask": 2, "compare@short-reask": 2})]
    count, stages = runner.windows()
    assert count == 3 and stages[0] == ["generate"]
    assert set(stages[1]) == {"judge", "judge@strict", "compare", "compare@short"}
    assert set(stages[2]) == {"judge@strict-reask", "compare@short-reask"}
    assert list(evaluation.verdicts) == ["j1", "j1/strict", "j2", "j2/strict"]  # the config's order
    assert all(len(v) == 2 * len(inputs) for v in evaluation.verdicts.values())  # both candidates judged
    assert [(c["judge"], c["template"]) for c in evaluation.comparisons][::2 * len(inputs)] == [
        ("j1", "builtin"), ("j1/short", "short"), ("j2", "builtin"), ("j2/short", "short")]  # both orders each


def test_a_ranking_s_judges_and_templates_run_together_as_one_graph(tmp_path, make_emulator, keys):
    """`eval rank`'s grid (judges × prompts) is one graph: all four stages go out in the first
    cycle, and the home-made prompt's re-asks (the emulator cannot read it) in the next."""
    from batchery.eval.config import RankingConfig
    from batchery.eval.ranking import run_ranking

    emulator = make_emulator(processing_seconds=WINDOW)
    (tmp_path / "essays.jsonl").write_bytes(b"".join(
        orjson.dumps({"id": f"e{i}", "text": f"Essay {i}."}) + b"\n" for i in range(4)))
    path = tmp_path / "rank.yaml"
    path.write_text(yaml.safe_dump({
        "name": "grid", "items": "essays.jsonl", "trait": "clarity", "comparisons_per_item": 2,
        "judges": [{"name": n, "provider": p, "model": m, "base_url": emulator.base_url(p)} for n, p, m in JUDGES[:2]],
        "compare_prompt": ["builtin", {"name": "plain", "text": "Which is clearer on {{ trait }}?\n"
                                       "A: {{ answer_a }}\nB: {{ answer_b }}"}],
        "store": "store", "out": "out"}))
    config = load_config(path, RankingConfig)
    open_at_each_wait: list[Counter] = []
    with Store(config.store) as store:
        def wait(seconds: float) -> None:
            open_now: Counter = Counter()
            for job in store.list_jobs():
                open_now[job.name.split(".")[1]] += len(store.batches(job.id, ["submitted"]))
            open_at_each_wait.append(+open_now)
            emulator.clock.advance(seconds)

        data, _ = run_ranking(config, store, poll=PollPolicy(initial=WINDOW, maximum=WINDOW, sleep=wait))
    assert open_at_each_wait == [Counter({"rank": 2, "rank@plain": 2}), Counter({"rank@plain-reask": 2})]
    assert [row["judge"] for row in data["pairwise"]["judges"]] == ["j1", "j1/plain", "j2", "j2/plain"]
