"""Together batches through the official ``together`` SDK, the adapter and the engine, against the
emulator on loopback. Time moves with ManualClock; nothing sleeps."""

from __future__ import annotations

import hashlib

import httpx
import orjson
import pytest
import together
from conftest import results, start_job
from together.lib.utils.files import check_file

from batchery.errors import AccountError, ProviderError, TransientError
from batchery.providers.together import TogetherBatch, chat_body, decode_result, input_file_name

MODEL = "meta-llama/Llama-3.3-70B-Instruct-Turbo"
SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}


def adapter(emulator) -> TogetherBatch:
    return TogetherBatch(api_key="test-key", base_url=emulator.base_url("together"))


def sdk(emulator) -> together.Together:
    return together.Together(api_key="test-key", base_url=emulator.base_url("together"), max_retries=0)


def prompts(n: int) -> list[dict]:
    return [{"id": f"r{i}", "prompt": f"question number {i}"} for i in range(n)]


def run_job(store, emulator, requests, *, provider=None, **options):
    return start_job(store, emulator, requests, model=MODEL, provider=provider or adapter(emulator), **options)


def write_batch(provider: TogetherBatch, n: int, tmp_path, tag: str = "bb-test"):
    path = tmp_path / input_file_name(tag)
    path.write_bytes(b"".join(provider.encode(f"c{i}", {"model": MODEL, "messages": [
        {"role": "user", "content": f"q{i}"}]}) + b"\n" for i in range(n)))
    return path


def submit(provider: TogetherBatch, n: int, tmp_path, tag: str = "bb-test"):
    """Upload n requests and create one batch through the adapter; returns the RemoteBatch."""
    return provider.create(provider.upload(write_batch(provider, n, tmp_path, tag)), MODEL, tag)


# -- requests out ----------------------------------------------------------------------------------


def test_every_neutral_field_becomes_its_together_chat_field():
    request = {"model": MODEL, "system": "Be brief.", "max_tokens": 50, "temperature": 0.5, "top_p": 0.9,
               "stop": ["END"], "response_format": SCHEMA, "reasoning": {"effort": "low"},
               "messages": [{"role": "developer", "content": "Use French."}, {"role": "user", "content": "Hi"}]}
    assert chat_body(request) == {
        "model": MODEL,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "system", "content": "Use French."},
                     {"role": "user", "content": "Hi"}],
        "max_tokens": 50, "temperature": 0.5, "top_p": 0.9, "stop": ["END"], "reasoning_effort": "low",
        "response_format": {"type": "json_schema", "json_schema": {"name": "response", "schema": SCHEMA}},
    }
    line = orjson.loads(TogetherBatch(api_key="k").encode("bq-1", request))
    assert line == {"custom_id": "bq-1", "body": chat_body(request)}


def test_reasoning_effort_answers_keep_the_text_and_leave_the_thinking_in_the_response(store, emulator):
    run_job(store, emulator, [{"prompt": "Why?", "reasoning": {"effort": "high"}}]).run()
    (row,) = results(store)
    assert row.status == "succeeded" and row.text == "Emulated answer to: Why?"
    assert "high" in row.response["choices"][0]["message"]["reasoning"]
    assert row.usage["output_tokens"] > 0 and row.usage["cached_tokens"] is None


# -- Together upload -------------------------------------------------------------------------------


def test_together_upload_is_post_302_put_then_preprocess_and_keeps_the_file_name(emulator, tmp_path):
    provider = adapter(emulator)
    path = write_batch(provider, 3, tmp_path, tag="bb-upload")
    assert check_file(path, purpose="batch-api")["is_check_passed"]  # the SDK's own check would pass too
    file_id = provider.upload(path)

    uploaded = sdk(emulator).files.retrieve(file_id)
    assert (uploaded.filename, uploaded.purpose, uploaded.file_type, uploaded.bytes) == (
        "bb-upload.jsonl", "batch-api", "jsonl", path.stat().st_size)
    assert sdk(emulator).files.content(file_id).read() == path.read_bytes()
    assert emulator.stats()["by_provider"]["together"]["files_uploaded"] == 1


