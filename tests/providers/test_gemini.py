"""Gemini batch mode through the real google-genai SDK, the adapter and the engine, against the
emulator: inline and uploaded-file batches, request translation, keys, thinking usage, expiry,
cancel, reconciliation, and the wire details the SDK depends on."""

from __future__ import annotations

import base64
import hashlib
import itertools

import httpx
import orjson
import pytest
from conftest import results, start_job
from google import genai
from google.genai import errors, types

from batchery.emulator import Emulator, ManualClock
from batchery.engine import prepare_job
from batchery.errors import InputError
from batchery.inputs import iter_objects
from batchery.providers import gemini
from batchery.providers.gemini import GeminiBatch, decode_line, generate_request

MODEL = "gemini-2.5-flash"
SCHEMA = {"type": "object", "properties": {"verdict": {"type": "string", "enum": ["pass", "fail"]}},
          "required": ["verdict"]}


def prompts(n: int) -> list[dict]:
    return [{"id": f"r{i}", "prompt": f"question number {i}"} for i in range(n)]


def adapter(emulator, cls: type[GeminiBatch] = GeminiBatch) -> GeminiBatch:
    return cls(api_key="test-key", base_url=emulator.base_url("gemini"))


def sdk(emulator, version: str | None = None) -> genai.Client:
    options = {"base_url": emulator.base_url("gemini"), **({"api_version": version} if version else {})}
    return genai.Client(api_key="test-key", vertexai=False, http_options=options)


def run(store, emulator, requests: list[dict], **kwargs):
    kwargs.setdefault("provider", adapter(emulator))
    return start_job(store, emulator, requests, model=MODEL, **kwargs).run()


@pytest.fixture(params=["inline", "file"])
def transport(request, monkeypatch) -> str:
    """Every behaviour holds for both ways of sending a batch: inline, or an uploaded JSONL file."""
    if request.param == "file":
        monkeypatch.setattr(gemini, "INLINE_MAX_BYTES", 0)
    return request.param


@pytest.fixture(scope="module")
def shared_emulator():
    """One server for the tests that need neither their own timing nor stats counted from zero."""
    with Emulator(clock=ManualClock()) as emulator:
        yield emulator


# -- requests out ----------------------------------------------------------------------------------


def test_neutral_fields_translate_to_generate_content_fields():
    request = {
        "model": MODEL, "system": "Be terse.",
        "messages": [{"role": "developer", "content": "Answer in French."}, {"role": "user", "content": "Hi"},
                     {"role": "assistant", "content": "Salut"}, {"role": "user", "content": "Again"}],
        "max_tokens": 50, "temperature": 0.3, "top_p": 0.9, "stop": ["END"], "response_format": SCHEMA,
        "reasoning": {"budget_tokens": 0},
    }
    assert generate_request(request) == {
        "systemInstruction": {"parts": [{"text": "Be terse."}, {"text": "Answer in French."}]},
        "contents": [{"role": "user", "parts": [{"text": "Hi"}]}, {"role": "model", "parts": [{"text": "Salut"}]},
                     {"role": "user", "parts": [{"text": "Again"}]}],
        "generationConfig": {"maxOutputTokens": 50, "temperature": 0.3, "topP": 0.9, "stopSequences": ["END"],
                             "responseMimeType": "application/json", "responseJsonSchema": SCHEMA,
                             "thinkingConfig": {"thinkingBudget": 0}},
    }


@pytest.mark.parametrize(("model", "thinking"), [
    ("gemini-2.5-flash", {"thinkingBudget": 8192}),  # 2.x models take budgets: Google's effort table
    ("gemini-3-flash-preview", {"thinkingLevel": "MEDIUM"}),
])
def test_reasoning_effort_becomes_a_level_or_the_documented_budget(model, thinking):
    request = {"model": model, "messages": [{"role": "user", "content": "x"}], "reasoning": {"effort": "medium"}}
    assert generate_request(request)["generationConfig"]["thinkingConfig"] == thinking


