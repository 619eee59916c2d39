"""Mistral batch jobs through the official ``mistralai`` SDK, the adapter and the engine, against the
emulator on loopback. Time moves with ManualClock; nothing sleeps."""

from __future__ import annotations

import io

import httpx2
import orjson
import pytest
from conftest import results, start_job
from mistralai.client import Mistral
from mistralai.client.errors import SDKError

from batchery.errors import AccountError, ProviderError, TransientError
from batchery.providers.mistral import TAG_KEY, MistralBatch, chat_body

MODEL = "mistral-small-latest"
SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}


def adapter(emulator) -> MistralBatch:
    return MistralBatch(api_key="test-key", base_url=emulator.base_url("mistral"))


def sdk(emulator) -> Mistral:
    return Mistral(api_key="test-key", server_url=emulator.base_url("mistral"))


def prompts(n: int) -> list[dict]:
    return [{"id": f"r{i}", "prompt": f"question number {i}"} for i in range(n)]


def run_job(store, emulator, requests, *, provider=None, **options):
    return start_job(store, emulator, requests, model=MODEL, provider=provider or adapter(emulator), **options)


def submit(provider: MistralBatch, n: int, tmp_path, tag: str = "bb-test"):
    """Upload n requests and create one job through the adapter; returns the RemoteBatch."""
    path = tmp_path / f"{tag}.jsonl"
    path.write_bytes(b"".join(provider.encode(f"c{i}", {"model": MODEL, "messages": [
        {"role": "user", "content": f"q{i}"}]}) + b"\n" for i in range(n)))
    return provider.create(provider.upload(path), MODEL, tag)


# -- requests out ----------------------------------------------------------------------------------


def test_every_neutral_field_becomes_its_mistral_chat_field_and_the_model_stays_on_the_job():
    request = {"model": MODEL, "system": "Be brief.", "max_tokens": 50, "temperature": 0.5, "top_p": 0.9,
               "stop": ["END"], "response_format": SCHEMA, "reasoning": {"effort": "low"},
               "messages": [{"role": "developer", "content": "Use French."}, {"role": "user", "content": "Hi"},
                            {"role": "assistant", "content": "Salut"}, {"role": "user", "content": "Encore"}]}
    assert chat_body(request) == {
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "system", "content": "Use French."},
                     {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Salut"},
                     {"role": "user", "content": "Encore"}],
        "max_tokens": 50, "temperature": 0.5, "top_p": 0.9, "stop": ["END"], "reasoning_effort": "low",
        "response_format": {"type": "json_schema",
                            "json_schema": {"name": "response", "schema": SCHEMA, "strict": True}},
    }


def test_reasoning_effort_answers_keep_the_text_and_leave_the_thinking_in_the_response(store, emulator):
    run_job(store, emulator, [{"prompt": "Why?", "reasoning": {"effort": "high"}}]).run()
    (row,) = results(store)
    assert row.status == "succeeded" and row.text == "Emulated answer to: Why?"
    content = row.response["choices"][0]["message"]["content"]
    assert [chunk["type"] for chunk in content] == ["thinking", "text"]
    assert row.usage["output_tokens"] > row.usage["input_tokens"]
    assert row.usage["cached_tokens"] is None  # Mistral's documented usage has no cached count


