"""Prices from genai-prices, batch variants and discounts, overrides, unknown models, token counts,
and the engine's --max-cost cap."""

from __future__ import annotations

import socket

import pytest
from conftest import results, start_job
from genai_prices import Usage, calc_price

from batchery import tokens
from batchery.errors import ConfigError
from batchery.inputs import iter_objects
from batchery.limits import LIMITS
from batchery.pricing import UNKNOWN, PriceBook, estimate, format_usd
from batchery.providers import get_provider


def test_known_model_is_priced_as_genai_prices_prices_it():
    price = PriceBook().price("openai", "gpt-4o-mini")
    direct = calc_price(Usage(input_tokens=1_000_000, output_tokens=1_000_000), "gpt-4o-mini", provider_id="openai")
    assert price.input == pytest.approx(float(direct.input_price))
    assert price.output == pytest.approx(float(direct.output_price))
    assert price.source.startswith("genai-prices")


def test_batch_price_comes_from_genai_prices_batch_variant_when_it_has_one():
    price = PriceBook().price("openai", "gpt-4o-mini")
    direct = calc_price(Usage(input_tokens=1_000_000, output_tokens=1_000_000), "gpt-4o-mini",
                        provider_id="openai", price_context={"processing": "batch"})
    assert price.batch_source == "genai-prices batch price"
    assert price.batch_input == pytest.approx(float(direct.input_price))
    assert price.batch_input < price.input and price.batch_output < price.output


@pytest.mark.parametrize("provider, model", [("anthropic", "claude-3-5-haiku-latest"), ("groq", "llama-3.1-8b-instant")])
def test_batch_price_is_live_less_the_provider_discount_without_a_batch_variant(provider, model):
    price = PriceBook().price(provider, model)
    keep = 1 - LIMITS[provider].discount
    assert price.batch_input == pytest.approx(price.input * keep)
    assert price.batch_output == pytest.approx(price.output * keep)
    assert "discount" in price.batch_source and "no batch price" in price.batch_source


def test_gemini_provider_maps_to_genai_prices_google():
    assert PriceBook().price("gemini", "gemini-2.5-flash") is not None


def test_unknown_model_is_unknown_price_never_zero():
    book = PriceBook()
    assert book.price("openai", "gpt-test") is None
    cost = book.cost("openai", "gpt-test", 1000, 1000)
    assert cost.batch is None and cost.live is None and not cost.known
    assert format_usd(cost.batch) == UNKNOWN
    assert cost.as_dict()["price"] == UNKNOWN


def test_override_file_prices_a_model_genai_prices_lacks(tmp_path):
    path = tmp_path / "prices.toml"
    path.write_text('[openai."gpt-test"]\ninput = 2.0\noutput = 8.0\n\n'
                    '[anthropic."my-claude"]\ninput = 1\noutput = 5\nbatch_input = 0.3\nbatch_output = 1.5\n')
    book = PriceBook(path)
    price = book.price("openai", "gpt-test")
    assert (price.input, price.output, price.batch_input, price.batch_output) == (2.0, 8.0, 1.0, 4.0)
    assert book.cost("openai", "gpt-test", 1_000_000, 500_000).batch == pytest.approx(3.0)
    explicit = book.price("anthropic", "my-claude")
    assert (explicit.batch_input, explicit.batch_output) == (0.3, 1.5)


def test_override_file_in_the_store_directory_is_found(tmp_path):
    (tmp_path / "prices.toml").write_text('[openai."gpt-test"]\ninput = 1\noutput = 1\n')
    assert PriceBook(store_dir=tmp_path).price("openai", "gpt-test").input == 1.0


def test_bad_override_file_is_a_clear_error(tmp_path):
    path = tmp_path / "prices.toml"
    path.write_text('[openai."gpt-test"]\ninput = "cheap"\noutput = 1\n')
    with pytest.raises(ConfigError, match="numeric 'input'"):
        PriceBook(path).price("openai", "gpt-test")
    path.write_text("not toml [")
    with pytest.raises(ConfigError, match="not a valid TOML"):
        PriceBook(path)


