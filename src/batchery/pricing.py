"""Prices as data, estimated and actual cost.

Prices come from `genai-prices` (its offline, bundled data; `update_prices` is never called, so
pricing never touches the network). Where genai-prices has a batch price for a model (its
`processing = batch` price variant), that is the batch price; where it has none, the batch price is
the live price less the provider's batch discount (its adapter's `limits`), and the result says so.

Models genai-prices lacks (fine-tunes, new releases, the emulator's test models) can be priced in
a TOML override file, `prices.toml` in the store directory (paths.resolve_store_dir) or
the file given with `--prices`. An override wins over genai-prices. Amounts are USD per million
tokens; the batch prices are optional (default: live less the provider's batch discount)::

    [openai."ft:gpt-4o-mini:acme"]
    input = 0.30
    output = 1.20
    batch_input = 0.15
    batch_output = 0.60

A model found in neither is "unknown price": its cost is None, never 0.

Costs use the whole usage, as genai-prices prices it: input tokens served from the provider's
prompt cache at the cache-read price, tokens written to it at the cache-write price, and prices
that rise with a request's prompt length (Gemini 2.5 Pro above 200k tokens: every token of that
request at the higher price). Tiers are per request, so usage is summed per prompt length above
TIER_FLOOR (see Store.usage_by_model) and each sum priced at its own tier.

Flex (providers with a flex tier: OpenAI, Gemini): genai-prices' `service_tier = flex` price where
it has one, else the batch price (OpenAI prices flex "at Batch API rates"; Gemini's flex and batch
are both half price); in the override file `flex_input` / `flex_output`, by default the batch prices.
Answers are priced at the tier their response names (Store outcomes' source: batch, live or flex).

genai-prices takes about 0.3 s to import and look a model up, so the rates found are kept in
`prices-cache.json` in the store directory, keyed by the genai-prices data installed and the day:
`batchery status` then prices jobs without importing it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from .errors import ConfigError

PRICES_FILE = "prices.toml"
CACHE_FILE = "prices-cache.json"
UNKNOWN = "unknown price"
# No price tier of the providers batchery speaks starts at or below this many prompt tokens
# (tests/test_pricing.py checks genai-prices' data): requests up to it are summed together.
TIER_FLOOR = 32_000

# genai-prices price keys batchery's usage has counts for (USD per million tokens, or per thousand requests)
_PARTS = {"input_mtok": "input", "output_mtok": "output", "cache_read_mtok": "cache_read",
          "cache_write_mtok": "cache_write", "requests_kcount": "requests"}
_CACHE_FORMAT = 2  # 2: flex rates

# A rate: (base USD per unit, ((prompt tokens above which, USD per unit), ...)). As in genai-prices,
# a tier is a cliff: a request whose prompt passes its start pays that rate for every token.
Rate = tuple[float, tuple[tuple[int, float], ...]]


class Tokens(NamedTuple):
    """Usage summed over `requests` requests whose prompts all pick the same price tier: `prompt` is
    their prompt length in tokens (0 when at or below TIER_FLOOR, below every tier)."""

    prompt: int
    requests: int
    input: int  # all input tokens, cached ones included
    output: int
    cache_read: int = 0  # part of input served from the prompt cache
    cache_write: int = 0  # part of input written to the prompt cache


@dataclass(frozen=True)
class Price:
    """Live and batch rates of a model (input, output, and where known cache read, cache write,
    per request), and where each came from."""

    provider: str
    model: str
    live: dict[str, Rate]
    batch_rates: dict[str, Rate]
    source: str  # "genai-prices (...)" or the override file
    batch_source: str  # how the batch price was found
    flex_rates: dict[str, Rate] | None = None  # None: the provider has no flex tier
    flex_source: str = ""  # how the flex price was found

    @property
    def input(self) -> float:
        return self.live["input"][0]

    @property
    def output(self) -> float:
        return self.live["output"][0]

    @property
    def batch_input(self) -> float:
        return self.batch_rates["input"][0]

    @property
    def batch_output(self) -> float:
        return self.batch_rates["output"][0]

    @property
    def tiered(self) -> bool:
        return any(rate[1] for rate in self.live.values())

    def rates(self, mode: str) -> dict[str, Rate]:
        """The rates of a mode: batch, live or flex (a provider without a flex tier: batch)."""
        if mode == "live":
            return self.live
        return self.flex_rates if mode == "flex" and self.flex_rates is not None else self.batch_rates

    def cost(self, input_tokens: int, output_tokens: int, batch: bool = True, cache_read: int = 0,
             cache_write: int = 0, prompt: int | None = None, requests: int = 1, tier: str | None = None) -> float:
        """USD for these tokens, at batch or live prices (or those of `tier`: batch, live, flex);
        `prompt` (default: input_tokens, one request) picks the prompt-length tier."""
        rates = self.rates(tier or ("batch" if batch else "live"))
        at = input_tokens if prompt is None else prompt

        def rate(part: str) -> float:
            base, tiers = rates.get(part) or rates["input"]
            for start, price in reversed(tiers):
                if at > start:
                    return price
            return base

        plain = max(input_tokens - cache_read - cache_write, 0)
        usd = (plain * rate("input") + cache_read * rate("cache_read") + cache_write * rate("cache_write")
               + output_tokens * rate("output")) / 1e6
        if "requests" in rates:
            usd += requests * rates["requests"][0] / 1e3
        return usd

    def of(self, tokens: Tokens, batch: bool = True, tier: str | None = None) -> float:
        return self.cost(tokens.input, tokens.output, batch, tokens.cache_read, tokens.cache_write,
                         tokens.prompt, tokens.requests, tier)


@dataclass(frozen=True)
class Cost:
    """A cost for some tokens: batch and live USD, or None for both when the price is unknown."""

    provider: str
    model: str
    usage: tuple[Tokens, ...]
    price: Price | None
    mode: str = "batch"  # the price these tokens were bought at: batch, live or flex

    @property
    def input_tokens(self) -> int:
        return sum(t.input for t in self.usage)

    @property
    def output_tokens(self) -> int:
        return sum(t.output for t in self.usage)

    @property
    def cached_tokens(self) -> int:
        return sum(t.cache_read for t in self.usage)

    @property
    def cache_write_tokens(self) -> int:
        return sum(t.cache_write for t in self.usage)

    @property
    def known(self) -> bool:
        return self.price is not None

    @property
    def batch(self) -> float | None:
        return None if self.price is None else sum(self.price.of(t, True) for t in self.usage)

    @property
    def live(self) -> float | None:
        return None if self.price is None else sum(self.price.of(t, False) for t in self.usage)

    @property
    def flex(self) -> float | None:
        """At the flex tier's prices; None also when the provider has none."""
        p = self.price
        return None if p is None or p.flex_rates is None else sum(p.of(t, tier="flex") for t in self.usage)

    @property
    def usd(self) -> float | None:
        """What these tokens cost in the mode they were bought in."""
        p = self.price
        return None if p is None else sum(p.of(t, tier=self.mode) for t in self.usage)

    def as_dict(self) -> dict:
        p = self.price
        return {"model": self.model, "mode": self.mode, "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens, "cached_tokens": self.cached_tokens,
                "cache_write_tokens": self.cache_write_tokens, "usd": self.usd, "batch_usd": self.batch,
                "live_usd": self.live,
                "price": UNKNOWN if p is None else {
                    "input_per_mtok": p.input, "output_per_mtok": p.output, "batch_input_per_mtok": p.batch_input,
                    "batch_output_per_mtok": p.batch_output,
                    "cache_read_per_mtok": (p.live.get("cache_read") or p.live["input"])[0],
                    "batch_cache_read_per_mtok": (p.batch_rates.get("cache_read") or p.batch_rates["input"])[0],
                    "tiered_by_prompt_length": p.tiered, "source": p.source, "batch_source": p.batch_source,
                    **_flex_dict(p)}, **({} if p is None or p.flex_rates is None else {"flex_usd": self.flex})}


