"""Structured output checked in every run: an answer that does not parse or does not fit its
response_format schema is stored as `invalid`, asked again with the error (a request of its own,
with its own key) while sends are left, and ends `invalid` if it never fits; batch and live alike.
The emulator's `invalid_structured` knob makes the bad answers."""

from __future__ import annotations

import orjson
import pytest
from conftest import cli, counted, results, simulated, start_job

from batchery.control import job_status
from batchery.emulator.fake_model import NOT_JSON_REPLY, Behaviour
from batchery.engine import prepare_job
from batchery.errors import InputError
from batchery.inputs import iter_objects
from batchery.live import LiveRunner
from batchery.providers import get_provider
from batchery.structured import CORRECTION, INVALID

SCHEMA = {"type": "object", "properties": {"verdict": {"type": "string", "enum": ["yes", "no"]},
                                           "score": {"type": "integer"}},
          "required": ["verdict", "score"], "additionalProperties": False}


def requests(n: int) -> list[dict]:
    return [{"id": f"r{i}", "prompt": f"Judge answer {i}", "response_format": SCHEMA} for i in range(n)]


def bad(attempts: int, share: float = 1.0) -> Behaviour:
    """The first `attempts` asks of (a `share` of) structured requests get answers that do not fit."""
    return Behaviour(invalid_structured=share, invalid_attempts=attempts)


def fits(text: str | None) -> bool:
    value = orjson.loads(text or "null")
    return isinstance(value, dict) and value.get("verdict") in ("yes", "no") and isinstance(value.get("score"), int)


def test_batch_answers_that_do_not_fit_are_asked_again_with_the_error_and_then_fit(store, make_emulator):
    emulator = make_emulator(behaviour=bad(2))  # prose first, then JSON that breaks the schema, then a fit
    reqs = [*requests(4), {"id": "again", "prompt": "Judge answer 1", "response_format": SCHEMA},
            {"id": "plain", "prompt": "no schema here"}]
    engine = start_job(store, emulator, reqs, max_attempts=3)
    progress = engine.run()

    assert progress.done and progress.items == {"succeeded": 5}
    rows = results(store)
    assert [r.id for r in rows] == ["r0", "r1", "r2", "r3", "again", "plain"]
    assert all(r.status == "succeeded" and fits(r.text) for r in rows[:5])
    assert [r.attempts for r in rows] == [3, 3, 3, 3, 3, 1]
    assert rows[4].text == rows[1].text and rows[4].custom_id == rows[1].custom_id  # the repeated line follows
    assert emulator.stats()["batches_created"]["openai"] == 3  # one batch per round of asks

    # The re-ask is a request of its own: its own key, the bad answer and the error in the conversation.
    job = store.get_job("job")
    item = store.db.execute("SELECT id FROM items WHERE job_id = ? AND row_id = 'r0' AND state = 'done'",
                            (job.id,)).fetchone()[0]
    request = orjson.loads(store.db.execute("SELECT request FROM structured WHERE item = ?", (item,)).fetchone()[0])
    roles = [m["role"] for m in request["messages"]]
    assert roles == ["user", "assistant", "user", "assistant", "user"]
    assert request["messages"][1]["content"] == NOT_JSON_REPLY
    assert request["messages"][2]["content"].startswith(f"{CORRECTION}: the answer is not valid JSON")
    assert request["messages"][4]["content"].startswith(f"{CORRECTION}: at $")
    # Each attempt that did not fit stays in the store under its own key, with its tokens in the cost.
    history = store.db.execute(
        "SELECT i.key, o.status, o.error_code FROM items i JOIN outcomes o ON o.item = i.id"
        " WHERE i.job_id = ? AND i.row_id = 'r0' AND i.state = 'reasked' ORDER BY i.id", (job.id,)).fetchall()
    assert [(status, code) for _, status, code in history] == [(INVALID, "invalid_json"), (INVALID, "schema_mismatch")]
    assert len({key for key, _, _ in history} | {rows[0].custom_id}) == 3
    exported_output = sum(r.usage["output_tokens"] for r in rows[:4]) + rows[5].usage["output_tokens"]
    assert sum(row[5] for row in store.usage_by_model(job.id)) > exported_output  # output tokens
    assert job_status(store, job).invalid == 0 and store.attempts(job.id) == {3: 4, 1: 1}


