"""The batch engine end to end: real engine, real store, official OpenAI SDK, emulator on loopback."""

from __future__ import annotations

import gc
import io
import sys
import types

import orjson
import pytest
from conftest import both_backends, clock_poll, results, start_job

from batchery.engine import Engine, prepare_job
from batchery.errors import InputError, JobError, TransientError
from batchery.export import export
from batchery.inputs import iter_objects
from batchery.providers import get_provider
from batchery.providers.openai import OpenAIBatch
from batchery.store import Store

SCHEMA = {
    "type": "object",
    "properties": {"verdict": {"type": "string", "enum": ["yes", "no"]}, "score": {"type": "integer", "minimum": 1, "maximum": 5}},
    "required": ["verdict", "score"],
}


def prompts(n: int, start: int = 0) -> list[dict]:
    return [{"id": f"r{i}", "prompt": f"question number {i}"} for i in range(start, start + n)]


def test_thousands_of_requests_split_into_batches_come_back_complete_and_in_input_order(store, emulator):
    engine = start_job(store, emulator, prompts(3000), batch_size=700)
    final = engine.run()
    assert final.items == {"succeeded": 3000}
    assert emulator.stats()["batches_created"]["openai"] == 5  # 700+700+700+700+200
    rows = results(store)
    assert [r.id for r in rows] == [f"r{i}" for i in range(3000)]
    assert all(r.status == "succeeded" and "question number" in r.text for r in rows)
    assert rows[42].text.endswith("question number 42")  # each answer is matched to its own request
    assert rows[0].usage["input_tokens"] > 0 and rows[0].response["object"] == "chat.completion"
    assert {r.batch_id for r in rows} == {b.remote_id for b in store.batches(store.get_job("job").id)}


def test_identical_requests_are_sent_once_and_every_row_gets_the_answer(store, emulator):
    reqs = prompts(10) + [{"id": "dup-of-r3", "prompt": "question number 3"}, {"id": "r3-again", "prompt": "question number 3"}]
    start_job(store, emulator, reqs).run()
    assert emulator.stats()["requests_processed"] == 10
    rows = {r.id: r for r in results(store)}
    assert rows["dup-of-r3"].text == rows["r3-again"].text == rows["r3"].text
    assert rows["dup-of-r3"].custom_id == rows["r3"].custom_id


def test_json_schema_requests_get_json_that_fits_the_schema(store, emulator):
    reqs = [{"id": i, "prompt": f"judge {i}", "response_format": SCHEMA} for i in range(20)]
    start_job(store, emulator, reqs).run()
    for r in results(store):
        answer = orjson.loads(r.text)
        assert answer["verdict"] in ("yes", "no") and 1 <= answer["score"] <= 5


def test_a_rejected_request_is_a_failed_line_with_the_providers_error(store, emulator):
    class NoValidation(OpenAIBatch):
        """Sends a body the provider rejects (our own validation would stop it earlier)."""

        def encode(self, custom_id, request):
            line = orjson.loads(super().encode(custom_id, request))
            if request["messages"][0]["content"] == "bad":
                line["body"]["temperature"] = 9
            return orjson.dumps(line)

    provider = NoValidation(api_key="k", base_url=emulator.base_url("openai"))
    start_job(store, emulator, [{"prompt": "good"}, {"prompt": "bad"}], provider=provider).run()
    good, bad = results(store)
    assert good.status == "succeeded"
    assert bad.status == "failed" and bad.text is None
    assert bad.error["message"] and bad.error["code"]


@both_backends
def test_crash_after_create_before_persist_finds_the_batch_instead_of_creating_it_again(store_location, emulator):
    class DiesAfterCreate(OpenAIBatch):
        def create(self, input_file, model, tag):
            super().create(input_file, model, tag)
            raise KeyboardInterrupt("process killed after the provider created the batch")

    with Store(store_location) as store:
        provider = DiesAfterCreate(api_key="k", base_url=emulator.base_url("openai"))
        with pytest.raises(KeyboardInterrupt):
            start_job(store, emulator, prompts(100), batch_size=40, provider=provider).run()
    assert emulator.stats()["batches_created"]["openai"] == 1

    with Store(store_location) as store:  # the next run: a fresh process, same store
        final = start_job(store, emulator, prompts(100), batch_size=40).run()
        assert final.items == {"succeeded": 100}
        assert [r.id for r in results(store)] == [f"r{i}" for i in range(100)]
    assert emulator.stats()["batches_created"]["openai"] == 3  # 40 + 40 + 20, the first found, not re-created


