"""The OpenAI Files + Batches emulator, exercised through the official ``openai`` SDK over HTTP.

Time is driven by ManualClock; nothing here sleeps.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import openai
import orjson
import pytest

from batchery.emulator import Emulator, ManualClock
from batchery.emulator.fake_model import complete_chat
from batchery.emulator.schema_values import generate

ENDPOINT = "/v1/chat/completions"

SCHEMA = {
    "type": "object",
    "properties": {
        "verdict": {"type": "string", "enum": ["pass", "fail", "unsure"]},
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "reason": {"type": "string", "minLength": 30},
        "flagged": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
        "note": {"type": ["string", "null"]},
        "choice": {"anyOf": [{"type": "integer", "minimum": 10}, {"type": "null"}]},
        "version": {"const": "v1"},
        "evidence": {"$ref": "#/$defs/evidence"},
    },
    "required": ["verdict", "score", "confidence", "reason", "flagged", "tags", "note", "choice", "version", "evidence"],
    "additionalProperties": False,
    "$defs": {
        "evidence": {
            "type": "object",
            "properties": {"quote": {"type": "string"}, "line": {"type": "integer", "minimum": 0}},
            "required": ["quote", "line"],
            "additionalProperties": False,
        }
    },
}


# -- helpers -----------------------------------------------------------------------------------


def conforms(value: object, schema: dict, root: dict | None = None) -> bool:
    """A tiny JSON Schema checker for the keywords the emulator promises to honour."""
    root = root if root is not None else schema
    if "$ref" in schema:
        node: object = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]  # type: ignore[index]
        return conforms(value, node, root)  # type: ignore[arg-type]
    if "const" in schema:
        return value == schema["const"]
    if "enum" in schema:
        return value in schema["enum"]
    if "anyOf" in schema:
        return any(conforms(value, s, root) for s in schema["anyOf"])
    kinds = schema.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    checks = {
        "object": lambda v: isinstance(v, dict)
        and all(k in v for k in schema.get("required", []))
        and all(conforms(v[k], s, root) for k, s in schema.get("properties", {}).items() if k in v)
        and (schema.get("additionalProperties", True) is not False or set(v) <= set(schema.get("properties", {}))),
        "array": lambda v: isinstance(v, list)
        and len(v) >= schema.get("minItems", 0)
        and all(conforms(x, schema.get("items", {}), root) for x in v),
        "string": lambda v: isinstance(v, str) and len(v) >= schema.get("minLength", 0),
        "integer": lambda v: type(v) is int and _in_bounds(v, schema),
        "number": lambda v: type(v) in (int, float) and _in_bounds(v, schema),
        "boolean": lambda v: isinstance(v, bool),
        "null": lambda v: v is None,
    }
    return any(checks[k](value) for k in kinds if k in checks)


def _in_bounds(v: float, schema: dict) -> bool:
    return schema.get("minimum", v) <= v <= schema.get("maximum", v)


def line(i: int, model: str = "gpt-test", **body: object) -> dict:
    return {
        "custom_id": f"req-{i}",
        "method": "POST",
        "url": ENDPOINT,
        "body": {"model": model, "messages": [{"role": "user", "content": f"question number {i}"}], **body},
    }


def upload(client: openai.OpenAI, lines: list[dict] | bytes, name: str = "input.jsonl") -> str:
    data = lines if isinstance(lines, bytes) else b"".join(orjson.dumps(x) + b"\n" for x in lines)
    return client.files.create(file=(name, data), purpose="batch").id


def create(client: openai.OpenAI, file_id: str, **extra: object) -> openai.types.Batch:
    return client.batches.create(input_file_id=file_id, endpoint=ENDPOINT, completion_window="24h", **extra)


def read_jsonl(client: openai.OpenAI, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    return [json.loads(x) for x in client.files.content(file_id).text.splitlines()]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def emu(clock: ManualClock) -> Iterator[Emulator]:
    with Emulator(clock=clock) as emulator:
        yield emulator


@pytest.fixture
def client(emu: Emulator) -> openai.OpenAI:
    return openai.OpenAI(base_url=emu.base_url("openai"), api_key="test", max_retries=0)


def slow_emulator(clock: ManualClock, **timing: float) -> tuple[Emulator, openai.OpenAI]:
    emulator = Emulator(clock=clock, **timing).start()
    return emulator, openai.OpenAI(base_url=emulator.base_url("openai"), api_key="test", max_retries=0)


# -- end to end ------------------------------------------------------------------------------------


def test_batch_completes_with_outputs_and_errors(emu: Emulator, client: openai.OpenAI) -> None:
    schema_format = {"type": "json_schema", "json_schema": {"name": "judge", "strict": True, "schema": SCHEMA}}
    lines = [line(i) for i in range(20)]
    lines += [line(i, response_format=schema_format) for i in range(20, 40)]
    lines += [line(40, temperature=3), line(41, messages=[]), line(42, top_p=-0.5), line(43, max_tokens=0)]
    lines += [line(44, messages=[{"role": "wizard", "content": "hi"}]), line(45, max_tokens=2)]
    file_id = upload(client, lines)

    batch = create(client, file_id, metadata={"job": "e2e"})
    assert batch.status == "validating" and batch.metadata == {"job": "e2e"}
    batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed"
    assert batch.request_counts.model_dump() == {"total": 46, "completed": 41, "failed": 5}
    assert batch.model == "gpt-test" and batch.usage is not None and batch.usage.total_tokens > 0
    assert batch.in_progress_at == batch.finalizing_at == batch.completed_at == batch.created_at

    outputs, errors = read_jsonl(client, batch.output_file_id), read_jsonl(client, batch.error_file_id)
    ids = [x["custom_id"] for x in outputs + errors]
    assert sorted(ids) == sorted(x["custom_id"] for x in lines) and len(set(ids)) == len(ids)
    assert [x["custom_id"] for x in outputs] != [x["custom_id"] for x in lines[: len(outputs)]], "order must not be input order"
    assert client.files.retrieve(batch.output_file_id).purpose == "batch_output"

    by_id = {x["custom_id"]: x for x in outputs}
    for out in outputs:
        assert out["id"].startswith("batch_req_") and out["error"] is None
        assert out["response"]["status_code"] == 200
        body = out["response"]["body"]
        assert body["object"] == "chat.completion" and body["usage"]["total_tokens"] >= 2
    assert by_id["req-3"]["response"]["body"]["choices"][0]["message"]["content"] == "Emulated answer to: question number 3"
    truncated = by_id["req-45"]["response"]["body"]
    assert truncated["choices"][0]["finish_reason"] == "length" and truncated["usage"]["completion_tokens"] == 2
    answers = [json.loads(by_id[f"req-{i}"]["response"]["body"]["choices"][0]["message"]["content"]) for i in range(20, 40)]
    for answer in answers:
        assert conforms(answer, SCHEMA), answer
    assert len({json.dumps(a, sort_keys=True) for a in answers}) > 1, "different requests should give different values"

    codes = {e["custom_id"]: e["response"]["body"]["error"]["code"] for e in errors}
    assert codes == {
        "req-40": "decimal_above_max_value",
        "req-41": "empty_array",
        "req-42": "decimal_below_min_value",
        "req-43": "integer_below_min_value",
        "req-44": "invalid_value",
    }
    assert all(e["response"]["status_code"] == 400 and e["error"] is None for e in errors)
    assert emu.stats()["requests_processed"] == 46


def test_no_error_file_when_everything_succeeds(client: openai.OpenAI) -> None:
    batch = client.batches.retrieve(create(client, upload(client, [line(i) for i in range(3)])).id)
    assert batch.status == "completed" and batch.error_file_id is None and batch.output_file_id


# -- lifecycle -------------------------------------------------------------------------------------


def test_lifecycle_follows_the_clock(clock: ManualClock) -> None:
    emulator, client = slow_emulator(clock, processing_seconds=100)
    with emulator:
        batch = create(client, upload(client, [line(i) for i in range(10)]))
        seen = []
        for step in (5, 10, 10, 30, 40, 5):  # t = 5, 15, 25, 55, 95, 100
            clock.advance(step)
            b = client.batches.retrieve(batch.id)
            seen.append((b.status, b.request_counts.total, b.request_counts.completed))
        assert seen == [
            ("validating", 0, 0),
            ("in_progress", 10, 0),
            ("in_progress", 10, 1),
            ("in_progress", 10, 5),
            ("finalizing", 10, 10),
            ("completed", 10, 10),
        ]
        created = b.created_at
        assert (b.in_progress_at, b.finalizing_at, b.completed_at) == (created + 10, created + 90, created + 100)
        assert b.expires_at == created + 86400
        assert len(read_jsonl(client, b.output_file_id)) == 10


def test_expiry_keeps_partial_output(clock: ManualClock) -> None:
    emulator, client = slow_emulator(clock, processing_seconds=100, completion_window_seconds=50)
    with emulator:
        lines = [line(i) for i in range(10)]
        batch = create(client, upload(client, lines))
        clock.advance(49)
        assert client.batches.retrieve(batch.id).status == "in_progress"
        clock.advance(500)
        b = client.batches.retrieve(batch.id)
        assert b.status == "expired" and b.expired_at == b.expires_at == b.created_at + 50
        assert b.completed_at is None and b.request_counts.completed == 5  # (50-10)/80 of the work
        outputs, errors = read_jsonl(client, b.output_file_id), read_jsonl(client, b.error_file_id)
        assert len(outputs) == 5 and len(errors) == 5
        assert {x["custom_id"] for x in outputs + errors} == {x["custom_id"] for x in lines}
        for e in errors:
            assert e["response"] is None and e["error"]["code"] == "batch_expired"
        assert emulator.stats()["requests_processed"] == 5


def test_cancel_keeps_partial_output_and_rejects_terminal(clock: ManualClock) -> None:
    emulator, client = slow_emulator(clock, processing_seconds=100, cancel_seconds=30)
    with emulator:
        batch = create(client, upload(client, [line(i) for i in range(8)]))
        clock.advance(50)  # half of the in-progress window: 4 of 8 done
        cancelling = client.batches.cancel(batch.id)
        assert cancelling.status == "cancelling" and cancelling.cancelling_at == batch.created_at + 50
        clock.advance(29)
        b = client.batches.retrieve(batch.id)
        assert b.status == "cancelling" and b.request_counts.completed == 4  # frozen at the cancel moment
        clock.advance(1)
        b = client.batches.retrieve(batch.id)
        assert b.status == "cancelled" and b.cancelled_at == batch.created_at + 80
        outputs, errors = read_jsonl(client, b.output_file_id), read_jsonl(client, b.error_file_id)
        assert len(outputs) == 4 and {e["error"]["code"] for e in errors} == {"batch_cancelled"} and len(errors) == 4

        retrying = client.with_options(max_retries=2)
        with pytest.raises(openai.ConflictError) as info:
            retrying.batches.cancel(batch.id)
        assert info.value.response.headers["x-should-retry"] == "false"
        assert info.value.response.request.headers["x-stainless-retry-count"] == "0", "the SDK must not retry"


def test_cancel_of_completed_batch_is_409(client: openai.OpenAI) -> None:
    batch = create(client, upload(client, [line(0)]))
    with pytest.raises(openai.ConflictError) as info:
        client.batches.cancel(batch.id)  # processing_seconds=0: already completed at this read
    assert "completed" in info.value.message


# -- listing ---------------------------------------------------------------------------------------


def test_list_pagination_yields_every_batch_once(client: openai.OpenAI) -> None:
    file_id = upload(client, [line(0)])
    created = [create(client, file_id).id for _ in range(103)]
    listed = [b.id for b in client.batches.list(limit=7)]
    assert listed == created[::-1]  # newest first, each exactly once
    first = client.batches.list(limit=100)
    assert len(first.data) == 100 and first.has_more is True and first.last_id == created[3]
    rest = client.batches.list(limit=100, after=first.last_id)
    assert [b.id for b in rest.data] == created[2::-1] and rest.has_more is False
    assert all(b.status == "completed" for b in client.batches.list(limit=3).data)


def test_files_retrieve_list_delete(client: openai.OpenAI) -> None:
    data = orjson.dumps(line(0)) + b"\n"
    created = client.files.create(file=("in.jsonl", data), purpose="batch", expires_after={"anchor": "created_at", "seconds": 3600})
    assert created.bytes == len(data) and created.filename == "in.jsonl" and created.status == "processed"
    assert created.expires_at == created.created_at + 3600
    assert client.files.retrieve(created.id).id == created.id
    assert client.files.content(created.id).content == data
    assert [f.id for f in client.files.list()] == [created.id]
    assert client.files.delete(created.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)


def test_deleting_the_input_file_does_not_break_a_running_batch(clock: ManualClock) -> None:
    emulator, client = slow_emulator(clock, processing_seconds=10)
    with emulator:
        file_id = upload(client, [line(i) for i in range(3)])
        batch = create(client, file_id)
        client.files.delete(file_id)
        clock.advance(10)
        assert len(read_jsonl(client, client.batches.retrieve(batch.id).output_file_id)) == 3


# -- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "code", "line_no"),
    [
        (orjson.dumps(line(0)) + b"\n{not json\n", "invalid_json_line", 2),
        (orjson.dumps(line(0)) + b"\n" + orjson.dumps(line(0)) + b"\n", "duplicate_custom_id", 2),
        (orjson.dumps(line(0)) + b"\n" + orjson.dumps(line(1, model="other")) + b"\n", "mismatched_model", 2),
        (orjson.dumps({**line(0), "method": "GET"}) + b"\n", "invalid_method", 1),
        (orjson.dumps({**line(0), "url": "/v1/embeddings"}) + b"\n", "mismatched_endpoint", 1),
    ],
)
def test_bad_input_file_fails_the_batch(client: openai.OpenAI, content: bytes, code: str, line_no: int) -> None:
    batch = create(client, upload(client, content))
    assert batch.status == "validating"  # like OpenAI: create succeeds, the failure shows on read
    batch = client.batches.retrieve(batch.id)
    assert batch.status == "failed" and batch.failed_at == batch.created_at
    assert batch.errors is not None and batch.errors.data
    assert (batch.errors.data[0].code, batch.errors.data[0].line) == (code, line_no)
    assert batch.output_file_id is None and batch.error_file_id is None and batch.in_progress_at is None
    assert batch.request_counts.total == 0


def test_too_many_lines_fails_the_batch(clock: ManualClock) -> None:
    with Emulator(clock=clock, max_batch_lines=3) as emulator:
        client = openai.OpenAI(base_url=emulator.base_url(), api_key="k", max_retries=0)
        batch = client.batches.retrieve(create(client, upload(client, [line(i) for i in range(4)])).id)
        assert batch.status == "failed" and batch.errors.data[0].code == "too_many_requests"


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"endpoint": "/v1/embeddings"}, "endpoint"),
        ({"completion_window": "48h"}, "completion_window"),
        ({"input_file_id": "file-missing"}, "input_file_id"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"k" * 65: "v"}}, "metadata"),
        ({"metadata": {"k": "v" * 513}}, "metadata"),
    ],
)
def test_create_rejects_bad_parameters(client: openai.OpenAI, changes: dict, param: str) -> None:
    args = {"input_file_id": upload(client, [line(0)]), "endpoint": ENDPOINT, "completion_window": "24h", **changes}
    with pytest.raises(openai.BadRequestError) as info:
        client.batches.create(**args)
    assert info.value.param == param and info.value.type == "invalid_request_error"


def test_create_rejects_input_with_wrong_purpose(client: openai.OpenAI) -> None:
    file_id = client.files.create(file=("x.jsonl", orjson.dumps(line(0))), purpose="user_data").id
    with pytest.raises(openai.BadRequestError):
        create(client, file_id)


def test_unknown_ids_are_404(client: openai.OpenAI) -> None:
    for call in (
        lambda: client.batches.retrieve("batch_nope"),
        lambda: client.batches.cancel("batch_nope"),
        lambda: client.files.retrieve("file-nope"),
        lambda: client.files.content("file-nope"),
        lambda: client.files.delete("file-nope"),
    ):
        with pytest.raises(openai.NotFoundError) as info:
            call()
        assert info.value.type == "invalid_request_error"


def test_requests_without_a_bearer_key_get_401(emu: Emulator) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(emu.base_url() + "/batches")
    assert info.value.code == 401
    assert json.loads(info.value.read())["error"]["type"] == "invalid_request_error"
    request = urllib.request.Request(emu.base_url() + "/batches", headers={"Authorization": "Bearer anything"})
    assert json.loads(urllib.request.urlopen(request).read())["has_more"] is False


# -- stats -----------------------------------------------------------------------------------------


def test_stats_count_uploads_batches_and_requests(emu: Emulator, client: openai.OpenAI) -> None:
    batch = create(client, upload(client, [line(i) for i in range(4)] + [line(9, temperature=5)]))
    create(client, upload(client, [line(i) for i in range(2)]))
    client.batches.retrieve(batch.id)
    client.batches.retrieve(batch.id)  # reading twice must not count twice
    stats = json.loads(urllib.request.urlopen(emu.url + "/_emulator/stats").read())
    assert (stats["batches_created"]["openai"], stats["files_uploaded"], stats["requests_processed"]) == (2, 2, 5)
    assert emu.stats()["requests_processed"] == 5


# -- the fake model on its own ---------------------------------------------------------------------


def test_fake_model_is_deterministic_and_honours_formats() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x" * 1000}]}
    first, again = complete_chat(body), complete_chat(dict(body))
    assert first == again and len(first["choices"][0]["message"]["content"]) < 240
    obj = complete_chat({**body, "response_format": {"type": "json_object"}})
    assert isinstance(json.loads(obj["choices"][0]["message"]["content"]), dict)
    capped = complete_chat({**body, "max_completion_tokens": 3})
    assert capped["choices"][0]["finish_reason"] == "length" and capped["usage"]["completion_tokens"] == 3


def test_schema_generator_covers_keywords() -> None:
    schema = {
        "type": "object",
        "properties": {
            "tree": {"$ref": "#/$defs/node"},
            "count": {"type": "integer", "exclusiveMinimum": 3, "exclusiveMaximum": 5},
            "ratio": {"type": "number", "minimum": 0.25, "maximum": 0.5},
            "label": {"type": "string", "maxLength": 4},
            "pick": {"oneOf": [{"type": "boolean"}, {"type": "string"}]},
        },
        "$defs": {"node": {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}},
    }
    values = [generate(schema, seed) for seed in range(50)]
    for v in values:
        assert v["count"] == 4 and 0.25 <= v["ratio"] <= 0.5 and len(v["label"]) <= 4
        assert isinstance(v["pick"], bool) and isinstance(v["tree"]["kids"], list)
        assert conforms(v, {k: s for k, s in schema.items() if k != "properties"} | {"properties": {k: s for k, s in schema["properties"].items() if k in ("ratio", "count")}})
    assert generate(schema, 7) == generate(schema, 7)
