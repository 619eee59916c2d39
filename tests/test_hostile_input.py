"""Hostile input never produces a traceback or half-written state: arbitrary bytes, invalid UTF-8,
deep JSON and wrong types in request files give an InputError naming the line; arbitrary bytes
from a provider decode to an outcome or to nothing (the line then counts as missing)."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchery.engine import prepare_job
from batchery.errors import InputError
from batchery.inputs import read_requests
from batchery.limits import BatchLimits
from batchery.providers import anthropic, gemini, mistral, openai, together
from batchery.providers.base import Outcome
from batchery.providers.openai import OpenAIBatch
from batchery.store import Store

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
request_like = st.fixed_dictionaries(
    {}, optional={"prompt": json_values, "messages": json_values, "model": json_values, "temperature": json_values,
                  "max_tokens": json_values, "stop": json_values, "system": json_values, "id": json_values,
                  "response_format": json_values, "reasoning": json_values})
lines = st.one_of(
    st.binary(max_size=200),
    json_values.map(orjson.dumps),
    request_like.map(orjson.dumps),
    st.integers(1, 3000).map(lambda depth: b"[" * depth + b"]" * depth),  # deep nesting
    st.just(b'{"prompt": "\xff\xfe"}'),  # invalid UTF-8
)


def ingest(tmp_path, content: bytes):
    path = tmp_path / "requests.jsonl"
    path.write_bytes(content)
    with Store(tmp_path / "store") as store:
        name = f"job-{hash(content) & 0xFFFFFF}"
        try:
            job, _ = prepare_job(store, name, OpenAIBatch(api_key="k", base_url="http://127.0.0.1:9/v1"),
                                 "gpt-test", read_requests(path), name, source_name=str(path))
        except InputError as exc:
            assert store.get_job(name) is None, "a rejected input must leave nothing behind"
            return exc
        return job


@settings(SETTINGS, max_examples=60)
@given(st.lists(lines, min_size=1, max_size=5))
def test_request_files_of_arbitrary_content_are_stored_whole_or_rejected_with_the_line(tmp_path, content):
    result = ingest(tmp_path, b"\n".join(content) + b"\n")
    if isinstance(result, InputError):
        assert "requests.jsonl" in str(result)


def test_a_huge_line_is_rejected_naming_its_line(tmp_path, monkeypatch):
    monkeypatch.setattr(OpenAIBatch, "limits", BatchLimits(max_requests=10, max_bytes=1 << 20, discount=0.5, window="24h"))
    huge = orjson.dumps({"prompt": "x" * (2 << 20)})
    result = ingest(tmp_path, b'{"prompt": "fine"}\n' + huge + b"\n")
    assert isinstance(result, InputError) and "requests.jsonl:2" in str(result) and "over openai's" in str(result)


@pytest.mark.parametrize("decode", [openai.decode_line, anthropic.decode_line, gemini.decode_line,
                                    mistral.decode_line, together.decode_result])
@SETTINGS
@given(line=st.one_of(st.binary(max_size=300), json_values.map(orjson.dumps),
                      st.dictionaries(st.sampled_from(["custom_id", "key", "response", "result", "error", "body"]),
                                      json_values, max_size=4).map(orjson.dumps)))
def test_provider_result_lines_decode_to_an_outcome_or_nothing(decode, line):
    outcome = decode(line)
    assert outcome is None or isinstance(outcome, Outcome)
