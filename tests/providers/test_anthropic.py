"""Anthropic Message Batches: the adapter, the official ``anthropic`` SDK and the emulator together.

Time is driven by ManualClock; nothing here sleeps.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from datetime import timedelta

import anthropic
import orjson
import pytest
from conftest import results, start_job

from batchery.errors import InputError, TransientError
from batchery.providers.anthropic import AnthropicBatch, decode_line, message_params
from batchery.store import Store

MODEL = "claude-haiku-4-5"
SCHEMA = {
    "type": "object",
    "properties": {"verdict": {"type": "string", "enum": ["yes", "no"]},
                   "score": {"type": "integer", "minimum": 1, "maximum": 5}},
    "required": ["verdict", "score"],
    "additionalProperties": False,
}


def adapter(emulator, cls=AnthropicBatch) -> AnthropicBatch:
    return cls(api_key="test-key", base_url=emulator.base_url("anthropic"))


def sdk(emulator) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="test-key", base_url=emulator.base_url("anthropic"), max_retries=0)


def prompts(n: int) -> list[dict]:
    return [{"id": f"r{i}", "prompt": f"question number {i}"} for i in range(n)]


def job(store, emulator, requests, **kw):
    return start_job(store, emulator, requests, model=MODEL, provider=kw.pop("provider", None) or adapter(emulator), **kw)


def batch_requests(n: int, model: str = MODEL) -> list[dict]:
    return [{"custom_id": f"c{i}", "params": {"model": model, "max_tokens": 100,
                                               "messages": [{"role": "user", "content": f"q{i}"}]}}
            for i in range(n)]


def created(emulator) -> int:
    return emulator.stats()["batches_created"]["anthropic"]


# -- translation -------------------------------------------------------------------------------


def test_neutral_fields_become_native_message_params():
    params = message_params({
        "model": MODEL, "system": "Be terse.",
        "messages": [{"role": "developer", "content": "Answer in French."}, {"role": "user", "content": "Hi"}],
        "max_tokens": 3000, "temperature": 0.2, "top_p": 0.9, "stop": ["END"], "response_format": SCHEMA,
        "reasoning": {"budget_tokens": 2048},
    })
    assert params == {
        "model": MODEL, "max_tokens": 3000, "messages": [{"role": "user", "content": "Hi"}],
        "system": "Be terse.\n\nAnswer in French.", "stop_sequences": ["END"], "temperature": 0.2, "top_p": 0.9,
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "output_config": {"format": {"type": "json_schema", "schema": SCHEMA}},
    }


def test_max_tokens_defaults_leave_room_for_thinking_and_effort_maps_to_output_config():
    plain = message_params({"model": MODEL, "messages": [{"role": "user", "content": "x"}]})
    thinking = message_params({"model": MODEL, "messages": [{"role": "user", "content": "x"}],
                               "reasoning": {"budget_tokens": 2000}})
    off = message_params({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "reasoning": {"budget_tokens": 0}})
    effort = message_params({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "reasoning": {"effort": "high"}})
    assert plain["max_tokens"] == 4096 and "system" not in plain
    assert thinking["max_tokens"] == 6096
    assert off["thinking"] == {"type": "disabled"}
    assert effort["output_config"] == {"effort": "high"} and "thinking" not in effort


@pytest.mark.parametrize("request_, reason", [
    ({"temperature": 1.5}, "between 0 and 1"),
    ({"reasoning": {"budget_tokens": 500}}, "at least 1024"),
    ({"reasoning": {"budget_tokens": 2000}, "max_tokens": 2000}, "max_tokens must exceed"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]}, "before the conversation"),
    ({"messages": [{"role": "system", "content": "only instructions"}]}, "at least one user"),
])
def test_check_rejects_what_anthropic_cannot_honour(request_, reason):
    request = {"model": MODEL, "messages": [{"role": "user", "content": "q"}], **request_}
    assert reason in AnthropicBatch(api_key="k").check(request)


def test_a_request_anthropic_cannot_honour_stops_the_job_before_anything_is_sent(store, emulator):
    with pytest.raises(InputError, match=r"request\[1\]: anthropic takes temperature between 0 and 1"):
        job(store, emulator, [{"prompt": "fine"}, {"prompt": "too hot", "temperature": 1.7}])
    assert created(emulator) == 0


# -- a job end to end --------------------------------------------------------------------------


def test_job_results_are_native_messages_normalised(store, emulator):
    requests = prompts(30) + [
        {"id": "system", "system": "You are terse.", "messages": [{"role": "user", "content": "Say hi."}]},
        {"id": "schema", "prompt": "Judge this.", "response_format": SCHEMA},
        {"id": "thinks", "prompt": "Think first.", "reasoning": {"budget_tokens": 1024}},
    ]
    assert job(store, emulator, requests, batch_size=12).run().items == {"succeeded": 33}
    rows = {r.id: r for r in results(store)}
    assert [r.id for r in results(store)] == [r["id"] for r in requests]
    assert rows["r7"].text == "Emulated answer to: question number 7"
    assert rows["r7"].response["type"] == "message" and rows["r7"].response["usage"]["service_tier"] == "batch"
    assert rows["system"].text == "Emulated answer to: Say hi."
    assert orjson.loads(rows["schema"].text)["verdict"] in ("yes", "no")
    thinks = rows["thinks"]
    assert thinks.text == "Emulated answer to: Think first."  # the thinking block is not part of the text
    assert thinks.usage["reasoning_tokens"] == 32 < thinks.usage["output_tokens"]
    assert created(emulator) == 3


def test_usage_counts_cached_tokens_as_part_of_the_input():
    line = orjson.dumps({"custom_id": "c", "result": {"type": "succeeded", "message": {
        "content": [{"type": "thinking", "thinking": "hm", "signature": "s"}, {"type": "text", "text": "A"},
                    {"type": "text", "text": "B"}],
        "usage": {"input_tokens": 10, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5,
                  "output_tokens": 40, "output_tokens_details": {"thinking_tokens": 30}}}}})
    outcome = decode_line(line)
    assert (outcome.text, outcome.input_tokens, outcome.cached_tokens, outcome.output_tokens, outcome.reasoning_tokens) \
        == ("AB", 115, 100, 40, 30)


def test_errored_lines_fail_with_anthropics_error_type_and_message(store, emulator):
    job(store, emulator, [{"id": "ok", "prompt": "a"}, {"id": "gone", "prompt": "b", "model": "missing-claude"}]).run()
    ok, gone = results(store)
    assert ok.status == "succeeded"
    assert gone.status == "failed" and gone.text is None
    assert gone.error == {"code": "not_found_error", "message": "model: missing-claude"}


def test_params_the_api_refuses_come_back_as_errored_results(emulator):
    client = sdk(emulator)
    bad = batch_requests(3)
    del bad[1]["params"]["max_tokens"]
    bad[2]["params"]["top_k_typo"] = 5
    batch = client.messages.batches.create(requests=bad)
    results_ = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
    assert results_["c0"].type == "succeeded"
    assert results_["c1"].type == "errored" and results_["c1"].error.error.type == "invalid_request_error"
    assert "Extra inputs" in results_["c2"].error.error.message


# -- the wire ----------------------------------------------------------------------------------


def test_lifecycle_counts_timestamps_and_results_url_follow_the_api(make_emulator):
    emulator = make_emulator(processing_seconds=100)
    client = sdk(emulator)
    batch = client.messages.batches.create(requests=batch_requests(4))
    assert batch.processing_status == "in_progress" and batch.results_url is None and batch.ended_at is None
    assert batch.request_counts.processing == 4 and batch.expires_at - batch.created_at == timedelta(hours=24)
    emulator.clock.advance(60)  # requests have run, but counters wait for the end of the batch
    mid = client.messages.batches.retrieve(batch.id)
    assert (mid.request_counts.processing, mid.request_counts.succeeded) == (4, 0)
    with pytest.raises(anthropic.AnthropicError, match="No `results_url`"):
        client.messages.batches.results(batch.id)
    emulator.clock.advance(40)
    done = client.messages.batches.retrieve(batch.id)
    assert done.processing_status == "ended" and done.request_counts.succeeded == 4
    assert done.ended_at == done.created_at + timedelta(seconds=100)
    assert done.results_url == f"{emulator.base_url('anthropic')}/v1/messages/batches/{batch.id}/results"
    raw = urllib.request.urlopen(urllib.request.Request(
        f"{emulator.base_url('anthropic')}/v1/messages/batches/{batch.id}", headers={"x-api-key": "k"})).read()
    assert orjson.loads(raw)["created_at"].endswith("Z")  # RFC 3339 on the wire


def test_results_are_not_in_input_order_and_have_no_blank_lines(emulator):
    client = sdk(emulator)
    batch = client.messages.batches.create(requests=batch_requests(20))
    client.messages.batches.retrieve(batch.id)
    with client.messages.batches.with_streaming_response.results(batch.id) as response:
        body = response.read()
    ids = [orjson.loads(line)["custom_id"] for line in body.splitlines()]
    assert sorted(ids) == sorted(f"c{i}" for i in range(20)) and ids != [f"c{i}" for i in range(20)]
    assert b"\n\n" not in body and body.endswith(b"\n")


def test_both_key_header_styles_are_accepted_and_a_missing_key_is_refused(emulator):
    url = f"{emulator.base_url('anthropic')}/v1/messages/batches"
    for headers in ({"x-api-key": "k", "anthropic-version": "2023-06-01"},
                    {"Authorization": "Bearer k", "anthropic-version": "2026-10-21"}):
        page = urllib.request.urlopen(urllib.request.Request(url + "?beta=true", headers=headers)).read()
        assert orjson.loads(page)["data"] == []
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url)
    assert refused.value.code == 401


def test_list_pages_newest_first_in_both_directions(emulator):
    client = sdk(emulator)
    ids = [client.messages.batches.create(requests=batch_requests(1)).id for _ in range(25)]
    assert [b.id for b in client.messages.batches.list(limit=10)] == ids[::-1]  # auto-paginates with after_id
    page = client.messages.batches.list(limit=5, before_id=ids[10])
    assert [b.id for b in page.data] == ids[15:10:-1] and page.has_more


def test_batch_level_problems_fail_the_create_call_in_anthropics_envelope(make_emulator):
    emulator = make_emulator(max_batch_lines=3)
    client = sdk(emulator)
    cases = [[], batch_requests(4), [*batch_requests(1), *batch_requests(1)],
             [{"custom_id": "bad id!", "params": batch_requests(1)[0]["params"]}]]
    for requests in cases:
        with pytest.raises(anthropic.BadRequestError) as refused:
            client.messages.batches.create(requests=requests)
        assert refused.value.body["type"] == "error"
        assert refused.value.body["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve("msgbatch_nope")
    assert created(emulator) == 0


def test_delete_only_once_ended(make_emulator):
    emulator = make_emulator(processing_seconds=10)
    client = sdk(emulator)
    batch = client.messages.batches.create(requests=batch_requests(2))
    with pytest.raises(anthropic.BadRequestError):
        client.messages.batches.delete(batch.id)
    emulator.clock.advance(10)
    assert client.messages.batches.delete(batch.id).type == "message_batch_deleted"
    assert client.messages.batches.list().data == []


def test_polling_a_jobs_batches_is_one_list_call(make_emulator):
    emulator = make_emulator(processing_seconds=100)
    provider = adapter(emulator)
    ids = [sdk(emulator).messages.batches.create(requests=batch_requests(2)).id for _ in range(3)]
    calls = []
    provider.client._client.event_hooks["request"].append(lambda request: calls.append(request.url.path))
    states = provider.poll(ids)
    assert calls == ["/anthropic/v1/messages/batches"]
    assert {s.status for s in states.values()} == {"in_progress"} and states[ids[0]].total == 2


# -- cancel and expiry -------------------------------------------------------------------------


def test_cancel_keeps_finished_lines_and_the_rest_come_back_canceled(store, make_emulator):
    emulator = make_emulator(processing_seconds=100, cancel_seconds=30)
    engine = job(store, emulator, prompts(100))
    engine.run(wait=False)
    emulator.clock.advance(50)
    remote_id = store.batches(store.get_job("job").id)[0].remote_id
    engine.provider.cancel(remote_id)
    canceling = sdk(emulator).messages.batches.retrieve(remote_id)
    assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at is not None
    final = engine.cancel()
    assert final.items == {"succeeded": 50, "cancelled": 50}
    rows = results(store)
    assert all(r.text for r in rows if r.status == "succeeded")
    assert {r.error["code"] for r in rows if r.status == "cancelled"} == {"batch_cancelled"}
    assert engine.provider.poll([remote_id])[remote_id].total == 100
    engine.provider.cancel(remote_id)  # cancelling an ended batch is not an error for the engine


def test_expiry_ends_the_batch_with_partial_results_and_expired_lines(store, make_emulator):
    emulator = make_emulator(processing_seconds=200, completion_window_seconds=100)
    final = job(store, emulator, prompts(40), max_attempts=1).run()
    assert final.items == {"succeeded": 20, "expired": 20}
    expired = [r for r in results(store) if r.status == "expired"]
    assert {r.error["code"] for r in expired} == {"batch_expired"}
    batch = sdk(emulator).messages.batches.list().data[0]
    assert (batch.processing_status, batch.request_counts.expired, batch.request_counts.succeeded) == ("ended", 20, 20)


def test_archived_results_end_every_line_missing_with_the_reason(store, make_emulator):
    emulator = make_emulator(processing_seconds=10)
    engine = job(store, emulator, prompts(5), max_attempts=1)
    engine.run(wait=False)
    emulator.clock.advance(30 * 86400)
    final = engine.run()
    assert final.items == {"missing": 5}
    assert {r.error["code"] for r in results(store)} == {"results_archived"}


# -- a lost create response --------------------------------------------------------------------


def test_a_batch_created_just_before_the_process_died_is_adopted_not_created_again(tmp_path, emulator):
    class DiesAfterCreate(AnthropicBatch):
        def create(self, input_file, model, tag):
            super().create(input_file, model, tag)
            raise KeyboardInterrupt("process killed after Anthropic created the batch")

    with Store(tmp_path / "s") as store, pytest.raises(KeyboardInterrupt):
        job(store, emulator, prompts(100), batch_size=40, provider=adapter(emulator, DiesAfterCreate)).run()
    assert created(emulator) == 1

    with Store(tmp_path / "s") as store:  # the next run: a fresh process, same store
        final = job(store, emulator, prompts(100), batch_size=40).run()
        assert final.items == {"succeeded": 100}
        assert [r.id for r in results(store)] == [f"r{i}" for i in range(100)]
    assert created(emulator) == 3  # 40 + 40 + 20: the first adopted, not sent twice


def test_a_lost_create_response_is_reconciled_in_the_same_process(store, emulator):
    class LosesFirstResponse(AnthropicBatch):
        lost = False

        def create(self, input_file, model, tag):
            remote = super().create(input_file, model, tag)
            if not LosesFirstResponse.lost:
                LosesFirstResponse.lost = True
                raise TransientError("anthropic create: APIConnectionError: connection reset")
            return remote

    final = job(store, emulator, prompts(30), batch_size=10, provider=adapter(emulator, LosesFirstResponse)).run()
    assert final.items == {"succeeded": 30}
    assert created(emulator) == 3


def test_a_create_that_never_reached_anthropic_is_sent_and_older_batches_of_the_same_size_are_left_alone(tmp_path, emulator):
    class DiesBeforeSecondCreate(AnthropicBatch):
        calls = 0

        def create(self, input_file, model, tag):
            DiesBeforeSecondCreate.calls += 1
            if DiesBeforeSecondCreate.calls == 2:
                raise KeyboardInterrupt("process killed before the second create was sent")
            return super().create(input_file, model, tag)

    with Store(tmp_path / "s") as store, pytest.raises(KeyboardInterrupt):
        job(store, emulator, prompts(80), batch_size=40, provider=adapter(emulator, DiesBeforeSecondCreate)).run()
    assert created(emulator) == 1  # the first batch (40 requests) exists; the second was never sent

    with Store(tmp_path / "s") as store:
        assert job(store, emulator, prompts(80), batch_size=40).run().items == {"succeeded": 80}
    assert created(emulator) == 2  # the first batch, the same size but older than the mark, was not adopted


def test_an_ended_batch_of_the_same_size_is_adopted_only_if_it_answered_our_requests(tmp_path, emulator):
    provider = adapter(emulator)
    path = tmp_path / "bb-1.jsonl"
    path.write_bytes(b"".join(provider.encode(f"ours-{i}", {"model": MODEL, "messages": [
        {"role": "user", "content": str(i)}]}) + b"\n" for i in range(2)))
    reference = provider.upload(path)
    strangers = sdk(emulator).messages.batches.create(requests=batch_requests(2))  # someone else's, same size
    sdk(emulator).messages.batches.retrieve(strangers.id)  # it ends
    fresh = AnthropicBatch(api_key="k", base_url=emulator.base_url("anthropic"))  # a new process
    remote = fresh.create(reference, MODEL, "bb-1")
    assert remote.remote_id != strangers.id and created(emulator) == 2
    assert fresh.create(reference, MODEL, "bb-1").remote_id == remote.remote_id  # and ours is found again
    assert created(emulator) == 2