def test_batch_answers_that_never_fit_end_invalid_after_max_attempts(store, make_emulator):
    emulator = make_emulator(behaviour=bad(99, share=0.5))  # about half the lines never fit
    engine = start_job(store, emulator, requests(12), max_attempts=2)
    progress = engine.run()

    rows = results(store)
    broken = [r for r in rows if r.status == INVALID]
    assert 0 < len(broken) < 12 and progress.done
    assert progress.items == {"succeeded": 12 - len(broken), INVALID: len(broken)}
    assert progress.failed == progress.invalid == len(broken)
    for r in broken:  # the last answer, and why it does not fit
        assert r.attempts == 2 and not r.ok and r.text and not fits(r.text)
        assert r.error["code"] == "schema_mismatch" and r.error["message"].startswith("at $")
    assert all(fits(r.text) and r.attempts == 1 for r in rows if r.status == "succeeded")
    status = job_status(store, store.get_job("job"))
    assert status.state == "done" and status.invalid == len(broken) and status.requests[INVALID] == len(broken)


def live_run(store, emulator, name: str, max_attempts: int, n: int = 6):
    adapter = get_provider("anthropic", base_url=emulator.base_url("anthropic"), api_key="test-key")
    job, _ = prepare_job(store, name, adapter, "claude-haiku-4-5", iter_objects(requests(n)), name)
    return counted(LiveRunner(store, adapter, job, simulated(emulator, concurrency=4, max_attempts=max_attempts))).run()


def test_live_answers_are_checked_and_asked_again_as_they_arrive(store, make_emulator):
    emulator = make_emulator(behaviour=bad(1))
    progress = live_run(store, emulator, "live", max_attempts=2)
    assert progress.done and progress.items == {"succeeded": 6}
    assert progress.live["sent"] == 12 and emulator.stats()["live_requests"]["anthropic"] == 12
    rows = results(store, "live")
    assert all(r.status == "succeeded" and fits(r.text) and r.attempts == 2 for r in rows)


def test_live_answers_that_never_fit_end_invalid_and_a_higher_max_attempts_asks_again(store, make_emulator):
    emulator = make_emulator(behaviour=bad(2))
    progress = live_run(store, emulator, "live", max_attempts=2)
    assert progress.done and progress.items == {INVALID: 6}
    assert all(r.status == INVALID and r.attempts == 2 and r.error["code"] == "schema_mismatch"
               for r in results(store, "live"))

    # The same job with one more send allowed re-asks each invalid line once (the path a run killed
    # between storing an invalid answer and asking again takes too), and those fit.
    progress = live_run(store, emulator, "live", max_attempts=3)
    assert progress.done and progress.items == {"succeeded": 6}
    assert all(r.attempts == 3 and fits(r.text) for r in results(store, "live"))


def test_a_response_format_that_is_no_json_schema_is_refused_before_anything_is_sent(store, emulator):
    reqs = [*requests(2), {"id": "bad", "prompt": "x", "response_format": {"type": "objekt"}}]
    with pytest.raises(InputError, match=r"^request\[2\]: field 'response_format' is not a valid JSON Schema"):
        start_job(store, emulator, reqs)
    assert store.get_job("job") is None and emulator.stats()["files_uploaded"] == 0