def test_a_trailing_assistant_message_is_sent_as_a_mistral_prefix_and_answered(store, emulator):
    prefill = {"messages": [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue"}]}
    assert chat_body(prefill)["messages"][-1] == {"role": "assistant", "content": "Blue", "prefix": True}
    run_job(store, emulator, [prefill]).run()
    (row,) = results(store)
    assert row.status == "succeeded" and row.text == "Emulated answer to: Name a colour."


# -- files and jobs on the wire --------------------------------------------------------------------


def test_upload_is_a_batch_request_file_and_the_job_carries_tag_model_and_counters(make_emulator, tmp_path):
    emulator = make_emulator(processing_seconds=100)
    provider = adapter(emulator)
    remote = submit(provider, 3, tmp_path, tag="bb-wire")
    client = sdk(emulator)
    job = client.batch.jobs.get(job_id=remote.remote_id)
    (input_file,) = job.input_files
    uploaded = client.files.retrieve(file_id=input_file)
    assert (uploaded.purpose, uploaded.sample_type, uploaded.source, uploaded.num_lines) == (
        "batch", "batch_request", "upload", 3)
    assert job.metadata == {TAG_KEY: "bb-wire"} and job.model == MODEL and job.endpoint == "/v1/chat/completions"
    assert (job.status, job.total_requests, job.completed_requests, job.errors) == ("QUEUED", 3, 0, [])
    assert remote.tag == "bb-wire" and not remote.ended
    assert emulator.stats()["by_provider"]["mistral"]["batches_created"] == 1


def test_a_job_runs_queued_running_success_and_returns_lines_keyed_by_custom_id(make_emulator, tmp_path):
    emulator = make_emulator(processing_seconds=100)
    provider = adapter(emulator)
    job_id = submit(provider, 40, tmp_path).remote_id
    emulator.clock.advance(50)
    running = provider.poll([job_id])[job_id]
    assert running.status == "RUNNING" and 0 < running.completed < 40 and not running.ended
    emulator.clock.advance(50)
    done = provider.poll([job_id])[job_id]
    assert (done.status, done.ended, done.completed, done.failed) == ("SUCCESS", True, 40, 0)
    ids = [o.custom_id for o in provider.outcomes(done)]
    assert sorted(ids) == sorted(f"c{i}" for i in range(40)) and ids != [f"c{i}" for i in range(40)]
    result = sdk(emulator).files.retrieve(file_id=done.output_file)
    assert (result.sample_type, result.source) == ("batch_result", "mistral")


def test_mistral_timeout_exceeded_after_timeout_hours_keeps_the_lines_that_ran(make_emulator):
    emulator = make_emulator(processing_seconds=7200)
    client = sdk(emulator)
    lines = b"".join(orjson.dumps({"custom_id": f"c{i}", "body": {"messages": [
        {"role": "user", "content": f"q{i}"}]}}) + b"\n" for i in range(50))
    uploaded = client.files.upload(file={"file_name": "in.jsonl", "content": io.BytesIO(lines)}, purpose="batch")
    job = client.batch.jobs.create(endpoint="/v1/chat/completions", input_files=[uploaded.id], model=MODEL,
                                   timeout_hours=1)
    emulator.clock.advance(3599)
    assert client.batch.jobs.get(job_id=job.id).status == "RUNNING"
    emulator.clock.advance(1)
    job = client.batch.jobs.get(job_id=job.id)
    assert job.status == "TIMEOUT_EXCEEDED" and job.completed_at == job.created_at + 3600
    assert 0 < job.succeeded_requests == job.completed_requests < job.total_requests == 50
    output = client.files.download(file_id=job.output_file).read().splitlines()
    assert len(output) == job.succeeded_requests and job.error_file is None


def test_cancel_is_requested_then_done_and_keeps_what_already_ran(make_emulator, tmp_path):
    emulator = make_emulator(processing_seconds=100, cancel_seconds=30)
    provider = adapter(emulator)
    job_id = submit(provider, 100, tmp_path).remote_id
    emulator.clock.advance(50)
    provider.cancel(job_id)
    requested = provider.poll([job_id])[job_id]
    assert requested.status == "CANCELLATION_REQUESTED" and not requested.ended
    emulator.clock.advance(30)
    cancelled = provider.poll([job_id])[job_id]
    assert cancelled.status == "CANCELLED" and cancelled.leftover == "cancelled"
    assert cancelled.completed == requested.completed == len(list(provider.outcomes(cancelled))) > 0
    provider.cancel(job_id)  # an ended job: nothing to do, and no error


# -- failures --------------------------------------------------------------------------------------


def test_a_line_mistral_rejects_fails_alone_with_its_code_and_message(store, emulator):
    class SendsBadTopP(MistralBatch):
        def encode(self, custom_id, request):
            line = orjson.loads(super().encode(custom_id, request))
            if request["messages"][0]["content"] == "bad":
                line["body"]["top_p"] = 3
            return orjson.dumps(line)

    provider = SendsBadTopP(api_key="k", base_url=emulator.base_url("mistral"))
    run_job(store, emulator, [{"prompt": "good"}, {"prompt": "bad"}], provider=provider).run()
    good, bad = results(store)
    assert good.status == "succeeded" and bad.status == "failed" and bad.text is None
    assert bad.error["code"] == "invalid_request_error" and "between 0 and 1" in bad.error["message"]


def test_a_malformed_input_file_fails_the_whole_job_with_grouped_errors(make_emulator, tmp_path):
    emulator = make_emulator(processing_seconds=10)
    provider = adapter(emulator)
    path = tmp_path / "broken.jsonl"
    path.write_bytes(b'not json\n{"custom_id": "a"}\n' + provider.encode("b", {"messages": [
        {"role": "user", "content": "ok"}]}) + b"\n")
    job_id = provider.create(provider.upload(path), MODEL, "bb-broken").remote_id
    assert provider.poll([job_id])[job_id].status == "QUEUED"
    emulator.clock.advance(1)
    failed = provider.poll([job_id])[job_id]
    assert failed.status == "FAILED" and failed.ended and failed.output_file is None
    assert failed.error == "Each line must be a JSON object with a 'body' object. (x2)"


def test_errors_arrive_in_mistrals_envelopes(emulator):
    client = sdk(emulator)
    with pytest.raises(SDKError) as missing:
        client.batch.jobs.get(job_id="no-such-job")
    assert missing.value.status_code == 404 and orjson.loads(missing.value.body)["object"] == "error"
    with pytest.raises(SDKError) as invalid:
        client.batch.jobs.create(endpoint="/v1/chat/completions", model=MODEL, input_files=["f"], timeout_hours=0)
    assert invalid.value.status_code == 422
    assert orjson.loads(invalid.value.body)["detail"][0]["loc"] == ["body", "timeout_hours"]


@pytest.mark.parametrize(("status", "expected"), [
    (429, TransientError), (503, TransientError), (403, AccountError), (422, ProviderError)])
def test_sdk_errors_become_transient_account_or_final_with_mistrals_message(emulator, monkeypatch, status, expected):
    provider = adapter(emulator)

    def refuse(**kwargs):
        raise SDKError("API error occurred", httpx2.Response(status, json={"object": "error", "message": "no luck"}))

    monkeypatch.setattr(provider.client.batch.jobs, "list", refuse)
    with pytest.raises(expected, match=rf"mistral list batches.*{status}.*: no luck(\. The key or account.*)?$"):
        provider.find({"bb-x"})


# -- watching and recovery -------------------------------------------------------------------------


def test_the_job_list_pages_by_number_newest_first_and_filters_by_status(emulator, tmp_path):
    provider = adapter(emulator)
    ids = [submit(provider, 1, tmp_path, tag=f"bb-{i}").remote_id for i in range(5)]
    client = sdk(emulator)
    pages = [client.batch.jobs.list(page=p, page_size=2) for p in range(3)]
    assert [p.total for p in pages] == [5, 5, 5]
    assert [j.id for p in pages for j in p.data] == ids[::-1]
    assert client.batch.jobs.list(status=["SUCCESS"]).total == 5  # processing_seconds=0: done on first read
    assert client.batch.jobs.list(status=["QUEUED", "RUNNING"]).total == 0


def test_poll_reads_the_job_list_instead_of_each_job(emulator, tmp_path, monkeypatch):
    provider = adapter(emulator)
    ids = [submit(provider, 2, tmp_path, tag=f"bb-{i}").remote_id for i in range(3)]

    def no_single_reads(**kwargs):
        raise AssertionError("poll fetched a job one by one")

    monkeypatch.setattr(provider.client.batch.jobs, "get", no_single_reads)
    assert {r.status for r in provider.poll(ids).values()} == {"SUCCESS"}