def _flex_dict(p: Price) -> dict:
    if p.flex_rates is None:
        return {}
    return {"flex_input_per_mtok": p.flex_rates["input"][0], "flex_output_per_mtok": p.flex_rates["output"][0],
            "flex_source": p.flex_source}


def format_usd(amount: float | None) -> str:
    if amount is None:
        return UNKNOWN
    if amount < 0.01:
        return f"${amount:.6f}"
    return f"${amount:,.4f}" if amount < 1 else f"${amount:,.2f}"


class PriceBook:
    """Looks up prices: the override file first, then genai-prices (through the store's price
    cache, when there is a store). One per command."""

    def __init__(self, overrides: Path | None = None, store_dir: Path | None = None):
        path = overrides
        if path is None and store_dir is not None and (store_dir / PRICES_FILE).exists():
            path = store_dir / PRICES_FILE
        self.overrides_path = path
        self.store_dir = store_dir
        self._overrides = _load_overrides(path) if path is not None else {}
        self._cache: dict[tuple[str, str], Price | None] = {}
        self._disk: dict[str, Any] | None = None
        for provider, models in self._overrides.items():  # a bad entry is an error whichever model runs
            for model in models:
                self._override(provider, model)

    def price(self, provider: str, model: str) -> Price | None:
        key = (provider, model)
        if key not in self._cache:
            self._cache[key] = self._override(provider, model) or self._genai(provider, model)
        return self._cache[key]

    def cost(self, provider: str, model: str, input_tokens: int, output_tokens: int, cache_read: int = 0,
             cache_write: int = 0) -> Cost:
        """The cost of one request's tokens (its prompt length picks the tier)."""
        tokens = Tokens(input_tokens, 1, input_tokens, output_tokens, cache_read, cache_write)
        return Cost(provider, model, (tokens,), self.price(provider, model))

    def _genai(self, provider: str, model: str) -> Price | None:
        """genai-prices' rates for a model, read from the store's price cache when they are there
        (same genai-prices data, same day), else looked up and added to it."""
        if self.store_dir is None:
            return _genai_price(provider, model)
        if self._disk is None:
            self._disk = _read_cache(self.store_dir / CACHE_FILE)
        name = f"{provider}/{model}"
        if name in self._disk["prices"]:
            return _price_from_json(self._disk["prices"][name])
        price = _genai_price(provider, model)
        self._disk["prices"][name] = None if price is None else _price_to_json(price)
        _write_cache(self.store_dir / CACHE_FILE, self._disk)
        return price

    def _override(self, provider: str, model: str) -> Price | None:
        entry = self._overrides.get(provider, {}).get(model)
        if entry is None:
            return None
        where = f"{self.overrides_path} [{provider}.\"{model}\"]"
        if "input" not in entry or "output" not in entry:
            raise ConfigError(f"{where}: needs numeric 'input' and 'output' (USD per million tokens)")
        live_in, live_out = _amount(entry, "input", where), _amount(entry, "output", where)
        keep = 1 - (_discount(provider) or 0.0)
        if "batch_input" in entry or "batch_output" in entry:
            b_in = _amount(entry, "batch_input", where) if "batch_input" in entry else live_in * keep
            b_out = _amount(entry, "batch_output", where) if "batch_output" in entry else live_out * keep
            batch_source = f"override file {self.overrides_path}"
        else:
            b_in, b_out = live_in * keep, live_out * keep
            batch_source = _discount_note(provider)
        flex: dict[str, Rate] | None = None  # flex_input / flex_output, by default the batch prices
        if _has_flex(provider):
            flex = {part: (_amount(entry, f"flex_{part}", where) if f"flex_{part}" in entry else amount, ())
                    for part, amount in (("input", b_in), ("output", b_out))}
        flex_source = f"override file {self.overrides_path}" if {"flex_input", "flex_output"} & set(entry) \
            else "the batch price"
        return Price(provider, model, {"input": (live_in, ()), "output": (live_out, ())},
                     {"input": (b_in, ()), "output": (b_out, ())}, f"override file {self.overrides_path}",
                     batch_source, flex, flex_source)


