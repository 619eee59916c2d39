"""Flex tiers (`--mode flex`): live calls on OpenAI's and Gemini's flex tier against the emulator,
in simulated time: the tier asked for on every call, 429s waited out however many come, the tier
that served each answer stored with it and priced at that tier's rates in `status` and `estimate`."""

from __future__ import annotations

import orjson
import pytest
from conftest import cli, results
from test_live import live_job

from batchery.emulator.fake_model import Behaviour
from batchery.live import LivePolicy, LiveRunner
from batchery.live.executor import FLEX_MAX_BACKOFF, FLEX_TIMEOUT
from batchery.pricing import PriceBook, actual_cost


def flex_job(store, emulator, provider: str, model: str, n: int):
    requests = [{"id": f"r{i}", "prompt": f"Flex question {i}", "max_tokens": 20, "model": model} for i in range(n)]
    return live_job(store, emulator, n, name="flex", provider=provider, requests=requests)


@pytest.mark.parametrize("provider, model, http", [("openai", "gpt-5-mini", "fast"), ("gemini", "gemini-2.5-flash", "sdk")])
def test_flex_calls_ask_for_the_tier_wait_out_every_429_and_are_priced_at_flex_rates(provider, model, http, store,
                                                                                    make_emulator):
    # 51 refusals: more than the 50 a live call may meet before it is failed.
    emulator = make_emulator(behaviour=Behaviour(flex_busy=51))
    adapter, job = flex_job(store, emulator, provider, model, 1)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:  # one call at a time: nothing in flight while the clock moves
        waits.append(seconds)
        emulator.clock.advance(max(seconds, 0.0))

    policy = LivePolicy.flex(clock=emulator.clock.now, sleep=sleep, concurrency=1, http=http)
    start = emulator.clock.now()
    progress = LiveRunner(store, adapter, job, policy).run()

    assert progress.done and progress.items == {"succeeded": 1}
    assert emulator.stats()["faults"] == {"flex_busy": 51}  # every call asked for the flex tier
    assert progress.live["rate_limited"] == 51 and progress.live["sent"] == 52
    # Backed off (no Retry-After) up to the flex cap, in simulated time: hours passed, no second slept.
    assert max(waits) <= FLEX_MAX_BACKOFF * 1.1 and emulator.clock.now() - start > 60 * 60
    assert [r.text for r in results(store, "flex")] == ["Emulated answer to: Flex question 0"]

    usage = store.usage_by_model(job.id)
    assert [(m, mode) for m, mode, *_ in usage] == [(model, "flex")]  # the tier each answer names
    cost, = actual_cost(PriceBook(), provider, usage)
    assert cost.usd == cost.flex and 0 < cost.flex < cost.live
    assert adapter.live_timeout == FLEX_TIMEOUT == policy.read_timeout  # both paths wait 15 minutes


def test_an_answer_the_standard_tier_served_is_stored_and_priced_as_live(store, make_emulator):
    emulator = make_emulator()
    adapter, job = flex_job(store, emulator, "openai", "gpt-5-mini", 4)
    runner = LiveRunner(store, adapter, job, LivePolicy.flex(clock=emulator.clock.now, concurrency=1))
    real_send = runner.send

    async def some_on_the_default_tier(body, model):
        assert body["service_tier"] == "flex"
        response = await real_send(body, model)
        if "question 1" in body["messages"][-1]["content"]:  # OpenAI names the tier that took the call
            response = response._replace(body=orjson.dumps({**orjson.loads(response.body), "service_tier": "default"}))
        return response

    runner.send = some_on_the_default_tier
    assert runner.run().done
    usage = store.usage_by_model(job.id)
    assert [(mode, requests) for _, mode, _, requests, *_ in usage] == [("flex", 3), ("live", 1)]
    flex, live = actual_cost(PriceBook(), "openai", usage)
    assert live.usd == live.live and flex.usd == flex.flex and live.usd / live.input_tokens > flex.usd / flex.input_tokens


def test_the_cli_runs_gemini_flex_and_status_and_estimate_show_the_flex_price(tmp_path):
    requests = tmp_path / "flex.jsonl"
    requests.write_bytes(b"".join(orjson.dumps({"prompt": f"Question {i}", "max_tokens": 50}) + b"\n" for i in range(3)))
    store = str(tmp_path / "store")
    args = ("--provider", "gemini", "--model", "gemini-2.5-flash", "--store", store)
    code, _, err = cli("run", str(requests), "--mode", "flex", "--emulate", "--out", str(tmp_path / "out.jsonl"), *args)
    assert code == 0, err

    code, out, _ = cli("status", "flex", "--json", "--store", store)
    status = orjson.loads(out)
    model, = status["cost"]["models"]
    assert model["mode"] == "flex" and status["cost"]["usd"] == model["flex_usd"] < model["live_usd"]
    assert model["price"]["flex_source"].startswith("the batch price")  # Gemini's flex is half price, as batch
    assert cli("status", "flex", "--store", store)[1].count("at flex prices") == 1

    code, out, _ = cli("estimate", str(requests), *args, "--json")
    estimate = orjson.loads(out)
    assert code == 0 and estimate["flex_usd"] == estimate["batch_usd"] == estimate["live_usd"] / 2
    assert "| flex $" in cli("estimate", str(requests), *args)[1]
    assert "flex_usd" not in orjson.loads(cli("estimate", str(requests), "--provider", "anthropic", "--model",
                                              "claude-haiku-4-5", "--store", store, "--json")[1])  # no flex tier


def test_a_price_file_sets_flex_prices_which_default_to_the_batch_prices(tmp_path):
    prices = tmp_path / "prices.toml"
    prices.write_text('[openai."ft:a"]\ninput = 1.0\noutput = 2.0\nflex_input = 0.4\n\n'
                      '[gemini."g"]\ninput = 1.0\noutput = 2.0\n\n[anthropic."c"]\ninput = 1.0\noutput = 2.0\n')
    book = PriceBook(prices)
    assert book.price("openai", "ft:a").flex_rates == {"input": (0.4, ()), "output": (1.0, ())}
    assert book.price("gemini", "g").flex_rates == book.price("gemini", "g").batch_rates
    assert book.price("anthropic", "c").flex_rates is None  # no flex tier to price
