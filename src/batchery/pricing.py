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
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from .errors import ConfigError

PRICES_FILE = "prices.toml"
UNKNOWN = "unknown price"

# Prices are read at a small request size: some models have tiered prices above 128k/200k prompt tokens.
_PROBE = 1_000


@dataclass(frozen=True)
class Price:
    """USD per million tokens, live and batch, and where each came from."""

    provider: str
    model: str
    input: float
    output: float
    batch_input: float
    batch_output: float
    source: str  # "genai-prices" or the override file
    batch_source: str  # how the batch price was found

    def cost(self, input_tokens: int, output_tokens: int, batch: bool = True) -> float:
        if batch:
            return (input_tokens * self.batch_input + output_tokens * self.batch_output) / 1e6
        return (input_tokens * self.input + output_tokens * self.output) / 1e6


@dataclass(frozen=True)
class Cost:
    """A cost for some tokens: batch and live USD, or None for both when the price is unknown."""

    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    price: Price | None
    mode: str = "batch"  # the price these tokens were bought at: batch or live

    @property
    def known(self) -> bool:
        return self.price is not None

    @property
    def batch(self) -> float | None:
        return None if self.price is None else self.price.cost(self.input_tokens, self.output_tokens, True)

    @property
    def live(self) -> float | None:
        return None if self.price is None else self.price.cost(self.input_tokens, self.output_tokens, False)

    @property
    def usd(self) -> float | None:
        """What these tokens cost in the mode they were bought in."""
        return self.batch if self.mode == "batch" else self.live

    def as_dict(self) -> dict:
        p = self.price
        return {"model": self.model, "mode": self.mode, "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens, "usd": self.usd, "batch_usd": self.batch, "live_usd": self.live,
                "price": UNKNOWN if p is None else {
                    "input_per_mtok": p.input, "output_per_mtok": p.output, "batch_input_per_mtok": p.batch_input,
                    "batch_output_per_mtok": p.batch_output, "source": p.source, "batch_source": p.batch_source}}


def format_usd(amount: float | None) -> str:
    if amount is None:
        return UNKNOWN
    if amount < 0.01:
        return f"${amount:.6f}"
    return f"${amount:,.4f}" if amount < 1 else f"${amount:,.2f}"


class PriceBook:
    """Looks up prices: the override file first, then genai-prices. One per command."""

    def __init__(self, overrides: Path | None = None, store_dir: Path | None = None):
        path = overrides
        if path is None and store_dir is not None and (store_dir / PRICES_FILE).exists():
            path = store_dir / PRICES_FILE
        self.overrides_path = path
        self._overrides = _load_overrides(path) if path is not None else {}
        self._cache: dict[tuple[str, str], Price | None] = {}
        for provider, models in self._overrides.items():  # a bad entry is an error whichever model runs
            for model in models:
                self._override(provider, model)

    def price(self, provider: str, model: str) -> Price | None:
        key = (provider, model)
        if key not in self._cache:
            self._cache[key] = self._override(provider, model) or _genai_price(provider, model)
        return self._cache[key]

    def cost(self, provider: str, model: str, input_tokens: int, output_tokens: int) -> Cost:
        return Cost(provider, model, input_tokens, output_tokens, self.price(provider, model))

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
        return Price(provider, model, live_in, live_out, b_in, b_out, f"override file {self.overrides_path}",
                     batch_source)


def actual_cost(book: PriceBook, provider: str, usage: list[tuple[str, str, int, int]]) -> list[Cost]:
    """Cost of returned usage, given as (model, mode, input tokens, output tokens): batch answers at
    batch prices, live answers at live prices."""
    return [Cost(provider, model, inp or 0, out or 0, book.price(provider, model), mode)
            for model, mode, inp, out in usage]


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


def _discount(provider: str) -> float | None:
    """The provider's batch discount, from its adapter; None without a Batch API (or adapter)."""
    from .providers import PROVIDERS, provider_class

    adapter = provider_class(provider) if provider in PROVIDERS else None
    return adapter.limits.discount if adapter is not None and adapter.has_batch_api else None


def _discount_note(provider: str) -> str:
    discount = _discount(provider)
    if discount is None:
        return "live price (no batch discount known)"
    return f"live price less the {discount:.0%} {provider} batch discount (its adapter's limits)"


