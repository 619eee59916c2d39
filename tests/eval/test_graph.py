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
    assert (data["batch_windows"], data["window_stages"]) == (3, [["generate"], ["judge", "compare"],
                                                                  ["judge-reask", "compare-reask"]])
    assert all(row["unparsed"] == 0 for row in data["leaderboard"])