def actual_cost(book: PriceBook, provider: str, usage: list[tuple]) -> list[Cost]:
    """Cost of returned usage, given as Store.usage_by_model rows (model, mode, prompt, requests,
    input, output, cache-read and cache-write tokens): batch answers at batch prices, live answers
    at live prices, one Cost per model and mode."""
    groups: dict[tuple[str, str], list[Tokens]] = {}
    for model, mode, prompt, requests, inp, out, cache_read, cache_write in usage:
        groups.setdefault((model, mode), []).append(
            Tokens(prompt, requests, inp or 0, out or 0, cache_read or 0, cache_write or 0))
    return [Cost(provider, model, tuple(tokens), book.price(provider, model), mode)
            for (model, mode), tokens in groups.items()]


def total(costs: list[Cost], batch: bool | None = True) -> float | None:
    """Sum of the costs (at batch prices, live prices, or with batch=None each in its own mode), or
    None when any of them has an unknown price (a partial sum would mislead)."""
    amounts = [c.usd if batch is None else c.batch if batch else c.live for c in costs]
    return None if any(a is None for a in amounts) else sum(amounts)  # type: ignore[arg-type]


def _amount(entry: dict, name: str, where: str) -> float:
    """A price: a finite number of USD per million tokens, never negative (a negative price would
    let --max-cost pass whatever it should stop)."""
    value = entry[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
        raise ConfigError(f"{where}: needs numeric '{name}' (USD per million tokens, 0 or more), got {value!r:.40}")
    return float(value)


def _provider_id(provider: str) -> str:
    """genai-prices' name for a provider (its adapter's price_id)."""
    from .providers import PROVIDERS, provider_class

    return (provider_class(provider).price_id if provider in PROVIDERS else "") or provider


def _discount(provider: str) -> float | None:
    """The provider's batch discount, from its adapter; None without a Batch API (or adapter)."""
    from .providers import PROVIDERS, provider_class

    adapter = provider_class(provider) if provider in PROVIDERS else None
    return adapter.limits.discount if adapter is not None and adapter.has_batch_api else None


def _has_flex(provider: str) -> bool:
    """Whether the provider's adapter has a flex tier (`--mode flex`)."""
    from .providers import PROVIDERS, provider_class

    return provider in PROVIDERS and provider_class(provider).flex_tier


def _discount_note(provider: str) -> str:
    discount = _discount(provider)
    if discount is None:
        return "live price (no batch discount known)"
    return f"live price less the {discount:.0%} {provider} batch discount (its adapter's limits)"


def _load_overrides(path: Path) -> dict[str, dict[str, dict]]:
    import tomllib  # only with a price file: `status` reads none on most stores

    from .inputs import read_file

    raw = read_file(path, "price file", ConfigError)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a valid TOML price file ({exc})") from None
    for provider, models in data.items():
        if not isinstance(models, dict) or not all(isinstance(v, dict) for v in models.values()):
            raise ConfigError(f"{path}: expected tables like [{provider}.\"MODEL\"] with input/output prices")
    return data


def _genai_price(provider: str, model: str) -> Price | None:
    """The model's rates from genai-prices (its bundled data, never the network): live, and batch
    from its `processing = batch` variant where it has one, else live less the batch discount."""
    from genai_prices import Usage, calc_price

    provider_id = _provider_id(provider)
    now = datetime.now(UTC)
    try:  # the lookup genai-prices does for every price: model by name (and alias), at this date
        found = calc_price(Usage(input_tokens=0, output_tokens=0), model, provider_id=provider_id,
                           genai_request_timestamp=now)
    except LookupError:
        return None
    info, where = found.model, found.provider
    live = _rates(info.get_prices(now))
    if "input" not in live or "output" not in live:
        return None  # priced by characters, audio or images only: not by the tokens batchery counts
    batch = _variant(info, where, now, "processing", "batch")
    batch_source = "genai-prices batch price"
    if batch is None:
        keep = 1 - (_discount(provider) or 0.0)
        batch = {part: (base * keep, tuple((start, p * keep) for start, p in tiers))
                 for part, (base, tiers) in live.items()}
        batch_source = _discount_note(provider) + "; genai-prices has no batch price for this model"
    flex, flex_source = None, ""
    if _has_flex(provider):
        flex, flex_source = _variant(info, where, now, "service_tier", "flex"), "genai-prices flex price"
        if flex is None:  # OpenAI prices flex "at Batch API rates"; Gemini's flex is half price, as batch
            flex, flex_source = batch, "the batch price; genai-prices has no flex price for this model"
    return Price(provider, model, live, batch, f"genai-prices ({info.id})", batch_source, flex, flex_source)


def _variant(info: Any, where: Any, now: datetime, key: str, value: str) -> dict[str, Rate] | None:
    """A model's rates under a genai-prices price variant (processing=batch, service_tier=flex), if
    it has that variant in force."""
    found = any(v.when.get(key) == value and (v.constraint is None or v.constraint.active(now))
                for v in info.price_variants or ()) and any(m is info for m in where.models)
    return _rates(info.get_prices(now, {key: value})) if found else None


def _rates(model_price: Any) -> dict[str, Rate]:
    """The rates batchery's usage needs from a genai-prices ModelPrice (Decimal or TieredPrices each)."""
    out: dict[str, Rate] = {}
    for key, part in _PARTS.items():
        value = getattr(model_price, key, None)
        if value is None:
            continue
        if hasattr(value, "tiers"):
            out[part] = (float(value.base), tuple((int(t.start), float(t.price)) for t in value.tiers))
        else:
            out[part] = (float(value), ())
    return out


def _data_version() -> str | None:
    """Which genai-prices data is installed (its data file's path, size and time), found without
    importing it; with the day, since prices change on dates."""
    import importlib.util

    spec = importlib.util.find_spec("genai_prices")
    if spec is None or spec.origin is None:
        return None
    try:
        info = os.stat(Path(spec.origin).with_name("data.py"))
    except OSError:
        return None
    day = datetime.now(UTC).date().isoformat()
    return f"{_CACHE_FORMAT}:{spec.origin}:{info.st_size}:{info.st_mtime_ns}:{day}"


def _read_cache(path: Path) -> dict[str, Any]:
    import orjson

    version = _data_version()
    try:
        data = orjson.loads(path.read_bytes())
        if isinstance(data, dict) and version is not None and data.get("version") == version \
                and isinstance(data.get("prices"), dict):
            return data
    except (OSError, orjson.JSONDecodeError):
        pass
    return {"version": version, "prices": {}}


def _write_cache(path: Path, data: dict[str, Any]) -> None:
    """Best effort: a store on a read-only disk is priced all the same, only not faster next time."""
    import orjson

    if data.get("version") is None:
        return
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        temporary.write_bytes(orjson.dumps(data))
        os.replace(temporary, path)
    except OSError:
        temporary.unlink(missing_ok=True)


def _price_to_json(price: Price) -> dict:
    return {"live": price.live, "batch": price.batch_rates, "source": price.source,
            "batch_source": price.batch_source, "provider": price.provider, "model": price.model,
            "flex": price.flex_rates, "flex_source": price.flex_source}


def _price_from_json(data: dict | None) -> Price | None:
    if data is None:
        return None

    def rates(raw: dict) -> dict[str, Rate]:
        return {part: (float(base), tuple((int(s), float(p)) for s, p in tiers)) for part, (base, tiers) in raw.items()}

    return Price(data["provider"], data["model"], rates(data["live"]), rates(data["batch"]), data["source"],
                 data["batch_source"], data["flex"] and rates(data["flex"]), data["flex_source"])


@dataclass
class Estimate:
    """What a request file would cost: counts, tokens and cost per model (distinct requests only:
    identical lines are sent once)."""

    provider: str
    requests: int
    distinct: int
    input_tokens: int
    output_tokens: int
    token_method: str
    output_method: str
    costs: list[Cost]

    @property
    def batch(self) -> float | None:
        return total(self.costs, batch=True)

    @property
    def live(self) -> float | None:
        return total(self.costs, batch=False)

    @property
    def flex(self) -> float | None:
        """At flex prices (None: unknown, or the provider has no flex tier)."""
        amounts = [c.flex for c in self.costs]
        return None if not _has_flex(self.provider) or None in amounts else sum(amounts)  # type: ignore[arg-type]

    def as_dict(self) -> dict:
        return {"provider": self.provider, "requests": self.requests, "distinct_requests": self.distinct,
                "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "token_method": self.token_method, "output_tokens_method": self.output_method,
                "batch_usd": self.batch, "live_usd": self.live,
                **({"flex_usd": self.flex} if _has_flex(self.provider) else {}),
                "models": [c.as_dict() for c in self.costs]}

    def lines(self) -> list[str]:
        """The human-readable report, shared by `estimate` and `run --dry-run`."""
        out = [f"requests:           {self.requests:,} ({self.distinct:,} distinct; identical requests are sent once)",
               f"input tokens:       {self.input_tokens:,} ({self.token_method})",
               f"output tokens:      {self.output_tokens:,} (estimated from: {self.output_method})"]
        for c in self.costs:
            if c.price is None:
                out.append(f"  {c.model}: {UNKNOWN} (not in genai-prices; add it to {PRICES_FILE} or --prices)")
            else:
                flex = "" if c.price.flex_rates is None else f", flex {format_usd(c.flex)}"
                out.append(f"  {c.model}: batch {format_usd(c.batch)}{flex}, live {format_usd(c.live)}"
                           f" [{c.price.source}; batch: {c.price.batch_source}"
                           + ("" if c.price.flex_rates is None else f"; flex: {c.price.flex_source}") + "]")
        flex = f" | flex {format_usd(self.flex)}" if _has_flex(self.provider) else ""
        out.append(f"estimated cost:     batch {format_usd(self.batch)}{flex} | live {format_usd(self.live)}")
        return out


def estimate(source, provider, model: str | None, book: PriceBook, raw: bool = False) -> Estimate:
    """Estimate a request source ((where, object) pairs, as inputs.read_requests yields) for a
    provider adapter: validated exactly as `run` validates it, so a bad line fails here too."""
    from .requests import parse_for
    from .tokens import counter as token_counter
    from .tokens import estimate_request

    seen: set[str] = set()
    per_model: dict[str, dict[int, list[int]]] = {}
    counters: dict[str, tuple] = {}
    methods: set[str] = set()
    output_methods: set[str] = set()
    n = 0
    for where, obj in source:
        n += 1
        _, _, canonical, key = parse_for(provider, obj, model, raw, where)
        if key in seen:
            continue
        seen.add(key)
        name = canonical["model"]
        if name not in counters:
            counters[name] = token_counter(provider.name, name)
        tokens = estimate_request(canonical, *counters[name])
        methods.add(tokens.method)
        output_methods.add(tokens.output_method)
        _add(per_model.setdefault(name, {}), tokens.input_tokens, tokens.output_tokens)
    costs = [Cost(provider.name, name, _summed(sums), book.price(provider.name, name))
             for name, sums in per_model.items()]
    return Estimate(provider.name, n, len(seen), sum(c.input_tokens for c in costs),
                    sum(c.output_tokens for c in costs), ", ".join(sorted(methods)) or "none",
                    ", ".join(sorted(output_methods)) or "none", costs)


def batch_line_cost(book: PriceBook, provider, model: str, lines) -> Cost:
    """Projected cost of a batch from its stored provider lines (what --max-cost checks before each submit)."""
    import orjson

    from .tokens import counter as token_counter
    from .tokens import estimate_request

    count, method = token_counter(provider.name, model)
    sums: dict[int, list[int]] = {}
    for line in lines:
        body = orjson.loads(line).get(provider.line_body_field) or {}
        tokens = estimate_request({"raw": body}, count, method)
        _add(sums, tokens.input_tokens, tokens.output_tokens)
    return Cost(provider.name, model, _summed(sums), book.price(provider.name, model))


def _add(sums: dict[int, list[int]], input_tokens: int, output_tokens: int) -> None:
    """Add one request to per-tier sums (requests, input, output), as Store.usage_by_model sums."""
    row = sums.setdefault(input_tokens if input_tokens > TIER_FLOOR else 0, [0, 0, 0])
    row[0] += 1
    row[1] += input_tokens
    row[2] += output_tokens


def _summed(sums: dict[int, list[int]]) -> tuple[Tokens, ...]:
    return tuple(Tokens(prompt, n, inp, out) for prompt, (n, inp, out) in sorted(sums.items()))