@both_backends
def test_running_a_finished_job_again_sends_nothing(store_location, emulator):
    for _ in range(2):
        with Store(store_location) as store:
            start_job(store, emulator, prompts(50), batch_size=20).run()
    assert emulator.stats()["batches_created"]["openai"] == 3
    assert emulator.stats()["files_uploaded"] == 3


@both_backends
def test_answers_are_reused_across_jobs_in_the_same_store(store, emulator):
    start_job(store, emulator, prompts(30), name="first").run()
    final = start_job(store, emulator, prompts(40), name="second").run()  # 30 known, 10 new
    assert final.items == {"succeeded": 40}
    assert emulator.stats()["requests_processed"] == 40


def _run_at(store, emulator, name: str, url: str, notices: list, reuse: bool = True):
    adapter = get_provider("openai", base_url=url, api_key="test-key")
    job, _ = prepare_job(store, name, adapter, "gpt-test", iter_objects(prompts(30)), name, reuse=reuse,
                         announce=notices.append)
    return Engine(store, adapter, job, poll=clock_poll(emulator)).run()


@both_backends
def test_answers_are_reused_only_at_the_same_endpoint_and_each_reuse_is_announced(store, make_emulator):
    a, b = make_emulator(), make_emulator()
    notices: list[str] = []
    _run_at(store, a, "first", a.base_url("openai"), notices)
    _run_at(store, a, "same-url", a.base_url("openai") + "/", notices)  # a trailing slash is the same endpoint
    assert notices == ["30 answers reused from job 'first' (same store)"]
    assert a.stats()["requests_processed"] == 30
    assert [d for _, kind, d in store.events(store.get_job("same-url").id) if kind == "reused"] == [
        {"source_job": "first", "answers": 30}]
    _run_at(store, b, "other-url", b.base_url("openai"), notices)  # another server: everything is sent
    assert b.stats()["requests_processed"] == 30 and len(notices) == 1
    _run_at(store, a, "no-cache", a.base_url("openai"), notices, reuse=False)  # --no-cache resends
    assert a.stats()["requests_processed"] == 60 and len(notices) == 1


def test_jobs_of_unknown_origin_give_no_answers(store, emulator):
    legacy = get_provider("openai", base_url=emulator.base_url("openai"), api_key="test-key")
    legacy.origin = None  # a job stored before origins were recorded
    start_job(store, emulator, prompts(30), name="legacy", provider=legacy).run()
    assert "origin" not in store.get_job("legacy").options
    final = start_job(store, emulator, prompts(30), name="new").run()
    assert final.items == {"succeeded": 30} and emulator.stats()["requests_processed"] == 60


def test_a_job_with_answers_is_not_resumed_at_another_endpoint_one_without_moves(store, make_emulator):
    a, b = make_emulator(), make_emulator()
    notices: list[str] = []
    at_a = get_provider("openai", base_url=a.base_url("openai"), api_key="test-key")
    prepare_job(store, "job", at_a, "gpt-test", iter_objects(prompts(30)), "job")  # created, nothing answered
    _run_at(store, b, "job", b.base_url("openai"), notices)  # so it moves to B and is sent there
    assert store.get_job("job").options["origin"] == b.base_url("openai") and b.stats()["requests_processed"] == 30
    with pytest.raises(JobError, match=f"holds answers from {b.base_url('openai')}.*another job name"):
        _run_at(store, a, "job", a.base_url("openai"), notices)
    assert a.stats()["requests_processed"] == 0


def test_cancel_keeps_finished_lines_and_marks_the_rest_cancelled(store, make_emulator):
    emulator = make_emulator(processing_seconds=100)
    engine = start_job(store, emulator, prompts(200))  # retries allowed: a cancel the user asked for is final
    engine.run(wait=False)
    emulator.clock.advance(50)  # about half the lines are done
    final = engine.cancel()
    counts = final.items
    assert set(counts) == {"succeeded", "cancelled"}
    assert 50 <= counts["succeeded"] <= 150
    rows = results(store)
    assert all(r.text for r in rows if r.status == "succeeded")
    assert all(r.error["code"] == "batch_cancelled" for r in rows if r.status == "cancelled")
    assert store.get_job("job").state == "cancelled"


