"""`batchery eval`: run an evaluation from its YAML config, follow it, and rebuild its report."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

eval_app = typer.Typer(help="LLM-as-judge evaluations: spec compliance, juries, pairwise ranking, reports.",
                       no_args_is_help=True)
ConfigArg = typer.Argument(..., help="The evaluation's YAML file (spec, inputs, candidates, judges, jury, mode).")


def _open(config_path: Path):
    from ..eval.config import load_config
    from ..store import Store

    config = load_config(config_path)
    return config, Store(config.store)


def _print_leaderboard(data: dict) -> None:
    def pct(x):
        return "  n/a" if x is None else f"{x:5.1%}"

    print(f"\n{data['title']} — {data['spec']}, jury: {data['jury_rule']} of {len(data['judges'])} judges",
          file=sys.stderr)
    print(f"{'rank':>4}  {'candidate':<28} {'compliance':>10}  {'95% CI':<17} {'n':>5} {'ties':>5} {'unparsed':>8} "
          f"{'failed':>6}", file=sys.stderr)
    for rank, row in enumerate(data["leaderboard"], 1):
        print(f"{rank:>4}  {row['candidate']:<28} {pct(row['rate']):>10}  [{pct(row['lo'])}, {pct(row['hi'])}]  "
              f"{row['n']:>5} {row.get('ties', 0):>5} {row['unparsed']:>8} {row['failed']:>6}", file=sys.stderr)
    calibrated = [(row["candidate"], row["calibrated"]) for row in data["leaderboard"] if row.get("calibrated")]
    for name, c in calibrated:
        print(f"calibrated with {c['labels']} human label(s): {name} {pct(c['estimate'])}  "
              f"[{pct(c['low'])}, {pct(c['high'])}]", file=sys.stderr)
    if data.get("pairwise"):
        order = ", ".join(f"{r['item']} ({r['strength']:+.2f})" for r in data["pairwise"]["bradley_terry"])
        print(f"pairwise (Bradley–Terry): {order}", file=sys.stderr)
        flagged = [r["judge"] for r in data["pairwise"].get("judges", []) if r.get("flagged")]
        if flagged:
            print(f"position bias flagged for: {', '.join(map(str, flagged))}", file=sys.stderr)


@eval_app.command("run")
def run(config_path: Path = ConfigArg) -> None:
    """Run the evaluation, or resume it: finished stages are read from the store, not sent again."""
    from dotenv import load_dotenv

    from ..eval.pipeline import run_evaluation
    from .progress import make_progress

    load_dotenv(Path.cwd() / ".env")
    config, store = _open(config_path)
    progress = make_progress()
    try:
        with store:
            data, report = run_evaluation(config, store, on_stage=progress.stage, on_progress=progress)
    finally:
        progress.close()
    _print_leaderboard(data)
    print(f"\nreport: {os.path.relpath(report)}    every answer: {os.path.relpath(report.parent / 'items.jsonl')}",
          file=sys.stderr)


@eval_app.command("status")
def status(config_path: Path = ConfigArg,
           as_json: bool = typer.Option(False, "--json", help="Machine-readable output: one report per stage job.")
           ) -> None:
    """The evaluation's stage jobs: requests by outcome, tokens and cost so far."""
    from ..control import job_status
    from ..pricing import PriceBook, format_usd

    config, store = _open(config_path)
    with store:
        book = PriceBook(store_dir=store.dir)
        jobs = [j for j in store.list_jobs() if j.name.startswith(config.name + ".")]
        if as_json:
            import orjson

            reports = [{"stage": job.name[len(config.name) + 1:].split(".")[0],
                        **job_status(store, job, book).report()} for job in jobs]
            sys.stdout.buffer.write(orjson.dumps({"evaluation": config.name, "jobs": reports},
                                                 option=orjson.OPT_INDENT_2) + b"\n")
            return
        if not jobs:
            print(f"evaluation '{config.name}' has not started: run `batchery eval run {config_path}`")
            return
        for job in jobs:
            r = job_status(store, job, book).report()
            counts = ", ".join(f"{v:,} {k}" for k, v in sorted(r["requests"].items()))
            print(f"{job.name}: {r['state']} | {r['provider']} {r['model']} | {counts} | "
                  f"{format_usd(r['cost']['usd'])}")


@eval_app.command("report")
def report(config_path: Path = ConfigArg,
           out: Optional[Path] = typer.Option(None, help="Report folder (default: the config's 'out').")) -> None:
    """Rebuild the report from the store, sending nothing (every stage must have finished)."""
    from ..eval.config import check_folder
    from ..eval.pipeline import run_evaluation

    config, store = _open(config_path)
    if out is not None:
        check_folder(out, "--out")
        config.out = out
    with store:
        data, path = run_evaluation(config, store, send=False)
    _print_leaderboard(data)
    print(f"\nreport: {os.path.relpath(path)}", file=sys.stderr)


@eval_app.command("rank")
def rank(config_path: Path = typer.Argument(..., help="The ranking's YAML file (items, trait, judges, "
                                            "comparisons_per_item, reversed_share).")) -> None:
    """Rank items (e.g. writing samples) on a described trait from sampled pairwise judgements."""
    from dotenv import load_dotenv

    from ..eval.config import RankingConfig, load_config
    from ..eval.ranking import run_ranking
    from ..store import Store
    from .progress import make_progress

    load_dotenv(Path.cwd() / ".env")
    config = load_config(config_path, RankingConfig)
    progress = make_progress()
    try:
        with Store(config.store) as store:
            data, path = run_ranking(config, store, on_stage=progress.stage, on_progress=progress)
    finally:
        progress.close()
    pairwise = data["pairwise"]
    print(f"\n{data['title']} — {len(pairwise['bradley_terry'])} items", file=sys.stderr)
    for rank_no, row in enumerate(pairwise["bradley_terry"], 1):
        print(f"{rank_no:>4}  {row['item']:<30} {row['strength']:+.2f}  [{row['lo']:+.2f}, {row['hi']:+.2f}]  "
              f"Elo {row['elo']:.0f}", file=sys.stderr)
    bias = pairwise["position_bias"]
    print(f"position bias: first shown won {bias['share_first'] or 0:.0%} of decisive judgements "
          f"(p = {bias['p_value'] if bias['p_value'] is not None else float('nan'):.3g})", file=sys.stderr)
    print(f"\nreport: {os.path.relpath(path)}", file=sys.stderr)


def register(app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval")