def test_the_cli_exits_1_and_status_and_results_show_invalid_lines(tmp_path, make_emulator, monkeypatch):
    emulator = make_emulator(behaviour=bad(99))
    path = tmp_path / "judge.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in requests(3)))
    store, out = str(tmp_path / "store"), tmp_path / "out.jsonl"
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    code, _, err = cli("run", str(path), "--model", "gpt-test", "--base-url", emulator.base_url("openai"),
                       "--max-attempts", "2", "--store", store, "--out", str(out))
    assert code == 1, err
    assert "3 invalid" in err and "invalid (schema_mismatch)" in err  # the summary and the most common reason
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [r["status"] for r in lines] == [INVALID] * 3
    assert lines[0]["text"] == "{}" and lines[0]["error"]["code"] == "schema_mismatch"
    assert "'verdict' is a required property" in lines[0]["error"]["message"]

    code, text, _ = cli("status", "judge", "--store", store)
    assert code == 0 and "3 invalid" in text and "schema_mismatch" in text
    code, text, _ = cli("status", "judge", "--json", "--store", store)
    report = orjson.loads(text)
    assert report["requests"] == {INVALID: 3} and report["attempts"] == {"2": 3}
    code, text, _ = cli("results", "judge", "--format", "csv", "--store", store)
    assert code == 0 and text.count(",invalid,") == 3


def test_retry_asks_invalid_lines_again_with_their_error(tmp_path, make_emulator, monkeypatch):
    emulator = make_emulator(behaviour=bad(2))  # prose, then JSON that breaks the schema, then a fit
    path = tmp_path / "judge.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in requests(2)))
    store = str(tmp_path / "store")
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    code, _, err = cli("run", str(path), "--model", "gpt-test", "--base-url", emulator.base_url("openai"),
                       "--max-attempts", "1", "--store", store)
    assert code == 1 and "2 invalid" in err

    code, _, err = cli("retry", "judge", "--store", store)  # one more send each, whatever --max-attempts said
    assert code == 0 and "2 lines to send again" in err, err
    code, text, _ = cli("results", "judge", "--store", store)
    rows = [orjson.loads(line) for line in text.splitlines()]
    assert [(r["status"], r["attempts"], r["error"]["code"]) for r in rows] == [(INVALID, 2, "schema_mismatch")] * 2

    code, _, err = cli("retry", "judge", "--max-attempts", "5", "--store", store)
    code, text, _ = cli("results", "judge", "--store", store)
    rows = [orjson.loads(line) for line in text.splitlines()]
    assert [(r["status"], r["attempts"]) for r in rows] == [("succeeded", 3)] * 2 and all(fits(r["text"]) for r in rows)


class StoppedBeforeTheReask(LiveRunner):
    """Ctrl-C arrives right after an invalid answer is stored, before it is asked again."""

    def _reask(self, item: int):
        raise KeyboardInterrupt


def test_a_live_run_stopped_between_an_invalid_answer_and_its_reask_re_asks_it_next_run(store, make_emulator):
    emulator = make_emulator(behaviour=bad(1))
    adapter = get_provider("openai", base_url=emulator.base_url("openai"), api_key="test-key")
    job, _ = prepare_job(store, "live", adapter, "gpt-test", iter_objects(requests(3)), "live")
    with pytest.raises(KeyboardInterrupt):
        counted(StoppedBeforeTheReask(store, adapter, job, simulated(emulator, max_attempts=3, concurrency=1))).run()
    assert store.counts(job.id) == {INVALID: 1, "pending": 2}  # the answer is kept, the job not finished
    assert store.get_job("live").state == "running" and emulator.stats()["live_requests"]["openai"] == 1

    progress = counted(LiveRunner(store, adapter, store.get_job("live"), simulated(emulator, concurrency=4, max_attempts=3))).run()
    assert progress.done and progress.items == {"succeeded": 3}
    assert all(r.attempts == 2 and fits(r.text) for r in results(store, "live"))
    # the stored answer was not asked for again: only its re-ask, and two asks for each other line
    assert emulator.stats()["live_requests"]["openai"] == 1 + 1 + 2 * 2


@pytest.mark.parametrize("knobs, message", [
    ("{not json", "--behaviour"),
    ('{"invalid_attempts": 0.5}', "whole number"),
    ('{"invalid_structurd": 1}', "unknown behaviour knob"),
])
def test_the_emulator_command_refuses_bad_behaviour_knobs(knobs, message):
    code, _, err = cli("emulator", "--port", "0", "--behaviour", knobs)
    assert code == 2 and err.startswith("error: --behaviour") and message in err