def test_cancel_before_anything_is_sent_cancels_locally(store, emulator):
    engine = start_job(store, emulator, prompts(5))
    final = engine.cancel()
    assert final.items == {"cancelled": 5}
    assert emulator.stats()["files_uploaded"] == 0


def test_expired_batch_keeps_finished_lines_and_marks_the_rest_expired(store, make_emulator):
    emulator = make_emulator(processing_seconds=100, completion_window_seconds=60)
    final = start_job(store, emulator, prompts(300), max_attempts=1).run()
    counts = final.items
    assert set(counts) == {"succeeded", "expired"}
    assert counts["succeeded"] > 0 and counts["expired"] > 0
    rows = results(store)
    assert [r.id for r in rows] == [f"r{i}" for i in range(300)]
    assert all(r.error["code"] == "batch_expired" for r in rows if r.status == "expired")


def test_bad_input_line_stops_everything_before_any_upload(store, emulator):
    reqs = prompts(10) + [{"id": "broken", "max_tokens": 5}]
    with pytest.raises(InputError, match=r"request\[10\]: a request needs 'messages' or 'prompt'"):
        start_job(store, emulator, reqs)
    assert emulator.stats()["files_uploaded"] == 0
    assert store.get_job("job") is None  # nothing half-written either


def test_a_line_over_the_providers_size_limit_is_rejected_before_upload(store, emulator, monkeypatch):
    from batchery.limits import BatchLimits

    monkeypatch.setattr(OpenAIBatch, "limits", BatchLimits(max_requests=10, max_bytes=2000, discount=0.5, window="24h"))
    with pytest.raises(InputError, match=r"request\[1\]: request is .* over openai's batch file limit"):
        start_job(store, emulator, [{"prompt": "short"}, {"prompt": "x" * 3000}])
    assert emulator.stats()["files_uploaded"] == 0


def test_a_line_the_provider_never_returns_is_marked_missing(store, emulator):
    class DropsALine(OpenAIBatch):
        def outcomes(self, remote):
            return (o for o in super().outcomes(remote) if not o.text.endswith("question number 7"))

    provider = DropsALine(api_key="k", base_url=emulator.base_url("openai"))
    final = start_job(store, emulator, prompts(10), provider=provider).run()
    assert final.items == {"succeeded": 9, "missing": 1}
    missing = [r for r in results(store) if r.status == "missing"]
    assert [r.id for r in missing] == ["r7"] and missing[0].error["code"] == "missing" and missing[0].text is None


def test_expired_lines_are_retried_in_new_batches_until_they_succeed_or_attempts_run_out(tmp_path, make_emulator):
    # Each batch needs 100 s but expires at 60 s: every attempt finishes part of what it is sent.
    outcomes = {}
    for attempts in (1, 3):
        emulator = make_emulator(processing_seconds=100, completion_window_seconds=60)
        with Store(tmp_path / f"store-{attempts}") as store:
            outcomes[attempts] = start_job(store, emulator, prompts(300), max_attempts=attempts).run().items
            rows = results(store)
        assert emulator.stats()["batches_created"]["openai"] == attempts  # one new batch per attempt
    assert outcomes[3]["succeeded"] > outcomes[1]["succeeded"]
    assert {r.attempts for r in rows} == {1, 2, 3}
    assert all(r.attempts == 3 for r in rows if r.status == "expired")  # gave up only after the last attempt


def test_a_request_the_provider_rejects_is_not_retried(store, emulator):
    final = start_job(store, emulator, [{"prompt": "fine"}, {"prompt": "x", "model": "missing-model"}]).run()
    assert final.items == {"succeeded": 1, "failed": 1}
    assert [r.attempts for r in results(store)] == [1, 1]


