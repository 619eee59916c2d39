"""Fault injection in the emulator, seen through the official ``openai`` SDK over real HTTP, and
every fault class met by every provider's adapter and the engine (the grid at the end).

One test per fault class proves the emulator does it; the spec parser's errors name the bad part.
Time moves with ManualClock; nothing here sleeps.
"""

from __future__ import annotations

import json
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator

import openai
import orjson
import pytest
from conftest import MODELS, clock_poll, results, start_job

from batchery.emulator import Emulator, FaultPlan, ManualClock
from batchery.emulator.faults import _KIND
from batchery.emulator.state import Stats
from batchery.providers import get_provider

ENDPOINT = "/v1/chat/completions"


# -- helpers -----------------------------------------------------------------------------------


def lines(n: int, start: int = 0) -> bytes:
    return b"".join(
        orjson.dumps({"custom_id": f"req-{i}", "method": "POST", "url": ENDPOINT,
                      "body": {"model": "gpt-test", "messages": [{"role": "user", "content": f"question {i}"}]}}) + b"\n"
        for i in range(start, start + n)
    )


def upload(client: openai.OpenAI, n: int = 10) -> str:
    return client.files.create(file=("input.jsonl", lines(n)), purpose="batch").id


def create(client: openai.OpenAI, file_id: str, **extra: object) -> openai.types.Batch:
    return client.batches.create(input_file_id=file_id, endpoint=ENDPOINT, completion_window="24h", **extra)


def raw_lines(client: openai.OpenAI, file_id: str | None) -> list[bytes]:
    return [] if file_id is None else client.files.content(file_id).content.splitlines()


def records(client: openai.OpenAI, file_id: str | None) -> list[dict]:
    return [json.loads(x) for x in raw_lines(client, file_id)]


def ids(client: openai.OpenAI, file_id: str | None) -> list[str]:
    return [x["custom_id"] for x in records(client, file_id)]


Make = Callable[..., tuple[Emulator, openai.OpenAI]]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def emulate(clock: ManualClock) -> Iterator[Make]:
    started: list[Emulator] = []

    def make(faults: FaultPlan | str | None, **config: float) -> tuple[Emulator, openai.OpenAI]:
        emulator = Emulator(clock=clock, faults=faults, **config).start()
        started.append(emulator)
        return emulator, openai.OpenAI(base_url=emulator.base_url("openai"), api_key="test", max_retries=0)

    yield make
    for emulator in started:
        emulator.stop()


def fault_counts(emulator: Emulator, provider: str = "openai") -> dict:
    return emulator.stats()["by_provider"][provider]["faults"]


# -- http errors -------------------------------------------------------------------------------


def test_http_429_answers_rate_limit_error_with_retry_after_before_doing_anything(emulate: Make) -> None:
    emulator, client = emulate("http_429=1,retry_after=2.5")
    with pytest.raises(openai.RateLimitError) as caught:
        upload(client)
    error = caught.value
    assert error.code == "rate_limit_exceeded" and error.type == "requests"
    assert error.response.headers["retry-after"] == "3" and error.response.headers["retry-after-ms"] == "2500"
    assert error.request_id and error.request_id.startswith("req_")
    assert emulator.stats()["files_uploaded"] == 0, "the upload must not have happened"
    with urllib.request.urlopen(emulator.url + "/_emulator/stats") as reply:  # the stats route is not gated
        assert json.load(reply)["faults"] == {"http_429": 1}


def test_http_500_and_503_answer_internal_server_error_with_the_openai_envelope(emulate: Make) -> None:
    emulator, client = emulate("http_500=0.5,http_503=0.5")
    seen = Counter()
    while len(seen) < 2:
        with pytest.raises(openai.InternalServerError) as caught:
            client.batches.list()
        assert caught.value.type == "server_error" and caught.value.message
        seen[caught.value.status_code] += 1
    assert emulator.stats()["faults"] == {f"http_{status}": n for status, n in seen.items()}


