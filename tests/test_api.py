"""The Python API: batchery.run / arun, from plain code and from inside a running event loop."""

from __future__ import annotations

import asyncio
import os
import stat

import pytest

import batchery


def requests(n: int) -> list[dict]:
    return [{"id": i, "prompt": f"api question {i}"} for i in range(n)]


def test_run_returns_results_in_order_and_resumes_instead_of_resending(tmp_path, emulator):
    kwargs = dict(provider="openai", model="gpt-test", store=tmp_path / "s", base_url=emulator.base_url("openai"),
                  api_key="test-key", batch_size=4, poll_interval=0.01)
    first = batchery.run(requests(10), **kwargs)
    assert [r.id for r in first] == [str(i) for i in range(10)]
    assert all(r.ok and r.text.endswith(f"api question {r.id}") for r in first)
    again = batchery.run(requests(10), **kwargs)
    assert [r.text for r in again] == [r.text for r in first]
    assert emulator.stats()["batches_created"]["openai"] == 3


def test_arun_works_inside_a_running_event_loop(tmp_path):
    async def notebook_cell():
        # a heartbeat proves the loop kept running while the job ran in a worker thread
        beats = 0

        async def heartbeat():
            nonlocal beats
            while True:
                beats += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(heartbeat())
        results = await batchery.arun(requests(5), model="gpt-test", store=tmp_path / "s", emulate=True)
        task.cancel()
        return results, beats

    results, beats = asyncio.run(notebook_cell())
    assert [r.status for r in results] == ["succeeded"] * 5
    assert beats > 1


def test_store_directory_is_private(tmp_path, emulator):
    batchery.run(requests(2), model="gpt-test", store=tmp_path / "s", base_url=emulator.base_url("openai"),
                 api_key="test-key", poll_interval=0.01)
    assert stat.S_IMODE(os.stat(tmp_path / "s").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "s" / "batchery.db").st_mode) == 0o600


def test_results_of_an_unknown_job_is_a_clear_error(tmp_path):
    with pytest.raises(batchery.JobError, match="no job named 'ghost'"):
        batchery.results("ghost", store=tmp_path / "s")


@pytest.mark.parametrize("request_, message", [
    ({"prompt": "x", "metadata": {"n": 2**70}}, r"request\[1\]: cannot be written as JSON"),
    ({"prompt": "x", "id": True}, r"request\[1\]: field 'id' must be a string or an integer, got bool"),
    ({"prompt": "x", "id": "q0"}, r"request\[1\]: id already given on request\[0\]"),
])
def test_requests_python_cannot_store_are_refused_naming_them(tmp_path, request_, message):
    with pytest.raises(batchery.BatcheryError, match=message):
        batchery.run([{"id": "q0", "prompt": "first"}, request_], model="m", emulate=True, store=tmp_path / "s")


def test_reused_answers_are_announced_on_the_batchery_logger(tmp_path, caplog):
    batchery.run(requests(3), model="m", emulate=True, store=tmp_path / "s", job="first")
    with caplog.at_level("WARNING", logger="batchery"):
        again = batchery.run(requests(3), model="m", emulate=True, store=tmp_path / "s", job="second")
    assert all(r.ok for r in again)
    assert [r.getMessage() for r in caplog.records] == ["3 answers reused from job 'first' (same store)"]
