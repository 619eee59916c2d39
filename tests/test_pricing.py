"""Prices from genai-prices, batch variants and discounts, overrides, unknown models, token counts,
and the engine's --max-cost cap."""

from __future__ import annotations

import socket

import orjson
import pytest
from conftest import results, start_job
from genai_prices import Usage, calc_price

from batchery import tokens
from batchery.errors import ConfigError
from batchery.inputs import iter_objects
from batchery.limits import LIMITS
from batchery.pricing import UNKNOWN, PriceBook, actual_cost, estimate, format_usd
from batchery.providers import PROVIDERS, get_provider


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


def test_a_folder_or_a_missing_file_given_as_the_price_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="is a folder, not a price file"):
        PriceBook(tmp_path)
    with pytest.raises(ConfigError, match=r"gone\.toml: no such price file"):
        PriceBook(tmp_path / "gone.toml")


def test_offline_token_count_falls_back_to_the_stated_approximation(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-cache"))

    def no_network(*args, **kwargs):
        raise AssertionError("token counting must not use the network")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    count, method = tokens.counter("openai", "gpt-4-turbo")  # cl100k_base: not bundled, not cached
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


# -- the whole usage: cached input, prompt-length tiers --------------------------------------------

def _store_usage(store, emulator, provider: str, model: str, lines: list[bytes]):
    """A job of len(lines) requests whose answers are the provider's own result lines, decoded by
    its adapter and stored as collect stores them."""
    from batchery.providers.anthropic import decode_line as anthropic_line
    from batchery.providers.gemini import decode_line as gemini_line

    adapter = get_provider(provider, base_url=emulator.base_url(provider), api_key="test-key")
    engine = start_job(store, emulator, [{"prompt": f"q{i}"} for i in range(len(lines))], model=model,
                       provider=adapter)
    decode = {"anthropic": anthropic_line, "gemini": gemini_line}[provider]
    items = [item for item, in store.db.execute("SELECT id FROM items WHERE job_id = ? ORDER BY id",
                                                (engine.job.id,))]
    rows = [(*decode(line)[1:], item) for line, item in zip(lines, items)]
    with store.transaction():
        store.record_outcomes(rows)
    return engine.job


def test_claude_haiku_with_90_percent_cached_input_costs_what_genai_prices_says(store, emulator):
    # 100 answers of 20,000 input tokens, 18,000 of them read from the prompt cache, and 2,000 output
    line = orjson.dumps({"custom_id": "c", "result": {"type": "succeeded", "message": {
        "content": [{"type": "text", "text": "A"}],
        "usage": {"input_tokens": 2_000, "cache_read_input_tokens": 18_000, "cache_creation_input_tokens": 0,
                  "output_tokens": 2_000}}}})
    job = _store_usage(store, emulator, "anthropic", "claude-haiku-4-5", [line] * 100)
    cost, = actual_cost(PriceBook(), "anthropic", store.usage_by_model(job.id))
    expected = calc_price(Usage(input_tokens=2_000_000, cache_read_tokens=1_800_000, output_tokens=200_000),
                          "claude-haiku-4-5", provider_id="anthropic", price_context={"processing": "batch"})
    assert (cost.input_tokens, cost.cached_tokens) == (2_000_000, 1_800_000)
    assert cost.usd == pytest.approx(float(expected.total_price)) == pytest.approx(0.69)  # was $1.50


def test_cache_writes_are_stored_and_priced_at_the_cache_write_rate(store, emulator):
    line = orjson.dumps({"custom_id": "c", "result": {"type": "succeeded", "message": {
        "content": [{"type": "text", "text": "A"}],
        "usage": {"input_tokens": 100, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 4_000,
                  "output_tokens": 50}}}})
    job = _store_usage(store, emulator, "anthropic", "claude-haiku-4-5", [line] * 10)
    cost, = actual_cost(PriceBook(), "anthropic", store.usage_by_model(job.id))
    expected = calc_price(Usage(input_tokens=41_000, cache_write_tokens=40_000, output_tokens=500),
                          "claude-haiku-4-5", provider_id="anthropic", price_context={"processing": "batch"})
    assert cost.cache_write_tokens == 40_000
    assert cost.usd == pytest.approx(float(expected.total_price))


def test_a_long_gemini_25_pro_prompt_is_priced_at_its_tier_per_request(store, emulator):
    long = orjson.dumps({"key": "k", "response": {
        "candidates": [{"content": {"parts": [{"text": "A"}], "role": "model"}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 600_000, "candidatesTokenCount": 2_000, "totalTokenCount": 602_000}}})
    short = orjson.dumps({"key": "k", "response": {
        "candidates": [{"content": {"parts": [{"text": "A"}], "role": "model"}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 150_000, "candidatesTokenCount": 1_000, "totalTokenCount": 151_000}}})
    job = _store_usage(store, emulator, "gemini", "gemini-2.5-pro", [long, short, short])
    cost, = actual_cost(PriceBook(), "gemini", store.usage_by_model(job.id))

    def genai(inp: int, out: int) -> float:
        return float(calc_price(Usage(input_tokens=inp, output_tokens=out), "gemini-2.5-pro", provider_id="google",
                                price_context={"processing": "batch"}).total_price)

    assert genai(600_000, 2_000) == pytest.approx(0.765)  # was priced $0.385, below its tier
    # each request at its own tier: the two short prompts stay below 200k though they add up to 300k
    assert cost.usd == pytest.approx(genai(600_000, 2_000) + 2 * genai(150_000, 1_000))


@pytest.mark.parametrize("provider, model", [("openai", "gpt-4o-mini"), ("anthropic", "claude-haiku-4-5"),
                                             ("anthropic", "claude-3-5-haiku-latest"), ("gemini", "gemini-2.5-pro"),
                                             ("gemini", "gemini-2.5-flash"), ("groq", "llama-3.1-8b-instant"),
                                             ("mistral", "mistral-small-latest")])
@pytest.mark.parametrize("inp, cached, written, out", [(1_000, 0, 0, 100), (50_000, 40_000, 0, 700),
                                                       (300_000, 100_000, 5_000, 3_000)])
def test_one_request_costs_what_genai_prices_says_live(provider, model, inp, cached, written, out):
    from batchery.pricing import _provider_id

    price = PriceBook().price(provider, model)
    usage = Usage(input_tokens=inp, cache_read_tokens=cached, cache_write_tokens=written, output_tokens=out)
    expected = calc_price(usage, model, provider_id=_provider_id(provider)).total_price
    assert price.cost(inp, out, False, cached, written) == pytest.approx(float(expected), rel=1e-9)


def test_no_price_tier_of_a_provider_batchery_speaks_starts_at_or_below_the_tier_floor():
    from genai_prices import data_snapshot
    from genai_prices.types import ModelPrice, TieredPrices

    from batchery.pricing import TIER_FLOOR, _provider_id

    starts = []
    for provider in data_snapshot.get_snapshot().providers:
        if provider.id not in {_provider_id(p) for p in PROVIDERS}:
            continue
        for model in provider.models:
            prices = [model.prices] if isinstance(model.prices, ModelPrice) else [c.prices for c in model.prices]
            for price in prices + [v.prices for v in model.price_variants or ()]:
                starts += [t.start for v in vars(price).values() if isinstance(v, TieredPrices) for t in v.tiers]
    assert starts and min(starts) > TIER_FLOOR


def test_max_cost_stops_a_job_of_long_prompts_priced_at_their_tier(store, emulator):
    # Two Gemini 2.5 Pro requests of about 220k prompt tokens each: about $0.14 each at the base
    # batch price, $0.28 at the >200k tier. A $0.20 cap must stop before the first is sent.
    adapter = get_provider("gemini", base_url=emulator.base_url("gemini"), api_key="test-key")
    words = "abc " * 220_000
    engine = start_job(store, emulator, [{"prompt": f"{i} {words}", "max_tokens": 100} for i in range(2)],
                       model="gemini-2.5-pro", provider=adapter, batch_size=1)
    engine.max_cost, engine.prices = 0.20, PriceBook()
    progress = engine.run()
    assert progress.capped and "projected $0.27" in progress.stopped
    assert sum(emulator.stats()["batches_created"].values()) == 0


# -- exact token counts offline -------------------------------------------------------------------

# Counts from bpe-openai's own Rust tokenizer over the same texts (an independent implementation).
_TEXTS = {
    "zh": ("批处理接口把大量请求一次提交，价格只有实时调用的一半。结果通常在二十四小时内返回，每一行都有自己的编号，所以顺序可以还原。", 37),
    "ja": (("バッチAPIは大量のリクエストをまとめて送信し、料金はリアルタイム呼び出しの半額です。結果は通常二十四時間以内に返され、"
            "各行には番号が付いているので順序を復元できます。"), 59),
    "ru": (("Пакетный интерфейс отправляет множество запросов за один раз, и цена вдвое ниже, чем у обычных вызовов. "
            "Результаты обычно приходят в течение суток, а у каждой строки есть свой номер, поэтому порядок можно "
            "восстановить."), 54),
    "en": (("The batch interface sends many requests at once, at half the price of live calls. Results usually come "
            "back within a day, and every line carries its own id, so the order can be restored."), 40),
}


def test_openai_token_counts_are_exact_offline_with_the_bundled_o200k(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-cache"))

    def no_network(*args, **kwargs):
        raise AssertionError("token counting must not use the network")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    count, method = tokens.counter("openai", "gpt-4o-mini")
    assert method == "tiktoken o200k_base"
    for text, exact in _TEXTS.values():
        assert count(text) == exact
    # the approximation it replaces is far too low on Chinese and Japanese
    assert tokens.approximate_tokens(_TEXTS["zh"][0]) < 0.5 * _TEXTS["zh"][1]
    assert tokens.approximate_tokens(_TEXTS["ja"][0]) < 0.5 * _TEXTS["ja"][1]


def test_a_batch_lines_prompt_tokens_are_the_general_estimates_whatever_the_body_shape():
    provider = get_provider("openai", base_url="http://127.0.0.1:9/v1", api_key="k")
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": _TEXTS["zh"][0]}]
    bodies = [  # plain chat bodies (read directly) and others (walked), which must count alike
        {"model": "gpt-4o-mini", "messages": chat, "max_completion_tokens": 64, "temperature": 0.5},
        {"model": "gpt-4o-mini", "messages": chat, "user": "someone", "stop": ["\n\n"]},
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi", "name": "Ann"}]},
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
        {"model": "gpt-4o-mini", "messages": [], "response_format": {"type": "json_object"}},
    ]
    count, method = tokens.counter("openai", "gpt-4o-mini")
    lines = [orjson.dumps(provider.wrap(f"k{i}", body)) for i, body in enumerate(bodies)]
    expected = [tokens.estimate_request({"raw": body}, count, method).input_tokens for body in bodies]
    assert list(tokens.line_tokens(provider, "gpt-4o-mini", lines)) == expected
    assert expected[0] == count("Be brief.") + count(_TEXTS["zh"][0]) + 2 * 4 + 3


def test_the_bundled_encoding_is_refused_when_its_file_is_not_tiktokens(monkeypatch):
    from tiktoken_ext import openai_public

    real = openai_public.o200k_base

    def tampered():  # tiktoken expecting another file than the one bundled
        original = openai_public.load_tiktoken_bpe
        openai_public.load_tiktoken_bpe = lambda url, expected_hash=None: original(url, "0" * 64)
        try:
            return real()
        finally:
            openai_public.load_tiktoken_bpe = original

    tokens.bundled_o200k.cache_clear()
    monkeypatch.setattr(openai_public, "o200k_base", tampered)
    try:
        assert tokens.bundled_o200k() is None  # so counts fall back to the stated approximation
    finally:
        tokens.bundled_o200k.cache_clear()


def test_status_prices_jobs_from_the_store_price_cache_without_importing_genai_prices(store, emulator):
    import subprocess
    import sys

    start_job(store, emulator, [{"prompt": "a"}, {"prompt": "b"}], model="gpt-4o-mini").run()
    command = [sys.executable, "-X", "importtime", "-m", "batchery", "status", "--json", "--store", str(store.dir)]
    first = subprocess.run(command, capture_output=True, text=True, check=True)
    again = subprocess.run(command, capture_output=True, text=True, check=True)
    assert "genai_prices" in first.stderr  # looked up once, then kept in the store's price cache
    assert "genai_prices" not in again.stderr
    assert orjson.loads(again.stdout)[0]["cost"] == orjson.loads(first.stdout)[0]["cost"]
    assert orjson.loads(again.stdout)[0]["cost"]["usd"] > 0


def test_the_bundled_ranks_are_what_tiktoken_itself_reads_from_the_file(tmp_path):
    """The bundle is read by line number (its ranks are 0, 1, 2...), not by parsing each rank."""
    import gzip
    from importlib.resources import files

    from tiktoken.load import load_tiktoken_bpe

    plain = tmp_path / "o200k_base.tiktoken"
    plain.write_bytes(gzip.decompress((files("batchery.data") / "o200k_base.tiktoken.gz").read_bytes()))
    assert tokens.bundled_o200k()._mergeable_ranks == load_tiktoken_bpe(str(plain))
