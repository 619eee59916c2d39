"""`batchery estimate`: requests, tokens and cost of a request file, before anything is sent."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

PricesOpt = typer.Option(None, "--prices", help="Price override file (TOML; default: prices.toml in the store "
                         "directory). For models genai-prices lacks; see `batchery.pricing`.")


def estimate_file(input: Path, provider: str, model: str | None, raw: bool, prices: Path | None,
                  store: Path | None, check: Callable[[Any], None] | None = None, base_url: str | None = None):
    """The estimate `estimate` and `run --dry-run` print. Makes no provider call and writes nothing.
    `check` (a dry run's) is given the adapter, to refuse what the run would refuse."""
    from ..inputs import read_requests
    from ..pricing import PriceBook, estimate
    from ..providers import get_provider
    from ..store import resolve_store_dir

    # The adapter only validates and encodes here; it never calls the provider, so no key is needed.
    adapter = get_provider(provider, base_url=base_url, api_key="unused-for-estimates")
    if check is not None:
        check(adapter)
    book = PriceBook(prices, store_dir=resolve_store_dir(store))
    return estimate(read_requests(input), adapter, model, book, raw=raw)


def print_estimate(est, as_json: bool) -> None:
    if as_json:
        import orjson

        sys.stdout.buffer.write(orjson.dumps(est.as_dict(), option=orjson.OPT_INDENT_2) + b"\n")
        return
    print(f"provider:           {est.provider}")
    for line in est.lines():
        print(line)


def estimate_command(
    input: Path = typer.Argument(..., help="Requests: JSONL or CSV, as for `run`."),
    provider: str = typer.Option("openai", help="Provider the job would run on."),
    model: str | None = typer.Option(None, help="Model for requests that do not name one."),
    raw: bool = typer.Option(False, "--raw", help="Lines are in the provider's own batch format."),
    prices: Path | None = PricesOpt,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    store: Path | None = typer.Option(None, "--store", help="Store directory, where prices.toml is looked for "
                                         "(default: $BATCHERY_HOME, else the per-user data folder)."),
) -> None:
    """Estimate requests, tokens and cost (batch and live) of a request file. Sends nothing."""
    print_estimate(estimate_file(input, provider, model, raw, prices, store), as_json)


def register(app: typer.Typer) -> None:
    app.command("estimate")(estimate_command)