def test_the_upload_steps_on_the_wire(emulator):
    content = b'{"custom_id": "a", "body": {}}\n'
    api = emulator.base_url("together") + "/v1/files"
    key = {"Authorization": "Bearer test-key"}
    form = {"purpose": "batch-api", "file_name": "in.jsonl", "file_type": "jsonl",
            "checksum": hashlib.sha256(content).hexdigest()}
    with httpx.Client() as http:
        start = http.post(api, data=form, files={}, headers=key)
        assert start.status_code == 302
        location, file_id = start.headers["Location"], start.headers["X-Together-File-Id"]
        assert location.startswith(emulator.url) and "signature=" in location

        assert http.post(f"{api}/{file_id}/preprocess", headers=key).status_code == 400  # nothing PUT yet
        assert http.get(f"{api}/{file_id}", headers=key).status_code == 404  # invisible until preprocessed
        assert http.put(location.split("?")[0] + "?signature=forged", content=content).status_code == 403
        assert http.put(location, content=b"other bytes").status_code == 200  # presigned: no API key
        assert http.post(f"{api}/{file_id}/preprocess", headers=key).status_code == 400  # checksum mismatch
        assert http.put(location, content=content).status_code == 200
        done = http.post(f"{api}/{file_id}/preprocess", headers=key)
        assert done.status_code == 200 and done.json()["FileType"] == "jsonl" and done.json()["bytes"] == len(content)
        assert http.post(api, data=form, files={}).status_code == 401  # the API itself wants a key


def test_a_batch_needs_a_batch_api_file(emulator, tmp_path):
    path = tmp_path / "tune.jsonl"
    path.write_bytes(b'{"messages": []}\n')
    client = sdk(emulator)
    tuning = client.files.upload(file=path, purpose="fine-tune", check=False)
    with pytest.raises(together.BadRequestError, match="batch-api"):
        client.batches.create(endpoint="/v1/chat/completions", input_file_id=tuning.id)


# -- batches on the wire ---------------------------------------------------------------------------


def test_a_batch_validates_runs_and_completes_with_lines_keyed_by_custom_id(make_emulator, tmp_path):
    emulator = make_emulator(processing_seconds=100)
    provider = adapter(emulator)
    created = submit(provider, 40, tmp_path)
    assert (created.status, created.ended, created.tag) == ("VALIDATING", False, "bb-test")
    client = sdk(emulator)
    (listed,) = client.batches.list()  # a bare array
    assert (listed.id, listed.model_id, listed.progress) == (created.remote_id, MODEL, 0)
    assert (listed.job_deadline - listed.created_at).total_seconds() == 86400

    emulator.clock.advance(50)
    running = client.batches.retrieve(created.remote_id)
    assert running.status == "IN_PROGRESS" and 0 < running.progress < 100
    emulator.clock.advance(50)
    done = provider.poll([created.remote_id])[created.remote_id]
    assert (done.status, done.ended, done.error, done.error_file) == ("COMPLETED", True, None, None)
    ids = [o.custom_id for o in provider.outcomes(done)]
    assert sorted(ids) == sorted(f"c{i}" for i in range(40)) and ids != [f"c{i}" for i in range(40)]
    assert client.batches.retrieve(created.remote_id).progress == 100


def test_cancel_has_no_cancelling_status_and_keeps_what_already_ran(make_emulator, tmp_path):
    emulator = make_emulator(processing_seconds=100, cancel_seconds=30)
    provider = adapter(emulator)
    batch_id = submit(provider, 100, tmp_path).remote_id
    emulator.clock.advance(50)
    provider.cancel(batch_id)
    requested = sdk(emulator).batches.retrieve(batch_id)
    assert requested.status == "IN_PROGRESS"
    emulator.clock.advance(100)  # progress stays frozen meanwhile
    cancelled = provider.poll([batch_id])[batch_id]
    assert cancelled.status == "CANCELLED" and cancelled.leftover == "cancelled"
    assert sdk(emulator).batches.retrieve(batch_id).progress == requested.progress
    assert 0 < len(list(provider.outcomes(cancelled))) < 100
    provider.cancel(batch_id)  # an ended batch: Together refuses, the adapter shrugs


