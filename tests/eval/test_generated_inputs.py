"""Generated inputs (SpecEval's autobencher), on the emulator with a manual clock: a model writes N
inputs per statement in each round, the later rounds are shown the inputs that exposed failures,
every round is a batchery job of the evaluation's graph (cached, resumable), and the inputs are
written to a JSONL file that can be given back as `inputs:`."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import yaml

from batchery.emulator import Emulator
from batchery.emulator.fake_model import UNPARSABLE_REPLY, reply
from batchery.engine import PollPolicy
from batchery.errors import ConfigError
from batchery.eval.config import load_config
from batchery.eval.generated import GENERATED_INPUTS
from batchery.eval.pipeline import EvalRunner, item_id, run_evaluation
from batchery.eval.prompts import INPUTS_SCHEMA, inputs_request
from batchery.eval.specs import load_inputs, load_spec
from batchery.eval.verdicts import parse_inputs
from batchery.store import Store

DEMO = Path(__file__).parents[2] / "examples" / "eval"
WINDOW = 100.0  # the emulator's processing time: one batch window
WRITER = ("openai", "gpt-4o")
CANDIDATES = [("good", "anthropic", "claude-sonnet-4-5"), ("weak", "mistral", "mistral-small-latest")]
JUDGE = ("j", "gemini", "gemini-2.5-flash")
BEHAVIOUR = {"quality": {"mistral-small-latest": 0.4}}


@pytest.fixture
def keys(monkeypatch) -> None:
    for provider in ("openai", "anthropic", "mistral", "gemini"):
        monkeypatch.setenv(f"{provider.upper()}_API_KEY", "test-key")


@pytest.fixture
def emulator(make_emulator) -> Emulator:
    from batchery.emulator.fake_model import Behaviour

    return make_emulator(processing_seconds=WINDOW, behaviour=Behaviour.from_dict(BEHAVIOUR))


def config_file(folder: Path, emulator: Emulator, *, rounds: int = 2, candidates=CANDIDATES, **overrides) -> Path:
    """2 statements of the demo spec, N = 2 inputs per statement and round, each model at the
    emulator through its base_url (so its clock is the test's)."""
    folder.mkdir(exist_ok=True)
    spec = folder / "spec.jsonl"
    spec.write_bytes(b"\n".join(DEMO.joinpath("spec.jsonl").read_bytes().splitlines()[:2]) + b"\n")

    def model(name, provider, model):
        return {"name": name, "provider": provider, "model": model, "base_url": emulator.base_url(provider)}

    config = {"name": "gen", "spec": "spec.jsonl",
              "inputs": {"generate": {"provider": WRITER[0], "model": WRITER[1], "per_statement": 2, "rounds": rounds,
                                      "base_url": emulator.base_url(WRITER[0])}},
              "candidates": [model(*c) for c in candidates], "judges": [model(*JUDGE)],
              "pairwise": {"reversed_share": 1.0}, "store": "store", "out": "out", **overrides}
    path = folder / "eval.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def clock_poll(emulator: Emulator, waits: list[float] | None = None) -> PollPolicy:
    def wait(seconds: float) -> None:
        if waits is not None:
            waits.append(seconds)
        emulator.clock.advance(seconds)

    return PollPolicy(initial=WINDOW, maximum=WINDOW, sleep=wait)


def sent_writer_prompts(emulator: Emulator) -> list[dict]:
    """The user message of every input writer request the emulator's OpenAI service received, read
    back from the batch input files through the official SDK."""
    import openai

    client = openai.OpenAI(base_url=emulator.base_url("openai"), api_key="test-key")
    prompts = []
    for batch in client.batches.list():
        for line in client.files.content(batch.input_file_id).read().splitlines():
            content = orjson.loads(line)["body"]["messages"][-1]["content"]
            if content.startswith("Write 2 new test inputs"):
                prompts.append(content)
    return prompts


def test_inputs_are_generated_judged_and_the_next_round_is_shown_those_that_exposed_failures(
        tmp_path, emulator, keys):
    """Round 1 writes 2 inputs for each of the 2 statements; both candidates answer them and the
    judge grades the answers; round 2's writer is shown exactly the round-1 inputs whose answers a
    judge found non-compliant (the others as tried ones) and writes 2 more each; the comparisons
    run once, over all 8 inputs. Six batch windows: inputs → answers → verdicts, twice. The
    inputs, with their round, are in generated_inputs.jsonl."""
    config = load_config(config_file(tmp_path, emulator))
    with Store(config.store) as store:
        runner = EvalRunner(config, store, poll=clock_poll(emulator))
        evaluation = runner.run()
    assert evaluation is not None
    sent = sent_writer_prompts(emulator)
    assert len(sent) == 4  # 2 statements, 2 rounds
    second = {sid: next(p for p in sent if f"id: {sid}\n" in p and ("<failing_inputs>" in p or "<tried_inputs>" in p))
              for sid in evaluation.inputs}
    assert runner.windows() == (6, [["inputs-r1"], ["generate-r1"], ["judge-r1"], ["inputs-r2"], ["generate-r2"],
                                    ["judge-r2", "compare"]])
    assert {sid: len(texts) for sid, texts in evaluation.inputs.items()} == {"no_invented_facts": 4,
                                                                            "disclose_ai_identity": 4}
    rounds = {sid: [evaluation.round_of[item_id(sid, i)] for i in range(4)] for sid in evaluation.inputs}
    assert rounds == {sid: [1, 1, 2, 2] for sid in evaluation.inputs}
    verdicts = evaluation.verdicts["j"]
    assert len(verdicts) == 2 * 8  # both candidates, every input of both rounds
    exposing = {sid: [text for i, text in enumerate(texts[:2])
                      if any(v is not None and not v.compliant for (_, item), v in verdicts.items()
                             if item == item_id(sid, i))]
                for sid, texts in evaluation.inputs.items()}
    assert any(exposing.values()), "the weak candidate fails somewhere in round 1"
    for sid, texts in evaluation.inputs.items():
        prompt = second[sid]
        assert prompt.startswith("Write 2 new test inputs")
        if exposing[sid]:
            shown = prompt.split("<failing_inputs>", 1)[1].split("</failing_inputs>", 1)[0]
            assert [line.split(". ", 1)[1] for line in shown.strip().splitlines()] == exposing[sid]
        else:
            assert "<failing_inputs>" not in prompt and all(text in prompt for text in texts[:2])
        assert not set(texts[2:]) & set(texts[:2])
    assert len(evaluation.comparisons) == 8 * 2  # every input, both orders
    lines = [orjson.loads(line) for line in (config.out / GENERATED_INPUTS).read_bytes().splitlines()]
    assert lines == [{"statement_id": sid, "input": text, "round": 1 + i // 2}
                     for sid in ("no_invented_facts", "disclose_ai_identity")
                     for i, text in enumerate(evaluation.inputs[sid])]


def verdicts_of(path: Path, emulator: Emulator) -> dict:
    """Run (or re-run) the evaluation without its report; every verdict by (candidate, item)."""
    config = load_config(path)
    with Store(config.store) as store:
        evaluation = EvalRunner(config, store, poll=clock_poll(emulator)).run()
    assert evaluation is not None
    return {key: verdict.compliant for key, verdict in evaluation.verdicts["j"].items()}


def test_a_rerun_sends_nothing_and_the_written_file_given_as_inputs_reuses_every_answer_and_verdict(
        tmp_path, emulator, keys):
    """The report counts every generated input; running the evaluation again sends nothing (every
    round's job is found done); giving generated_inputs.jsonl back as `inputs:` numbers the inputs
    as the run that wrote them did, so nothing is sent and every verdict is the same, and with one
    line edited only that input's answers, verdicts and comparisons are sent."""
    path = config_file(tmp_path, emulator)
    config = load_config(path)
    with Store(config.store) as store:
        data, _ = run_evaluation(config, store, poll=clock_poll(emulator))
    assert [(row["candidate"], row["n"]) for row in data["leaderboard"]] == [("good", 8), ("weak", 8)]
    assert any(GENERATED_INPUTS in note for note in data["notes"])
    sent = emulator.stats()["requests_processed"]
    first = verdicts_of(path, emulator)
    assert emulator.stats()["requests_processed"] == sent and len(first) == 16

    reused = tmp_path / "reused.jsonl"
    reused.write_bytes((config.out / GENERATED_INPUTS).read_bytes())
    raw = yaml.safe_load(path.read_text())
    raw["inputs"] = str(reused)
    path.write_text(yaml.safe_dump(raw))
    assert verdicts_of(path, emulator) == first
    assert emulator.stats()["requests_processed"] == sent  # nothing sent: every request was answered before

    lines = reused.read_bytes().splitlines()
    lines[0] = orjson.dumps({**orjson.loads(lines[0]), "input": "An input a person wrote by hand."})
    reused.write_bytes(b"\n".join(lines) + b"\n")
    assert load_inputs(reused, load_spec(config.spec))["no_invented_facts"][0] == "An input a person wrote by hand."
    edited = verdicts_of(path, emulator)
    assert {k: v for k, v in edited.items() if k[1] != "no_invented_facts#0"} == {
        k: v for k, v in first.items() if k[1] != "no_invented_facts#0"}
    # the edited input only: its 2 answers, then at most 2 verdicts and 1 pair in both orders (the
    # emulator's candidates may answer alike, and identical requests are sent once)
    assert sent + 2 < emulator.stats()["requests_processed"] <= sent + 2 + 2 + 2


def test_a_rerun_after_a_round_was_interrupted_resumes_it_and_sends_nothing_twice(tmp_path, emulator, keys):
    """The run is killed (an exception out of a wait) while round 2's inputs are at the provider;
    the next run finds rounds 1's jobs done and round 2's writer batch open, collects it and goes
    on: every request of the evaluation was processed once, as in an uninterrupted run."""
    config = load_config(config_file(tmp_path / "killed", emulator))

    class Killed(Exception):
        pass

    def kill_in_round_two(seconds: float) -> None:
        with Store(config.store) as peek:
            if any(job.name.split(".")[1] == "inputs-r2" for job in peek.list_jobs()):
                raise Killed
        emulator.clock.advance(seconds)

    with Store(config.store) as store, pytest.raises(Killed):
        EvalRunner(config, store, poll=PollPolicy(initial=WINDOW, maximum=WINDOW, sleep=kill_in_round_two)).run()
    with Store(config.store) as store:
        open_jobs = [job.name.split(".")[1] for job in store.list_jobs() if job.state == "running"]
    assert open_jobs == ["inputs-r2"]
    resumed = verdicts_of(tmp_path / "killed" / "eval.yaml", emulator)
    once = emulator.stats()["requests_processed"]

    whole = verdicts_of(config_file(tmp_path / "fresh", emulator), emulator)
    assert emulator.stats()["requests_processed"] == 2 * once  # the same requests as the interrupted run
    assert resumed == whole
    assert (tmp_path / "killed" / "out" / GENERATED_INPUTS).read_bytes() == (
        tmp_path / "fresh" / "out" / GENERATED_INPUTS).read_bytes()


def test_an_unreadable_writer_reply_is_asked_again_and_one_still_unreadable_counts_as_no_inputs(
        tmp_path, make_emulator, keys):
    """A writer that replies in prose is asked again inside its job (the structured-output check
    of every run: the reply does not fit the inputs schema), and its second reply is read. A reply
    that never fits (here cut short by max_tokens, up to max_attempts) gives that statement no
    inputs: nothing is answered or judged for it, and the next round asks as if afresh."""
    from batchery.emulator.fake_model import Behaviour

    emulator = make_emulator(processing_seconds=WINDOW,
                             behaviour=Behaviour.from_dict({"unparsable": {WRITER[1]: 1.0}}))
    config = load_config(config_file(tmp_path / "prose", emulator, rounds=1, candidates=CANDIDATES[:1]))
    with Store(config.store) as store:
        runner = EvalRunner(config, store, poll=clock_poll(emulator))
        evaluation = runner.run()
    assert evaluation is not None
    assert runner.windows()[1] == [["inputs-r1"], ["generate-r1"], ["judge-r1"]]
    assert emulator.stats()["by_provider"]["openai"]["requests_processed"] == 2 * 2  # each statement asked twice
    assert [len(evaluation.inputs[sid]) for sid in ("no_invented_facts", "disclose_ai_identity")] == [2, 2]

    path = config_file(tmp_path / "cut", emulator, rounds=2, candidates=CANDIDATES[:1])
    raw = yaml.safe_load(path.read_text())
    raw["inputs"]["generate"]["params"] = {"max_tokens": 5}
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    with Store(config.store) as store:
        runner = EvalRunner(config, store, poll=clock_poll(emulator))
        evaluation = runner.run()
    assert evaluation is not None and evaluation.inputs == {} and evaluation.answers == {"good": {}}
    # (a stage with nothing to send ends in the window it became ready in; round 2 asks exactly what
    # round 1 asked, having nothing to show: a reply that never fitted is not an answer to reuse, so
    # it is sent again, and max_attempts times per statement in each round)
    assert runner.windows()[1] == [["inputs-r1", "generate-r1", "judge-r1"], ["inputs-r2", "generate-r2", "judge-r2"]]
    assert (config.out / GENERATED_INPUTS).read_bytes() == b""
    assert emulator.stats()["by_provider"]["openai"]["requests_processed"] == 2 * 2 + 2 * 2 * config.max_attempts


W = {"provider": "openai", "model": "m"}


@pytest.mark.parametrize(("generate", "message"), [
    ({**W, "provider": "opena", "per_statement": 2}, "inputs.generate.provider: unknown provider 'opena'"),
    ({**W, "per_statement": 0}, "inputs.generate.per_statement: input should be greater than or equal to 1"),
    ({**W, "per_statement": 2, "rounds": 0}, "inputs.generate.rounds: input should be greater than or equal to 1"),
    (W, "inputs.generate.per_statement: field required"),
    ({**W, "per_statement": 2, "round": 2}, "inputs.generate.round: unknown key (did you mean 'rounds'?)"),
    ({**W, "per_statement": 2, "system": "x"}, "inputs.generate: the input writer's prompt is batchery's own"),
    ({**W, "per_statement": 2, "params": {"temperatur": 1}}, "inputs.generate.params.temperatur: unknown parameter"),
])
def test_a_bad_generate_setting_is_a_config_error_naming_the_field(tmp_path, generate, message):
    (tmp_path / "spec.jsonl").write_bytes(DEMO.joinpath("spec.jsonl").read_bytes())
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump({"name": "gen", "spec": "spec.jsonl", "inputs": {"generate": generate},
                                    "candidates": [{"provider": "openai", "model": "gpt-4o"}],
                                    "judges": [{"provider": "openai", "model": "gpt-4o-mini"}]}))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert message in str(error.value)


def test_generated_inputs_refuse_answers_candidates_and_inputs_keys_other_than_generate(tmp_path):
    (tmp_path / "spec.jsonl").write_bytes(DEMO.joinpath("spec.jsonl").read_bytes())
    (tmp_path / "answers.jsonl").write_bytes(b"")
    path = tmp_path / "eval.yaml"
    base = {"name": "gen", "spec": "spec.jsonl", "judges": [{"provider": "openai", "model": "gpt-4o-mini"}],
            "inputs": {"generate": {"provider": "openai", "model": "gpt-4o", "per_statement": 2}}}
    path.write_text(yaml.safe_dump({**base, "candidates": [{"name": "mine", "answers": "answers.jsonl"}]}))
    with pytest.raises(ConfigError, match="an 'answers' candidate answers given inputs"):
        load_config(path)
    path.write_text(yaml.safe_dump({**base, "inputs": {"genrate": {}},
                                    "candidates": [{"provider": "openai", "model": "gpt-4o"}]}))
    with pytest.raises(ConfigError, match=r"inputs\.genrate: unknown key \(did you mean 'generate'\?\)"):
        load_config(path)


def test_the_writer_s_reply_is_read_leniently_and_strictly():
    """The inputs list of the last object holding one, else a bare JSON list; strings (or
    {"input": ...}) stripped, empty ones and repeats dropped, at most N kept; nothing readable is
    None (so the writer is asked again)."""
    assert parse_inputs('{"inputs": ["a", " b ", "", "a", "c"]}', 2) == ["a", "b"]
    assert parse_inputs('Here you go:\n```json\n["x", {"input": "y"}, 3]\n```', 5) == ["x", "y"]
    assert parse_inputs('{"inputs": ["old"]} then {"inputs": ["new"]}', 5) == ["new"]
    for bad in (UNPARSABLE_REPLY, '{"inputs": []}', '{"inputs": "a"}', "[1, 2]", None, "[" * 300):
        assert parse_inputs(bad, 5) is None


def test_the_fake_writer_answers_with_varied_statement_specific_inputs_deterministically():
    """The emulator's writer finds the request by its first line, writes N distinct inputs built
    from the statement's examples (round 1) or the failing inputs it is shown (later rounds), and
    the same request always gets the same inputs."""
    statement = load_spec(DEMO / "spec.jsonl")[0]
    first = inputs_request(statement, 3, model="m", params={})["messages"][0]["content"]
    text = reply(first, INPUTS_SCHEMA, model="m")[0]
    inputs = orjson.loads(text)["inputs"]
    assert len(set(inputs)) == 3 and reply(first, INPUTS_SCHEMA, model="m")[0] == text
    queries = [e.user_query for e in statement.examples]
    assert all(any(q in i for q in queries) for i in inputs)
    later = inputs_request(statement, 2, model="m", params={}, failing=["Where is my parcel 12?"])
    inputs = orjson.loads(reply(later["messages"][0]["content"], INPUTS_SCHEMA, model="m")[0])["inputs"]
    assert len(inputs) == 2 and all("Where is my parcel 12?" in i for i in inputs)