@both_backends
def test_a_provider_that_stays_unreachable_stops_the_run_with_a_clear_error_and_loses_nothing(store_location, emulator):
    from batchery.engine import PollPolicy
    from batchery.errors import ProviderError

    down = OpenAIBatch(api_key="k", base_url="http://127.0.0.1:9/v1")  # nothing listens there
    down.client = down.client.with_options(max_retries=0)
    with Store(store_location) as store:
        engine = start_job(store, emulator, prompts(20), provider=down)
        engine.poll = PollPolicy(initial=0, give_up_after=3, sleep=lambda s: None)
        with pytest.raises(ProviderError, match="failed 3 times in a row; the job is saved"):
            engine.run()
    with Store(store_location) as store:  # the provider is back: the same job resumes and finishes
        final = start_job(store, emulator, prompts(20)).run()
    assert final.items == {"succeeded": 20}
    assert emulator.stats()["batches_created"]["openai"] == 1


@both_backends
def test_collect_pauses_garbage_collection_while_reading_lines_and_restores_it_even_when_a_download_fails(
        store, emulator):
    seen: list[bool] = []

    class FailsTheFirstDownload(OpenAIBatch):
        def outcomes(self, remote):
            seen.append(gc.isenabled())
            if len(seen) == 1:
                raise TransientError("openai download: connection reset")
            return super().outcomes(remote)

    provider = FailsTheFirstDownload(api_key="k", base_url=emulator.base_url("openai"))
    assert start_job(store, emulator, prompts(3), provider=provider).run().items == {"succeeded": 3}
    assert seen == [False, False] and gc.isenabled()  # paused while reading, on again after a failure too
    gc.disable()  # a caller that turned it off keeps it off
    try:
        assert start_job(store, emulator, prompts(2), name="off", provider=provider).run().done
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_ingest_pauses_garbage_collection_while_reading_lines_and_restores_it_after_a_bad_line(store):
    seen: list[bool] = []

    def source(bad: bool):
        for i in range(3):
            seen.append(gc.isenabled())
            yield f"in.jsonl:{i + 1}", {"prompt": f"q {i}"}
        if bad:
            yield "in.jsonl:4", {"prompt": 4}

    adapter = get_provider("openai", base_url="http://127.0.0.1:9/v1", api_key="k")  # never called
    with pytest.raises(InputError, match=r"in\.jsonl:4"):
        prepare_job(store, "bad", adapter, "gpt-4o-mini", source(True), "fp")
    assert seen == [False] * 3 and gc.isenabled()
    prepare_job(store, "good", adapter, "gpt-4o-mini", source(False), "fp")
    assert seen == [False] * 6 and gc.isenabled()


def test_planning_and_export_pause_garbage_collection_and_restore_it_when_the_disk_is_full(
        store, emulator, tmp_path, monkeypatch):
    seen: list[tuple[str, bool]] = []

    class Watched(OpenAIBatch):
        @property
        def limits(self):
            if sys._getframe(1).f_code.co_name == "_plan":
                seen.append(("plan", gc.isenabled()))
            return OpenAIBatch.limits

    provider = Watched(api_key="k", base_url=emulator.base_url("openai"))
    engine = start_job(store, emulator, prompts(3), provider=provider)
    assert engine.run().done and seen and set(seen) == {("plan", False)}

    class FullDisk(io.BytesIO):
        def write(self, data):
            seen.append(("export", gc.isenabled()))
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(sys, "stdout", types.SimpleNamespace(buffer=FullDisk()))
    with pytest.raises(OSError, match="No space left"):
        export(store, engine.job.id, "openai", "-")
    assert seen[-1] == ("export", False) and gc.isenabled()


def test_a_download_cut_short_is_fetched_again_rather_than_resending_the_lines(store, emulator):
    class CutsTheFirstDownload(OpenAIBatch):
        downloads = 0

        def outcomes(self, remote):
            CutsTheFirstDownload.downloads += 1
            lines = list(super().outcomes(remote))
            return iter(lines[: len(lines) // 2] if CutsTheFirstDownload.downloads == 1 else lines)

    provider = CutsTheFirstDownload(api_key="k", base_url=emulator.base_url("openai"))
    final = start_job(store, emulator, prompts(40), provider=provider).run()
    assert final.items == {"succeeded": 40}
    assert CutsTheFirstDownload.downloads == 2
    assert emulator.stats()["batches_created"]["openai"] == 1  # nothing was sent (and paid for) twice