@pytest.mark.parametrize("amount", ["-0.5", "nan", "inf", "true"])
def test_a_negative_or_not_finite_price_is_refused_whichever_model_is_asked(tmp_path, amount):
    path = tmp_path / "prices.toml"  # a negative price would let --max-cost pass any spend
    path.write_text(f'[openai."cheap"]\ninput = 1\noutput = {amount}\n[openai."other"]\ninput = 1\noutput = 1\n')
    with pytest.raises(ConfigError, match=r'\[openai\."cheap"\]: needs numeric .output. \(USD per million tokens, 0 or more\)'):
        PriceBook(path).price("openai", "other")


def test_a_folder_given_as_the_price_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="is a folder, not a price file"):
        PriceBook(tmp_path)


def test_offline_token_count_falls_back_to_the_stated_approximation(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-cache"))

    def no_network(*args, **kwargs):
        raise AssertionError("token counting must not use the network")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    count, method = tokens.counter("openai", "gpt-4o-mini")
    assert method == tokens.APPROXIMATE
    assert count("a" * 40) == 10


def test_output_tokens_use_max_tokens_else_the_stated_default():
    count, method = tokens.counter("anthropic", "any")
    with_limit = tokens.estimate_request({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                                          "max_tokens": 77}, count, method)
    without = tokens.estimate_request({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, count, method)
    assert with_limit.output_tokens == 77 and with_limit.output_method == "max_tokens"
    assert without.output_tokens == tokens.DEFAULT_OUTPUT_TOKENS and "default" in without.output_method


def test_estimate_counts_distinct_requests_and_prices_them():
    adapter = get_provider("openai", api_key="unused")
    rows = [{"prompt": "same question"}, {"prompt": "same question"}, {"prompt": "other", "max_tokens": 10}]
    est = estimate(iter_objects(rows), adapter, "gpt-4o-mini", PriceBook())
    assert (est.requests, est.distinct) == (3, 2)
    assert est.output_tokens == tokens.DEFAULT_OUTPUT_TOKENS + 10
    assert est.batch is not None and est.batch < est.live
    unknown = estimate(iter_objects(rows), adapter, "gpt-test", PriceBook())
    assert unknown.batch is None and any(UNKNOWN in line for line in unknown.lines())


def test_max_cost_stops_submitting_before_the_cap_and_the_job_resumes(store, emulator, tmp_path):
    prices = tmp_path / "prices.toml"
    prices.write_text('[openai."gpt-test"]\ninput = 1000\noutput = 1000\n')
    rows = [{"prompt": f"question {i}", "max_tokens": 100} for i in range(30)]
    # each batch of 10 projects ~ (10 x ~10 input + 1000 output) tokens x $500/Mtok ~ $0.55
    engine = start_job(store, emulator, rows, batch_size=10)
    engine.max_cost, engine.prices = 1.2, PriceBook(prices)
    final = engine.run()
    assert final.stopped and "--max-cost $1.20 reached" in final.stopped
    assert emulator.stats()["batches_created"]["openai"] == 2
    assert store.get_job("job").state == "running"  # resumable, not done
    assert any(kind == "max_cost_reached" for _, kind, _ in store.events(engine.job.id))

    again = start_job(store, emulator, rows, batch_size=10)  # no cap: the rest is sent
    assert again.run().stopped is None
    assert emulator.stats()["batches_created"]["openai"] == 3
    assert {r.status for r in results(store)} == {"succeeded"}


def test_max_cost_with_an_unknown_price_refuses_rather_than_guessing(store, emulator):
    engine = start_job(store, emulator, [{"prompt": "q"}])
    engine.max_cost, engine.prices = 5.0, PriceBook()
    with pytest.raises(ConfigError, match="unknown price"):
        engine.run()
    assert emulator.stats()["batches_created"]["openai"] == 0