def test_http_faults_are_drawn_from_the_seed(emulate: Make) -> None:
    def outcomes(spec: str) -> list[object]:
        emulator, client = emulate(spec)
        seen: list[object] = []
        for _ in range(40):
            try:
                client.files.list()
                seen.append("ok")
            except openai.APIStatusError as exc:
                seen.append(exc.status_code)
        counts = Counter(x for x in seen if x != "ok")
        assert emulator.stats()["faults"] == {f"http_{s}": n for s, n in counts.items()}
        return seen

    spec = "http_429=0.2,http_500=0.1,http_503=0.1,seed=7"
    first = outcomes(spec)
    assert set(first) == {"ok", 429, 500, 503}
    assert outcomes(spec) == first, "same seed, same calls: same faults"
    other = FaultPlan.parse(spec.replace("seed=7", "seed=8")).injector("openai", Stats())
    assert [other.http_status() or "ok" for _ in first] != first, "another seed, other faults"


# -- lost create -------------------------------------------------------------------------------


def test_lost_create_makes_the_batch_but_the_sdk_sees_a_connection_error(emulate: Make) -> None:
    emulator, client = emulate("lost_create=1")
    file_id = upload(client)
    with pytest.raises(openai.APIConnectionError) as caught:
        create(client, file_id, metadata={"batchery": "L1"})
    assert not isinstance(caught.value, openai.APITimeoutError)
    listed = client.batches.list().data
    assert [b.metadata for b in listed] == [{"batchery": "L1"}], "the batch exists and can be found by its tag"
    assert emulator.stats()["batches_created"]["openai"] == 1
    assert fault_counts(emulator) == {"lost_create": 1}

    again = create(client, file_id)  # the budget is spent: the next create answers normally
    assert client.batches.retrieve(again.id).status == "completed"
    assert len(client.batches.list().data) == 2


def test_groq_meets_the_same_faults_with_its_own_budget(emulate: Make) -> None:
    emulator, openai_client = emulate("lost_create=1")
    groq = openai.OpenAI(base_url=emulator.base_url("groq") + "/openai/v1", api_key="test", max_retries=0)
    for client in (openai_client, groq):
        with pytest.raises(openai.APIConnectionError):
            create(client, upload(client))
    assert fault_counts(emulator, "openai") == fault_counts(emulator, "groq") == {"lost_create": 1}
    assert emulator.stats()["faults"] == {"lost_create": 2}
    assert fault_counts(emulator, "anthropic") == {}


# -- batch lifecycle ---------------------------------------------------------------------------


def test_slow_validation_keeps_batches_validating_longer(emulate: Make, clock: ManualClock) -> None:
    emulator, client = emulate(FaultPlan(slow_validation=30))
    batch = create(client, upload(client))
    assert client.batches.retrieve(batch.id).status == "validating"
    clock.advance(29.5)
    assert client.batches.retrieve(batch.id).status == "validating"
    clock.advance(0.5)
    done = client.batches.retrieve(batch.id)
    assert done.status == "completed" and done.in_progress_at == done.completed_at == batch.created_at + 30
    assert done.request_counts.completed == 10
    assert fault_counts(emulator) == {"slow_validation": 1}


def test_queue_full_fails_validation_with_token_limit_exceeded_after_a_200_create(emulate: Make) -> None:
    emulator, client = emulate("queue_full=1")
    file_id = upload(client)
    batch = create(client, file_id)
    assert batch.status == "validating", "create itself succeeds"
    failed = client.batches.retrieve(batch.id)
    assert failed.status == "failed" and failed.failed_at is not None and failed.output_file_id is None
    assert failed.errors is not None and len(failed.errors.data) == 1
    error = failed.errors.data[0]
    assert error.code == "token_limit_exceeded" and error.line is None
    assert error.message.startswith("Enqueued token limit reached for gpt-test ")
    assert failed.request_counts.total == 0

    assert client.batches.retrieve(create(client, file_id).id).status == "completed"
    assert fault_counts(emulator) == {"queue_full": 1}


def test_expire_after_expires_batches_early_with_partial_output(emulate: Make, clock: ManualClock) -> None:
    emulator, client = emulate("expire_after=50", processing_seconds=100)
    batch = create(client, upload(client))
    assert batch.expires_at == batch.created_at + 50
    clock.advance(49)
    assert client.batches.retrieve(batch.id).status == "in_progress"
    clock.advance(1)
    expired = client.batches.retrieve(batch.id)
    assert expired.status == "expired" and expired.expired_at == batch.created_at + 50
    finished, unfinished = records(client, expired.output_file_id), records(client, expired.error_file_id)
    assert 0 < len(finished) < 10 and len(finished) == expired.request_counts.completed
    assert {e["error"]["code"] for e in unfinished} == {"batch_expired"}
    assert sorted(x["custom_id"] for x in finished + unfinished) == sorted(f"req-{i}" for i in range(10))
    assert fault_counts(emulator) == {"expire_after": 1}