@pytest.mark.parametrize(("request_fields", "problem"), [
    ({"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]}, "only before the conversation"),
    ({"messages": [{"role": "system", "content": "b"}]}, "at least one user or assistant message"),
    ({"prompt": "a", "stop": ["1", "2", "3", "4", "5", "6"]}, "at most 5 stop sequences"),
    ({"prompt": ""}, "refuses empty text"),
])
def test_what_gemini_cannot_honour_is_refused_before_anything_is_sent(store, request_fields, problem):
    nowhere = GeminiBatch(api_key="k", base_url="http://127.0.0.1:9/gemini")  # any call would fail
    with pytest.raises(InputError, match=problem):
        prepare_job(store, "job", nowhere, MODEL, iter_objects([request_fields]), fingerprint="job")
    assert store.get_job("job") is None


# -- inline and file batches -----------------------------------------------------------------------


def test_small_batches_go_inline_and_larger_ones_as_uploaded_files(store, emulator, transport):
    final = run(store, emulator, prompts(30), batch_size=12)
    assert final.items == {"succeeded": 30}
    counts = emulator.stats()["by_provider"]["gemini"]
    assert counts["batches_created"] == 3
    assert counts["files_uploaded"] == (0 if transport == "inline" else 3)
    rows = results(store)
    assert [r.id for r in rows] == [f"r{i}" for i in range(30)]
    assert all(r.text == f"Emulated answer to: question number {i}" for i, r in enumerate(rows))
    assert rows[0].response["candidates"][0]["content"]["role"] == "model"
    assert rows[0].usage["input_tokens"] > 0 and rows[0].usage["output_tokens"] > 0


def test_system_instruction_turns_and_json_schema_reach_the_model(store, shared_emulator, transport):
    run(store, shared_emulator, [
        {"id": "chat", "system": "Be terse.", "messages": [
            {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Again"}]},
        {"id": "judge", "prompt": "Judge this.", "response_format": SCHEMA, "max_tokens": 40},
    ])
    chat, judge = results(store)
    assert chat.text == "Emulated answer to: Again"
    assert orjson.loads(judge.text)["verdict"] in ("pass", "fail")


def test_thinking_tokens_count_as_reasoning_inside_output_tokens(store, shared_emulator, transport):
    run(store, shared_emulator, [{"prompt": "think", "reasoning": {"budget_tokens": 50}}, {"prompt": "plain"}])
    thinking, plain = results(store)
    assert thinking.usage["reasoning_tokens"] == 50
    assert thinking.usage["output_tokens"] == plain.usage["output_tokens"] + 50
    assert plain.usage["reasoning_tokens"] is None


def test_a_request_gemini_rejects_fails_alone_with_its_status(store, shared_emulator, transport):
    class NoValidation(GeminiBatch):
        """Sends a temperature Gemini refuses (batchery's own validation would stop it earlier)."""

        def encode(self, custom_id, request):
            line = orjson.loads(super().encode(custom_id, request))
            if request["messages"][0]["content"] == "bad":
                line["request"]["generationConfig"] = {"temperature": 9}
            return orjson.dumps(line)

    run(store, shared_emulator, [{"prompt": "good"}, {"prompt": "bad"}], provider=adapter(shared_emulator, NoValidation))
    good, bad = results(store)
    assert good.status == "succeeded"
    assert bad.status == "failed" and bad.text is None
    assert bad.error["code"] == "INVALID_ARGUMENT" and "temperature" in bad.error["message"]


def test_results_are_matched_by_key_never_by_position():
    answer = {"candidates": [{"content": {"parts": [{"text": "yes"}]}, "finishReason": "STOP"}]}
    assert decode_line(orjson.dumps({"response": answer, "key": "bq-b"})).custom_id == "bq-b"
    assert decode_line(orjson.dumps({"response": answer})) is None  # no key: missing, not guessed
    failed = decode_line(orjson.dumps({"key": "bq-c", "error": {"code": 3, "message": "bad"}}))
    assert (failed.status, failed.error_code) == ("failed", "INVALID_ARGUMENT")
    inline = [types.InlinedResponse(response=types.GenerateContentResponse.model_validate(answer), metadata={"key": k})
              for k in ("bq-z", "bq-a")]
    assert [gemini._inline_outcome(item).custom_id for item in inline] == ["bq-z", "bq-a"]
    assert gemini._inline_outcome(types.InlinedResponse(response=inline[0].response)) is None


# -- lifecycle -------------------------------------------------------------------------------------


def test_poll_reads_every_state_from_the_list(shared_emulator, monkeypatch):
    provider = adapter(shared_emulator)
    job = provider.client.batches.create(model=MODEL, src=[{"contents": "x"}], config={"display_name": "t"})
    monkeypatch.setattr(provider.client.batches, "get", lambda **_: pytest.fail("poll fetched a batch one by one"))
    assert provider.poll([job.name])[job.name].status == "JOB_STATE_SUCCEEDED"


# -- the emulator as the SDK sees it -------------------------------------------------------------


def test_both_api_versions_serve_batches_with_paged_lists(shared_emulator):
    client = sdk(shared_emulator)  # held: a genai.Client closes its connections when collected
    names = [client.batches.create(model=MODEL, src=[{"contents": f"q{i}"}]).name for i in range(3)]
    old = sdk(shared_emulator, "v1beta")
    newest = itertools.islice(old.batches.list(config={"page_size": 2}), 3)  # pages of two
    assert [job.name for job in newest] == names[::-1]
    assert old.batches.get(name=names[0]).state == types.JobState.JOB_STATE_SUCCEEDED


def test_batch_operation_carries_state_stats_and_output_in_metadata(shared_emulator):
    client = sdk(shared_emulator)
    job = client.batches.create(model=MODEL, src=[{"contents": "q", "metadata": {"key": "k1"}}])
    assert job.state == types.JobState.JOB_STATE_PENDING
    raw = httpx.get(f"{shared_emulator.base_url('gemini')}/v1/{job.name}", headers={"x-goog-api-key": "k"}).json()
    meta = raw["metadata"]
    assert meta["state"] == "BATCH_STATE_SUCCEEDED" and raw["done"] is True
    assert meta["batchStats"] == {"requestCount": "1", "successfulRequestCount": "1"}
    assert meta["output"]["inlinedResponses"]["inlinedResponses"][0]["metadata"] == {"key": "k1"}
    listed = next(iter(client.batches.list()))
    assert listed.dest is None  # inline results only come with get
    assert client.batches.get(name=job.name).dest.inlined_responses[0].response.text == "Emulated answer to: q"


def test_uploads_resume_chunk_by_chunk_and_results_download_at_both_paths(shared_emulator, tmp_path):
    client = sdk(shared_emulator)
    line = orjson.dumps({"key": "k", "request": {"contents": [{"parts": [{"text": "x" * 1000}]}]}}) + b"\n"
    path = tmp_path / "big.jsonl"
    path.write_bytes(line * 9000)  # over the SDK's 8 MB chunk: two chunks, "active" then "final"
    uploaded = client.files.upload(file=path, config={"mime_type": "jsonl"})
    assert uploaded.size_bytes == path.stat().st_size
    assert uploaded.sha256_hash == base64.b64encode(hashlib.sha256(path.read_bytes()).digest()).decode()
    small = tmp_path / "small.jsonl"
    small.write_bytes(line)
    job = client.batches.create(model=MODEL, src=client.files.upload(file=small, config={"mime_type": "jsonl"}).name)
    result_file = client.batches.get(name=job.name).dest.file_name
    assert result_file == "files/batch-" + job.name.removeprefix("batches/")
    via_sdk = client.files.download(file=result_file)
    direct = httpx.get(f"{shared_emulator.base_url('gemini')}/download/v1/{result_file}:download?alt=media",
                       headers={"x-goog-api-key": "k"})
    assert direct.content == via_sdk and orjson.loads(via_sdk)["key"] == "k"
    with pytest.raises(errors.ClientError, match="Only generated files"):
        client.files.download(file=uploaded.name)


def test_errors_come_in_googles_envelope(shared_emulator):
    client = sdk(shared_emulator)
    with pytest.raises(errors.ClientError) as missing:
        client.batches.get(name="batches/nope")
    assert (missing.value.code, missing.value.status) == (404, "NOT_FOUND")
    job = client.batches.create(model=MODEL, src=[{"contents": "q"}])
    client.batches.get(name=job.name)  # ended
    with pytest.raises(errors.ClientError) as ended:
        client.batches.cancel(name=job.name)
    assert ended.value.status == "FAILED_PRECONDITION"
    adapter(shared_emulator).cancel(job.name)  # the adapter takes "already ended" in its stride
