"""Groq batches through the official ``groq`` SDK, the adapter (OpenAI's, on Groq's client) and the
engine, against the emulator's second OpenAI-compatible service under ``/groq/openai/v1``."""

from __future__ import annotations

import groq
import orjson
import pytest
from conftest import start_job

from batchery.errors import ProviderError
from batchery.providers import get_provider
from batchery.providers.groq import GroqBatch
from batchery.providers.openai import TAG_KEY

MODEL = "llama-3.1-8b-instant"
SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}


def adapter(emulator) -> GroqBatch:
    return GroqBatch(api_key="test-key", base_url=emulator.base_url("groq"))


def sdk(emulator) -> groq.Groq:
    return groq.Groq(api_key="test-key", base_url=emulator.base_url("groq"), max_retries=0)


def prompts(n: int) -> list[dict]:
    return [{"id": f"r{i}", "prompt": f"question number {i}"} for i in range(n)]


def run_job(store, emulator, requests, *, provider=None, **options):
    return start_job(store, emulator, requests, model=MODEL, provider=provider or adapter(emulator), **options)


def upload(provider: GroqBatch, n: int, tmp_path, name: str = "in") -> str:
    path = tmp_path / f"{name}.jsonl"
    path.write_bytes(b"".join(provider.encode(f"c{i}", {"model": MODEL, "messages": [
        {"role": "user", "content": f"q{i}"}]}) + b"\n" for i in range(n)))
    return provider.upload(path)


# -- requests out ----------------------------------------------------------------------------------


def test_lines_are_openai_chat_lines_with_every_neutral_field():
    request = {"model": MODEL, "system": "Be brief.", "max_tokens": 50, "temperature": 0.5, "top_p": 0.9,
               "stop": ["END"], "response_format": SCHEMA, "reasoning": {"effort": "medium"},
               "messages": [{"role": "developer", "content": "Use French."}, {"role": "user", "content": "Hi"}]}
    line = orjson.loads(GroqBatch(api_key="k").encode("bq-1", request))
    assert line == {"custom_id": "bq-1", "method": "POST", "url": "/v1/chat/completions", "body": {
        "model": MODEL,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "developer", "content": "Use French."},
                     {"role": "user", "content": "Hi"}],
        "max_completion_tokens": 50, "temperature": 0.5, "top_p": 0.9, "stop": ["END"], "reasoning_effort": "medium",
        "response_format": {"type": "json_schema", "json_schema": {"name": "response", "schema": SCHEMA}},
    }}


def test_the_registry_builds_groq_from_groq_api_key(monkeypatch, emulator):
    monkeypatch.setenv("GROQ_API_KEY", "from-env")
    monkeypatch.setenv("GROQ_BASE_URL", emulator.base_url("groq"))
    provider = get_provider("groq")
    assert isinstance(provider, GroqBatch) and provider.client.api_key == "from-env"
    assert str(provider.client.base_url) == emulator.base_url("groq") + "/"


# -- the wire --------------------------------------------------------------------------------------


def test_groq_has_its_own_files_and_batches_under_openai_v1(emulator, tmp_path):
    provider = adapter(emulator)
    remote = provider.create(upload(provider, 3, tmp_path), MODEL, "bb-wire")
    assert (remote.tag, remote.status, remote.ended) == ("bb-wire", "validating", False)
    batch = sdk(emulator).batches.retrieve(remote.remote_id)
    assert batch.metadata == {TAG_KEY: "bb-wire"} and batch.request_counts.completed == 3
    by_provider = emulator.stats()["by_provider"]
    assert by_provider["groq"]["batches_created"] == 1 and by_provider["openai"]["batches_created"] == 0
    with pytest.raises(ProviderError, match=r"groq create refused \(400\)"):
        provider.create("file-unknown", MODEL, "bb-x")


def test_completion_windows_run_from_24h_to_7d(emulator, tmp_path):
    client = sdk(emulator)
    file_id = upload(adapter(emulator), 1, tmp_path)
    for window in ("24h", "72h", "7d"):
        created = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                        completion_window=window)
        assert created.completion_window == window
    for window in ("12h", "8d"):
        with pytest.raises(groq.BadRequestError, match="completion_window"):
            client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window=window)


def test_poll_reads_the_list_and_fetches_only_what_it_does_not_show(emulator, tmp_path, monkeypatch):
    provider = adapter(emulator)
    file_id = upload(provider, 1, tmp_path)
    ids = [provider.create(file_id, MODEL, f"bb-{i}").remote_id for i in range(22)]
    assert len(sdk(emulator).batches.list().data) == 20  # the list without paging parameters: newest 20
    fetched: list[str] = []
    retrieve = provider.client.batches.retrieve
    monkeypatch.setattr(provider.client.batches, "retrieve", lambda i: fetched.append(i) or retrieve(i))
    polled = provider.poll([ids[0], ids[-1]])
    assert fetched == [ids[0]] and all(polled[i].status == "completed" for i in (ids[0], ids[-1]))


# -- lifecycle through the engine ------------------------------------------------------------------