def test_provider_cancel_cancels_mid_way_without_a_client_call(emulate: Make, clock: ManualClock) -> None:
    emulator, client = emulate("provider_cancel=1", processing_seconds=100, cancel_seconds=10)
    batch = create(client, upload(client))
    clock.advance(49)
    assert client.batches.retrieve(batch.id).status == "in_progress"
    clock.advance(1)
    cancelling = client.batches.retrieve(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at == batch.created_at + 50
    clock.advance(10)
    cancelled = client.batches.retrieve(batch.id)
    assert cancelled.status == "cancelled" and cancelled.cancelled_at == batch.created_at + 60
    finished, skipped = records(client, cancelled.output_file_id), records(client, cancelled.error_file_id)
    assert 0 < len(finished) < 10 and len(finished) + len(skipped) == 10
    assert {e["error"]["code"] for e in skipped} == {"batch_cancelled"}
    assert fault_counts(emulator) == {"provider_cancel": 1}

    later = create(client, upload(client))  # only the first batch is cancelled
    clock.advance(100)
    assert client.batches.retrieve(later.id).status == "completed"


# -- result files ------------------------------------------------------------------------------


def finished_batch(client: openai.OpenAI, n: int = 10) -> openai.types.Batch:
    batch = client.batches.retrieve(create(client, upload(client, n)).id)
    assert batch.status == "completed"
    return batch


def test_drop_lines_leaves_lines_out_of_both_files(emulate: Make) -> None:
    emulator, client = emulate("drop_lines=2")
    batch = finished_batch(client)
    assert batch.request_counts.completed == 10, "the provider still counts them"
    seen = ids(client, batch.output_file_id) + ids(client, batch.error_file_id)
    assert len(seen) == len(set(seen)) == 8
    assert fault_counts(emulator) == {"drop_lines": 2}
    assert len(ids(client, finished_batch(client).output_file_id)) == 10, "a count is a total budget"


def test_drop_lines_as_a_probability_can_drop_everything(emulate: Make) -> None:
    emulator, client = emulate("drop_lines=1.0")
    batch = finished_batch(client)
    assert batch.output_file_id is None and batch.error_file_id is None
    assert fault_counts(emulator) == {"drop_lines": 10}


def test_duplicate_lines_writes_some_lines_twice(emulate: Make) -> None:
    emulator, client = emulate("duplicate_lines=0.3,seed=1")
    batch = finished_batch(client, 20)
    written = raw_lines(client, batch.output_file_id)
    counts = Counter(json.loads(x)["custom_id"] for x in written)
    assert set(counts) == {f"req-{i}" for i in range(20)}
    twice = [cid for cid, n in counts.items() if n == 2]
    assert twice and max(counts.values()) == 2
    assert len(written) == 20 + len(twice) == 20 + fault_counts(emulator)["duplicate_lines"]
    assert len(set(written)) == 20, "a duplicate is the same line again"


def test_malformed_lines_are_invalid_json(emulate: Make) -> None:
    emulator, client = emulate("malformed_lines=3")
    batch = finished_batch(client)
    written = raw_lines(client, batch.output_file_id)
    broken = []
    for raw in written:
        try:
            json.loads(raw)
        except json.JSONDecodeError:
            broken.append(raw)
    assert len(written) == 10 and len(broken) == 3
    assert all(raw.startswith(b'{"id":"batch_req_') for raw in broken)
    assert fault_counts(emulator) == {"malformed_lines": 3}


def test_reorder_shuffles_result_files_fully_and_repeatably(emulate: Make) -> None:
    def output_orders(spec: str) -> tuple[list[str], list[str]]:
        emulator, client = emulate(spec)
        shuffled = ids(client, finished_batch(client, 30).output_file_id)
        plain = ids(client, finished_batch(client, 30).output_file_id)  # the budget (one file) is spent
        assert fault_counts(emulator) == {"reorder": 1}
        return shuffled, plain

    shuffled, plain = output_orders("reorder=1,seed=3")
    assert sorted(shuffled) == sorted(plain) and shuffled != plain
    assert output_orders("reorder=1,seed=3")[0] == shuffled, "same seed, same order"


def test_truncated_download_ends_half_way_without_an_error(emulate: Make) -> None:
    emulator, client = emulate("truncated_download=1")
    output_id = finished_batch(client).output_file_id
    assert output_id is not None
    size = client.files.retrieve(output_id).bytes
    with client.files.with_streaming_response.content(output_id) as streamed:
        cut = b"".join(streamed.iter_bytes())  # a streaming read that simply ends early
    whole = client.files.content(output_id).content
    assert len(whole) == size and len(cut) == size // 2 and whole.startswith(cut)
    assert fault_counts(emulator) == {"truncated_download": 1}


# -- the spec ----------------------------------------------------------------------------------


def test_spec_parses_units_percentages_and_round_trips() -> None:
    plan = FaultPlan.parse(" http_429 = 10% , drop_lines=2, malformed_lines=0.5, slow_validation=1.5m,"
                           "expire_after=2h, reorder=1.0, seed=-3 ")
    assert plan.http_429 == pytest.approx(0.1) and plan.http_active
    assert plan.drop_lines == 2 and isinstance(plan.drop_lines, int)
    assert plan.malformed_lines == 0.5 and plan.reorder == 1.0 and isinstance(plan.reorder, float)
    assert plan.slow_validation == 90 and plan.expire_after == 7200 and plan.seed == -3
    assert FaultPlan.parse(str(plan)) == plan
    assert FaultPlan.parse("") == FaultPlan() and not FaultPlan() and not FaultPlan.parse("seed=5")
    assert FaultPlan.parse("expire_after=0")  # expiring at once is a fault too


@pytest.mark.parametrize(("spec", "named"), [
    ("bogus=1", "unknown fault 'bogus'"),
    ("http_429=0.1,lost_create", "'lost_create': expected lost_create=<count>"),
    ("http_429=0.1,,seed=2", "empty item"),
    ("http_429=1.5", "'http_429=1.5'"),
    ("http_500=lots", "'lots' is not a probability"),
    ("lost_create=1.5", "'lost_create=1.5'"),
    ("queue_full=-1", "'queue_full=-1'"),
    ("slow_validation=5x", "'5x' is not a duration"),
    ("drop_lines=2.5", "'drop_lines=2.5'"),
    ("seed=one", "'one' is not an integer"),
    ("seed=1,seed=2", "seed is given twice"),
    ("http_429=0.6,http_503=0.6", "add up to 1.2"),
])
def test_a_bad_spec_raises_value_error_naming_the_bad_part(spec: str, named: str) -> None:
    with pytest.raises(ValueError) as caught:
        FaultPlan.parse(spec)
    assert named in str(caught.value)


def test_bad_plans_fail_before_the_emulator_starts() -> None:
    with pytest.raises(ValueError, match="lost_create"):
        FaultPlan(lost_create=-1)
    with pytest.raises(ValueError, match="unknown fault 'nope'"):
        Emulator(faults="nope=1")
    with pytest.raises(TypeError):
        Emulator(faults=3)  # type: ignore[arg-type]


# -- every fault class against every provider, through its adapter and the engine ----------------

# fault -> (spec, emulator timing), sized for a job of one 3-line batch (and the batches that resend).
GRID: dict[str, tuple[str, dict[str, float]]] = {
    "http_429": ("http_429=0.5,retry_after=0,seed=1", {}),
    "http_500": ("http_500=0.5,seed=1", {}),
    "http_503": ("http_503=0.5,seed=1", {}),
    "lost_create": ("lost_create=1", {}),
    "slow_validation": ("slow_validation=2", {}),
    "queue_full": ("queue_full=1", {}),
    "expire_after": ("expire_after=2", {"processing_seconds": 4}),
    "drop_lines": ("drop_lines=1", {}),
    "duplicate_lines": ("duplicate_lines=1", {}),
    "malformed_lines": ("malformed_lines=1", {}),
    "reorder": ("reorder=1.0", {}),
    "truncated_download": ("truncated_download=1", {}),
    "cut_download": ("cut_download=1", {}),
    "provider_cancel": ("provider_cancel=1", {"processing_seconds": 4}),
}
PROVIDERS = ("openai", "groq", "anthropic", "gemini", "mistral", "together", "vertex")
LINES, PER_BATCH, MAX_ATTEMPTS = 3, 3, 3
# Vertex shares the emulator's lifecycle and Gemini's decoding: it meets the faults that cross its own
# calls (its two clients, their errors, its results files) and leaves the rest to the others' runs.
VERTEX_OWN = {"http_429", "http_503", "lost_create", "truncated_download", "cut_download", "malformed_lines",
              "expire_after", "provider_cancel"}


def test_the_grid_covers_every_fault_class() -> None:
    # enqueued_tokens is OpenAI's and Groq's limit, not a fault every provider meets: tests/test_enqueued_tokens.py
    assert set(GRID) == set(_KIND) - {"seed", "retry_after", "enqueued_tokens"}


@pytest.fixture(scope="module")
def faulty(request: pytest.FixtureRequest) -> Iterator[tuple[str, Emulator]]:
    """One emulator per fault class, shared by the six providers (each has its own budgets)."""
    spec, timing = GRID[request.param]
    emulator = Emulator(clock=ManualClock(), faults=spec, **timing).start()
    yield request.param, emulator
    emulator.stop()


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("faulty", list(GRID), indirect=True, scope="module")
def test_every_provider_ends_every_job_correctly_under_every_fault(faulty, provider, store) -> None:
    fault, emulator = faulty
    if provider == "vertex" and fault not in VERTEX_OWN:
        pytest.skip("met through code vertex shares with the other providers")
    adapter = get_provider(provider, base_url=emulator.base_url(provider), api_key="test-key")
    prompts = [{"id": f"r{i}", "prompt": f"{fault} question {i}"} for i in range(LINES)]
    before = emulator.stats()["batches_created"][provider]
    engine = start_job(store, emulator, prompts, model=MODELS[provider], batch_size=PER_BATCH, provider=adapter,
                       max_attempts=MAX_ATTEMPTS)
    engine.poll = clock_poll(emulator)
    engine.poll.give_up_after = 30
    final = engine.run()

    stats = emulator.stats()
    assert stats["by_provider"][provider]["faults"].get(fault, 0) > 0, f"{provider} never met {fault}"
    assert final.done and store.get_job("job").state == "done"
    rows = results(store)
    assert [r.id for r in rows] == [p["id"] for p in prompts], "one result per line, in input order"
    for row in rows:
        if row.status == "succeeded":
            assert row.text == f"Emulated answer to: {row.id and prompts[int(row.id[1:])]['prompt']}"
        else:  # only an expiry that outlasts every attempt may leave a line unanswered
            assert fault == "expire_after" and row.status == "expired" and row.attempts == MAX_ATTEMPTS, row
    created = stats["batches_created"][provider] - before
    resent = sum(r.attempts > 1 for r in rows)
    if fault in CHANGE_NOTHING:  # answered before the call did anything, found by tag, or fetched again
        assert created == 1 and resent == 0, "a failed or lost call never makes a second batch"
    elif fault in ("drop_lines", "malformed_lines"):
        assert created == 2 and resent == 1, "only the line that did not come back is sent again"
    elif fault == "provider_cancel":
        assert created == 2 and 0 < resent < LINES, "finished lines are kept, the rest sent again"
    elif fault == "queue_full":  # OpenAI fails the batch after a 200; the others refuse the create (429)
        assert (created, resent) == ((2, LINES) if provider in ("openai", "groq") else (1, 0))
    elif fault == "truncated_download" and provider not in ("gemini", "together"):
        assert created == 1 and resent == 0, "the provider's counts show the download short: it is fetched again"
    elif fault == "expire_after" and provider != "gemini":  # Gemini's expired batches return nothing
        assert any(r.status == "succeeded" for r in rows), "lines finished before expiry are kept"


CHANGE_NOTHING = {"http_429", "http_500", "http_503", "lost_create", "slow_validation", "duplicate_lines", "reorder",
                  "cut_download"}
