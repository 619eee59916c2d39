"""What the engine does under each fault the emulator can inject (the emulator side is proved in
tests/emulator/test_faults.py). Every job must still end with each line answered once."""

from __future__ import annotations

import pytest

from batchery.providers.openai import OpenAIBatch

from conftest import clock_poll, results, start_job

N, BATCH = 60, 20  # three batches


def prompts() -> list[dict]:
    return [{"id": f"r{i}", "prompt": f"fault question {i}"} for i in range(N)]


def run(store, emulator, *, sdk_retries: bool = True, give_up_after: int = 5):
    provider = OpenAIBatch(api_key="k", base_url=emulator.base_url("openai"))
    if not sdk_retries:  # let errors reach the engine at once instead of the SDK sleeping between tries
        provider.client = provider.client.with_options(max_retries=0)
    engine = start_job(store, emulator, prompts(), batch_size=BATCH, provider=provider)
    engine.poll = clock_poll(emulator)
    engine.poll.give_up_after = give_up_after
    final = engine.run()
    rows = results(store)
    assert [r.id for r in rows] == [f"r{i}" for i in range(N)], "results stay in input order"
    return final, rows, emulator.stats()


def created(stats) -> int:
    return stats["batches_created"]["openai"]


def test_rate_limits_and_server_errors_on_any_call_are_outlasted(store, make_emulator):
    emulator = make_emulator(faults="http_429=0.15,http_500=0.1,http_503=0.1,retry_after=0,seed=3")
    final, _, stats = run(store, emulator, sdk_retries=False, give_up_after=30)
    assert final.items == {"succeeded": N}
    assert created(stats) == 3  # an error answered before the call did anything never duplicates a batch
    assert sum(stats["faults"].get(f"http_{code}", 0) for code in (429, 500, 503)) > 0


def test_a_lost_create_response_is_found_by_tag_not_created_again(store, make_emulator):
    emulator = make_emulator(faults="lost_create=2")
    final, _, stats = run(store, emulator)
    assert final.items == {"succeeded": N}
    assert stats["faults"]["lost_create"] == 2
    assert created(stats) == 3


def test_slow_validation_only_takes_longer(store, make_emulator):
    emulator = make_emulator(processing_seconds=10, faults="slow_validation=1h")
    final, _, stats = run(store, emulator)
    assert final.items == {"succeeded": N} and created(stats) == 3


def test_a_full_queue_fails_the_batch_and_its_lines_are_sent_again(store, make_emulator):
    emulator = make_emulator(faults="queue_full=1")
    final, rows, stats = run(store, emulator)
    assert final.items == {"succeeded": N}
    assert created(stats) == 4  # the refused batch's lines went out once more
    assert sorted(r.attempts for r in rows).count(2) == BATCH


def test_expiry_keeps_finished_lines_and_resends_the_rest(store, make_emulator):
    emulator = make_emulator(processing_seconds=100, faults="expire_after=50")
    final, rows, stats = run(store, emulator)
    assert final.items.get("succeeded", 0) > N // 2
    assert set(final.items) <= {"succeeded", "expired"}
    assert all(r.attempts == 3 for r in rows if r.status == "expired")


@pytest.mark.parametrize("fault", ["drop_lines=4", "malformed_lines=4"])
def test_lines_lost_or_garbled_in_the_output_are_sent_again(store, make_emulator, fault):
    emulator = make_emulator(faults=fault)
    final, rows, stats = run(store, emulator)
    assert final.items == {"succeeded": N}
    assert created(stats) == 4 and sum(r.attempts == 2 for r in rows) == 4


def test_duplicated_and_reordered_output_lines_change_nothing(store, make_emulator):
    emulator = make_emulator(faults="duplicate_lines=6,reorder=1.0")
    final, rows, stats = run(store, emulator)
    assert final.items == {"succeeded": N} and created(stats) == 3
    assert all(r.attempts == 1 and r.text.endswith(f"fault question {r.id[1:]}") for r in rows)


def test_a_truncated_download_is_fetched_again_without_resending(store, make_emulator):
    emulator = make_emulator(faults="truncated_download=1")
    final, rows, stats = run(store, emulator)
    assert final.items == {"succeeded": N}
    assert created(stats) == 3 and all(r.attempts == 1 for r in rows)
    assert stats["faults"]["truncated_download"] == 1


def test_a_batch_cancelled_by_the_provider_keeps_its_finished_lines_and_resends_the_rest(store, make_emulator):
    emulator = make_emulator(processing_seconds=100, faults="provider_cancel=1")
    final, rows, stats = run(store, emulator)
    assert final.items == {"succeeded": N}
    assert created(stats) == 4
    assert 0 < sum(r.attempts == 2 for r in rows) < BATCH  # only the unfinished part went out again
