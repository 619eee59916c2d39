"""The enqueued-token budget: a model's open batches are kept under the tokens the provider lets an
organisation have enqueued; later batches wait for earlier ones to finish, and a limit the provider
reports in its token_limit_exceeded error lowers the budget."""

from __future__ import annotations

import re

import orjson
from conftest import start_job

from batchery import tokens
from batchery.limits import reported_enqueued_limit, tokens_text

# Six requests of about 190 emulated prompt tokens each, two per batch: one batch (about 380
# tokens) fits a 500-token pool, two do not.
REQUESTS = [{"prompt": f"{i} " + "word " * 150} for i in range(6)]


def _emulator(make_emulator, faults: str):
    return make_emulator(processing_seconds=20, faults=faults)


def _done(store, engine) -> dict:
    return store.counts(engine.job.id)


def test_batches_wait_for_the_enqueued_token_budget_and_never_pass_the_providers_cap(store, make_emulator,
                                                                                     monkeypatch):
    counted: list[str] = []
    real_counter = tokens.counter

    def counting(provider: str, model: str):  # the real counter, watched
        count, method = real_counter(provider, model)
        return (lambda text: counted.append(text) or count(text)), method

    monkeypatch.setattr(tokens, "counter", counting)
    emulator = _emulator(make_emulator, "enqueued_tokens=500")
    engine = start_job(store, emulator, REQUESTS, batch_size=2)
    engine.max_enqueued_tokens = 500
    seen: list = []
    engine.on_progress = seen.append
    engine.run()
    assert _done(store, engine) == {"succeeded": 6}
    stats = emulator.stats()
    assert stats.get("faults", {}).get("enqueued_tokens", 0) == 0  # no batch was refused
    assert sum(stats["batches_created"].values()) == 3  # each sent once, one after the other
    waits = [p.waiting for p in seen if p.waiting]
    assert waits and all(re.fullmatch(r"waiting: [\d,]+ of 500 enqueued tokens in use", w) for w in waits)
    # each line's prompt was counted once, when its batch was planned, not again while it waited
    assert sorted(counted) == sorted(r["prompt"] for r in REQUESTS)


def test_a_token_limit_error_lowers_the_budget_to_the_limit_the_provider_reports(store, make_emulator):
    emulator = _emulator(make_emulator, "enqueued_tokens=500")
    engine = start_job(store, emulator, REQUESTS, batch_size=2)  # OpenAI's default budget: 2,000,000
    engine.run()
    assert _done(store, engine) == {"succeeded": 6}
    assert store.get_job("job").options["enqueued_limit"] == {"gpt-test": 500}
    # the first round sent all three and two were refused; after that, one at a time, none refused
    assert emulator.stats()["faults"]["enqueued_tokens"] == 2
    assert sum(emulator.stats()["batches_created"].values()) == 5
    assert any(kind == "enqueued_limit" for _, kind, _ in store.events(engine.job.id))


def test_a_full_queue_is_waited_out_and_its_lines_sent_again(store, make_emulator):
    emulator = _emulator(make_emulator, "queue_full=1")
    engine = start_job(store, emulator, REQUESTS, batch_size=2)
    engine.run()
    assert _done(store, engine) == {"succeeded": 6}
    assert store.get_job("job").options["enqueued_limit"] == {"gpt-test": 2_000_000}


def test_the_limit_is_read_from_openais_message_and_shown_in_millions():
    message = ("Enqueued token limit reached for gpt-4o-mini in organization org-x. Limit: 2,000,000 enqueued "
               "tokens. Please try again once some in_progress batches have been completed.")
    assert reported_enqueued_limit(message) == 2_000_000
    assert reported_enqueued_limit("something else") is None
    assert f"waiting: {tokens_text(1_800_000)} of {tokens_text(2_000_000)} enqueued tokens in use" \
        == "waiting: 1.8 M of 2 M enqueued tokens in use"


def test_lines_left_out_of_a_batch_by_the_budget_are_read_from_the_store_once(store, make_emulator, monkeypatch):
    read: list[int] = []
    real = store.pending_requests

    def watched(*args, **kwargs):  # the real query, its rows counted
        rows = real(*args, **kwargs)
        read.extend(item for item, _, _ in rows)
        return rows

    monkeypatch.setattr(store, "pending_requests", watched)
    emulator = _emulator(make_emulator, "enqueued_tokens=500")
    engine = start_job(store, emulator, REQUESTS)  # no batch size: the budget alone splits them, two a batch
    engine.max_enqueued_tokens = 500
    engine.run()
    assert _done(store, engine) == {"succeeded": 6}
    assert [b.n_requests for b in store.batches(engine.job.id)] == [2, 2, 2]
    assert sorted(read) == sorted(set(read)) and len(read) == 6  # each line fetched once, not once per batch


def test_a_batch_whose_prompt_bytes_fit_the_budget_is_sent_without_counting_tokens(store, make_emulator,
                                                                                   monkeypatch):
    # the batch file is over the budget in bytes (the provider's line format, the keys), its prompts
    # are not: a token is at least a byte, so it fits and nothing is counted
    requests = [{"prompt": f"{i} " + "word " * 20} for i in range(6)]
    counted: list[str] = []
    real_counter = tokens.counter
    monkeypatch.setattr(tokens, "counter", lambda provider, model: (
        (lambda text: counted.append(text) or real_counter(provider, model)[0](text)), "watched"))
    budget = sum(len(r["prompt"]) + 7 for r in requests)  # the prompts in bytes, + 4 a message, + 3 a request
    engine = start_job(store, make_emulator(processing_seconds=20), requests)
    engine.max_enqueued_tokens = budget
    engine._plan()
    [batch] = store.batches(engine.job.id)
    lines = list(store.batch_lines(batch.id))
    assert batch.n_bytes > budget and len(lines) == 6
    engine.run()
    assert _done(store, engine) == {"succeeded": 6}
    assert counted == []
    # one byte less and the prompts are counted, in one batch still (about 27 tokens each)
    assert tokens.fit_budget(engine.provider, "gpt-4o-mini", lines, budget - 1)[0] == 6 and len(counted) == 6


def test_a_system_prompt_repeated_on_every_line_is_encoded_once(monkeypatch):
    encoded: list[str] = []
    encoding = tokens.bundled_o200k()

    class Watched:  # the real encoding, its calls seen
        name = encoding.name

        def encode_ordinary(self, text: str) -> list[int]:
            encoded.append(text)
            return encoding.encode_ordinary(text)

    monkeypatch.setattr(tokens, "bundled_o200k", Watched)
    rubric = "Judge the answer against the statement. " * 50
    lines = [orjson.dumps({"custom_id": str(i), "body": {"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": rubric}, {"role": "user", "content": f"answer {i}"}]}}) for i in range(20)]

    class OpenAI:
        name, line_body_field = "openai", "body"

    counted = list(tokens.line_tokens(OpenAI, "gpt-4o-mini", lines))
    assert counted[0] == len(encoding.encode_ordinary(rubric)) + len(encoding.encode_ordinary("answer 0")) + 11
    assert encoded.count(rubric) == 1 and len(encoded) == 21
