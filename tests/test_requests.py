import re

import pytest

from batchery.errors import InputError
from batchery.requests import canonical_bytes, parse_request, request_key


def key_of(obj, model="m1", provider="openai"):
    _, _, canonical = parse_request(obj, model, "t:1")
    return request_key(provider, canonical_bytes(canonical))


def test_prompt_and_single_user_message_share_a_key():
    assert key_of({"prompt": "hi"}) == key_of({"messages": [{"role": "user", "content": "hi"}]})


def test_id_and_metadata_do_not_change_the_key():
    assert key_of({"prompt": "hi", "id": "a", "metadata": {"x": 1}}) == key_of({"prompt": "hi", "id": "b"})


def test_anything_that_changes_the_answer_changes_the_key():
    base = key_of({"prompt": "hi"})
    assert key_of({"prompt": "hi", "temperature": 0.5}) != base
    assert key_of({"prompt": "hi", "system": "be brief"}) != base
    assert key_of({"prompt": "hi"}, model="m2") != base
    assert key_of({"prompt": "hi"}, provider="anthropic") != base


def test_metadata_comes_back_as_the_json_stored_and_exported_with_its_keys_in_the_order_given():
    row_id, metadata, _ = parse_request({"prompt": "hi", "id": 3, "metadata": {"b": [1], "a": "é"}}, "m1", "t:1")
    assert (row_id, metadata) == (3, '{"b":[1],"a":"é"}'.encode())  # written once, when checked
    assert parse_request({"prompt": "hi"}, "m1", "t:1")[1] is None


def test_keys_stay_what_earlier_versions_made_so_stored_answers_are_still_found():
    # Stores keep answers under these keys (reuse across jobs, the drop-in client): however the
    # hash is computed, the same request must give the same key as before (values from 23b1611).
    obj = {"prompt": "Name a colour.", "max_tokens": 9, "temperature": 0.5, "id": 7}
    assert key_of(obj, "gpt-4o-mini") == "bq-7b7d6cd1e7133796ef77c470d908d438"
    assert key_of(obj, "gpt-4o-mini", "anthropic") == "bq-393e28ddccfa858af1ab1812739e699f"
    assert key_of(obj, "gpt-4o-mini", "a-provider-name-longer-than-16") == "bq-5eee48f08f5a8adaa5694136f0794ccc"


def test_key_is_a_valid_custom_id_for_every_provider():
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", key_of({"prompt": "hi"}))


@pytest.mark.parametrize(
    "obj, message",
    [
        ({}, "needs 'messages' or 'prompt'"),
        ({"prompt": 3}, "'prompt' must be a string"),
        ({"prompt": "x", "messages": [{"role": "user", "content": "y"}]}, "not both"),
        ({"messages": []}, "non-empty list"),
        ({"messages": [{"role": "robot", "content": "y"}]}, "messages[0].role"),
        ({"prompt": "x", "temperature": 3}, "'temperature' must be between 0 and 2"),
        ({"prompt": "x", "temperature": "hot"}, "'temperature' must be a number"),
        ({"prompt": "x", "max_tokens": 0}, "'max_tokens' must be a positive integer"),
        ({"prompt": "x", "stop": [1]}, "'stop'"),
        ({"prompt": "x", "tempreature": 1}, "unknown field(s) ['tempreature']"),
        ([1, 2], "expected a JSON object"),
        ({"prompt": "x", "id": True}, "'id' must be a string or an integer, got bool"),
        ({"prompt": "x", "model": []}, "'model' must be a model name"),  # not a silent fall back to --model
        ({"prompt": "x", "model": {}}, "'model' must be a model name"),
        ({"prompt": "x", "model": ""}, "'model' must be a model name"),
        ({"prompt": "x", "max_tokens": 2**70}, "'max_tokens' must be a positive integer (at most"),
        ({"prompt": "x", "reasoning": {"budget_tokens": 2**64}}, "budget_tokens must be a non-negative integer"),
        ({"prompt": "x", "metadata": {"n": 2**70}}, "field 'metadata' cannot be written as JSON"),
    ],
)
def test_bad_requests_name_the_place_and_the_field(obj, message):
    with pytest.raises(InputError) as err:
        parse_request(obj, "m1", "reqs.jsonl:7")
    assert str(err.value).startswith("reqs.jsonl:7: ")
    assert message in str(err.value)


def test_missing_model_is_an_input_error():
    with pytest.raises(InputError, match="no model"):
        parse_request({"prompt": "x"}, None, "f:1")


def test_a_request_python_cannot_write_as_json_is_an_input_error_naming_it():
    _, _, canonical = parse_request({"prompt": "x", "response_format": {"maximum": 2**70}}, "m1", "request[3]")
    with pytest.raises(InputError, match=r"^request\[3\]: the request cannot be written as JSON"):
        canonical_bytes(canonical, "request[3]")