def _load_overrides(path: Path) -> dict[str, dict[str, dict]]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: price file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a price file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a valid TOML price file ({exc})") from None
    for provider, models in data.items():
        if not isinstance(models, dict) or not all(isinstance(v, dict) for v in models.values()):
            raise ConfigError(f"{path}: expected tables like [{provider}.\"MODEL\"] with input/output prices")
    return data


def _genai_price(provider: str, model: str) -> Price | None:
    from genai_prices import Usage, calc_price

    from .providers import PROVIDERS, provider_class

    provider_id = (provider_class(provider).price_id if provider in PROVIDERS else "") or provider
    usage = Usage(input_tokens=_PROBE, output_tokens=_PROBE)
    now = datetime.now(UTC)
    try:
        live = calc_price(usage, model, provider_id=provider_id, genai_request_timestamp=now)
        batch = calc_price(usage, model, provider_id=provider_id, genai_request_timestamp=now,
                           price_context={"processing": "batch"})
    except LookupError:
        return None
    scale = Decimal(1_000_000) / _PROBE
    live_in, live_out = float(live.input_price * scale), float(live.output_price * scale)
    has_batch = any(v.when.get("processing") == "batch" and (v.constraint is None or v.constraint.active(now))
                    for v in live.model.price_variants or ()) and any(m is live.model for m in live.provider.models)
    if has_batch:
        b_in, b_out = float(batch.input_price * scale), float(batch.output_price * scale)
        batch_source = "genai-prices batch price"
    else:
        keep = 1 - (_discount(provider) or 0.0)
        b_in, b_out = live_in * keep, live_out * keep
        batch_source = _discount_note(provider) + "; genai-prices has no batch price for this model"
    return Price(provider, model, live_in, live_out, b_in, b_out, f"genai-prices ({live.model.id})", batch_source)


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

    def as_dict(self) -> dict:
        return {"provider": self.provider, "requests": self.requests, "distinct_requests": self.distinct,
                "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "token_method": self.token_method, "output_tokens_method": self.output_method,
                "batch_usd": self.batch, "live_usd": self.live, "models": [c.as_dict() for c in self.costs]}

    def lines(self) -> list[str]:
        """The human-readable report, shared by `estimate` and `run --dry-run`."""
        out = [f"requests:           {self.requests:,} ({self.distinct:,} distinct; identical requests are sent once)",
               f"input tokens:       {self.input_tokens:,} ({self.token_method})",
               f"output tokens:      {self.output_tokens:,} (estimated from: {self.output_method})"]
        for c in self.costs:
            if c.price is None:
                out.append(f"  {c.model}: {UNKNOWN} (not in genai-prices; add it to {PRICES_FILE} or --prices)")
            else:
                out.append(f"  {c.model}: batch {format_usd(c.batch)}, live {format_usd(c.live)}"
                           f" [{c.price.source}; batch: {c.price.batch_source}]")
        out.append(f"estimated cost:     batch {format_usd(self.batch)} | live {format_usd(self.live)}")
        return out


def estimate(source, provider, model: str | None, book: PriceBook, raw: bool = False) -> Estimate:
    """Estimate a request source ((where, object) pairs, as inputs.read_requests yields) for a
    provider adapter: validated exactly as `run` validates it, so a bad line fails here too."""
    from .requests import parse_for
    from .tokens import counter as token_counter
    from .tokens import estimate_request

    seen: set[str] = set()
    per_model: dict[str, list[int]] = {}
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
        sums = per_model.setdefault(name, [0, 0])
        sums[0] += tokens.input_tokens
        sums[1] += tokens.output_tokens
    costs = [book.cost(provider.name, name, inp, out) for name, (inp, out) in per_model.items()]
    return Estimate(provider.name, n, len(seen), sum(c.input_tokens for c in costs),
                    sum(c.output_tokens for c in costs), ", ".join(sorted(methods)) or "none",
                    ", ".join(sorted(output_methods)) or "none", costs)


def batch_line_cost(book: PriceBook, provider, model: str, lines) -> Cost:
    """Projected cost of a batch from its stored provider lines (what --max-cost checks before each submit)."""
    import orjson

    from .tokens import counter as token_counter
    from .tokens import estimate_request

    count, method = token_counter(provider.name, model)
    inp = out = 0
    for line in lines:
        body = orjson.loads(line).get(provider.line_body_field) or {}
        tokens = estimate_request({"raw": body}, count, method)
        inp += tokens.input_tokens
        out += tokens.output_tokens
    return book.cost(provider.name, model, inp, out)