# -- failures --------------------------------------------------------------------------------------


def test_a_malformed_input_file_fails_the_whole_batch_with_its_reason(make_emulator, tmp_path):
    emulator = make_emulator(processing_seconds=10)
    provider = adapter(emulator)
    path = tmp_path / input_file_name("bb-broken")
    path.write_bytes(write_batch(provider, 2, tmp_path).read_bytes() + b'{"custom_id": "c0", "body": {}}\n')
    batch_id = provider.create(provider.upload(path), MODEL, "bb-broken").remote_id
    assert provider.poll([batch_id])[batch_id].status == "VALIDATING"
    emulator.clock.advance(1)
    failed = provider.poll([batch_id])[batch_id]
    assert (failed.status, failed.ended, failed.output_file, failed.leftover) == ("FAILED", True, None, "failed")
    assert failed.error == "Request 3: custom_id 'c0' is used more than once."


def test_an_error_line_with_a_bare_reason_is_a_failed_outcome():
    outcome = decode_result(b'{"custom_id": "bq-1", "error": "context length exceeded"}')
    assert (outcome.custom_id, outcome.status, outcome.error_code, outcome.error_message) == (
        "bq-1", "failed", "error", "context length exceeded")
    assert decode_result(b'{"error": "no custom_id"}') is None


def _status_error(status: int) -> together.APIStatusError:
    response = httpx.Response(status, request=httpx.Request("POST", "https://api.together.ai/v1/files"))
    return together.APIStatusError("Unexpected error raised by endpoint: no luck", response=response, body=None)


@pytest.mark.parametrize(("error", "expected"), [
    (_status_error(500), TransientError),  # files.upload re-raises a 500 as a plain APIStatusError
    (_status_error(429), TransientError),
    (httpx.ConnectError("refused"), TransientError),  # the PUT runs on the SDK's raw httpx client
    (_status_error(401), AccountError),  # a wrong key: the run stops, nothing becomes final
    (_status_error(400), ProviderError),
])
def test_upload_errors_become_transient_or_final_by_status(tmp_path, monkeypatch, error, expected):
    provider = TogetherBatch(api_key="k", base_url="http://127.0.0.1:9")  # never reached: upload is replaced

    def fail(**kwargs):
        raise error

    monkeypatch.setattr(provider.client.files, "upload", fail)
    with pytest.raises(expected, match="together upload") as raised:
        provider.upload(write_batch(provider, 1, tmp_path))
    assert ("TOGETHER_API_KEY" in str(raised.value)) == (getattr(error, "status_code", None) == 401)


# -- watching and recovery -------------------------------------------------------------------------


def test_poll_is_one_list_call(emulator, tmp_path, monkeypatch):
    provider = adapter(emulator)
    ids = [submit(provider, 2, tmp_path, tag=f"bb-{i}").remote_id for i in range(3)]

    def no_single_reads(*args, **kwargs):
        raise AssertionError("poll fetched a batch one by one")

    monkeypatch.setattr(provider.client.batches, "retrieve", no_single_reads)
    polled = provider.poll(ids)
    assert set(polled) == set(ids) and all(r.status == "COMPLETED" for r in polled.values())


def test_find_follows_the_input_file_name_to_the_tag(emulator, tmp_path):
    provider = adapter(emulator)
    mine = submit(provider, 2, tmp_path, tag="bb-mine")
    submit(provider, 2, tmp_path, tag="bb-other")
    provider.upload(write_batch(provider, 1, tmp_path, tag="bb-no-batch"))  # uploaded, never created
    found = provider.find({"bb-mine", "bb-no-batch", "bb-unknown"})
    assert list(found) == ["bb-mine"] and found["bb-mine"].remote_id == mine.remote_id
    assert found["bb-mine"].tag == "bb-mine"
    assert provider.find({"bb-unknown"}) == {}
