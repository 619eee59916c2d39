"""`batchery eval`: run an evaluation from its YAML config, follow it, and rebuild its report."""

from __future__ import annotations

import os
import sys
from pathlib import Path

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
def run(config_path: Path = ConfigArg,
        no_wait: bool = typer.Option(False, "--no-wait", help="Submit every stage that can be submitted now and "
                                     "return; run it again (or `batchery collect`) to move the evaluation on.")
        ) -> None:
    """Run the evaluation, or resume it: finished stages are read from the store, not sent again.

    Stages overlap: every candidate's generation is submitted at once, judges and pairwise judges
    start as soon as the answers are in, re-asks as soon as the verdicts are in."""
    from dotenv import load_dotenv

    from ..eval.pipeline import run_evaluation
    from .progress import make_progress

    load_dotenv(Path.cwd() / ".env")
    config, store = _open(config_path)
    progress = make_progress()
    with store:
        try:
            result = run_evaluation(config, store, on_stage=progress.stage, on_progress=progress, wait=not no_wait)
        finally:
            progress.close()
        if result is None:  # --no-wait, and stages are open at the providers
            _print_open(config, store, config_path)
            return
    data, report = result
    _print_leaderboard(data)
    print(f"\n{_windows(data)}", file=sys.stderr)
    print(f"report: {os.path.relpath(report)}    every answer: {os.path.relpath(report.parent / 'items.jsonl')}",
          file=sys.stderr)


def _windows(data: dict) -> str:
    """How many batch windows the evaluation waited: its longest chain of stages that sent batches."""
    count, stages = data.get("batch_windows", 0), data.get("window_stages", [])
    if not count:
        return "done: nothing sent, every stage was read back from the store"
    chain = " → ".join(", ".join(names) for names in stages)
    return f"done in {count} batch window{'s' if count != 1 else ''} ({chain})"


def _print_open(config, store, config_path: Path) -> None:
    """After --no-wait: what is open at the providers, what waits for it, and how to go on."""
    from ..eval.pipeline import EvalRunner

    rows = EvalRunner(config, store, send=False).plan()
    for row in rows:
        print(_stage_line(row, store), file=sys.stderr)
    print(f"\nsubmitted; the evaluation goes on when `batchery eval run {config_path}` runs again (or "
          f"`batchery collect --all` collects the stage jobs); `batchery eval status {config_path} --refresh` "
          "asks the providers how far they are", file=sys.stderr)


def _stage_line(row: dict, store, report: dict | None = None) -> str:
    who = f"{row['stage']}: {row['who']}"
    if row["job"] is None:
        return f"{who} | waiting for {', '.join(row['waiting_for'])}"
    if row["state"] == "not started":
        return f"{who} | not started | {row['job']}"
    if report is None:
        from ..control import job_status

        report = job_status(store, store.get_job(row["job"])).report()
    counts = ", ".join(f"{v:,} {k}" for k, v in sorted(report["requests"].items()))
    batches = ", ".join(f"{n} {state}" for state, n in sorted(report["batch_states"].items())) or "none"
    from ..pricing import format_usd

    return (f"{who} | {row['state']} | {counts} | batches: {batches} | {format_usd(report['cost']['usd'])} | "
            f"{row['job']}")


@eval_app.command("status")
def status(config_path: Path = ConfigArg,
           as_json: bool = typer.Option(False, "--json", help="Machine-readable output: every stage, with its "
                                        "job's report."),
           refresh: bool = typer.Option(False, "--refresh", help="Ask the providers where the open batches "
                                        "stand first (one call per provider), and record it.")
           ) -> None:
    """Every stage of the evaluation: its job's state, requests by outcome, batches, cost so far;
    a stage whose inputs are not in yet is shown waiting for them."""
    from ..control import job_status
    from ..eval.pipeline import EvalRunner
    from ..pricing import PriceBook

    config, store = _open(config_path)
    with store:
        jobs = [j for j in store.list_jobs() if j.name.startswith(config.name + ".")]
        if refresh:
            from .collect import refresh_store

            refresh_store(store, jobs)
        if not jobs and not as_json:
            print(f"evaluation '{config.name}' has not started: run `batchery eval run {config_path}`")
            return
        book = PriceBook(store_dir=store.dir)
        rows = EvalRunner(config, store, send=False).plan()
        reports = {j.name: job_status(store, j, book).report() for j in jobs}
        if as_json:
            import orjson

            stages = [{**row, "report": reports.get(row["job"])} for row in rows]
            listed = [{"stage": name[len(config.name) + 1:].split(".")[0], **report}
                      for name, report in reports.items()]
            sys.stdout.buffer.write(orjson.dumps({"evaluation": config.name, "stages": stages, "jobs": listed},
                                                 option=orjson.OPT_INDENT_2) + b"\n")
            return
        for row in rows:
            print(_stage_line(row, store, reports.get(row["job"])))


@eval_app.command("report")
def report(config_path: Path = ConfigArg,
           out: Path | None = typer.Option(None, help="Report folder (default: the config's 'out').")) -> None:
    """Rebuild the report from the store, sending nothing (every stage must have finished)."""
    from ..eval.config import check_folder
    from ..eval.pipeline import run_evaluation

    config, store = _open(config_path)
    if out is not None:
        check_folder(out, "--out")
        config.out = out
    with store:
        result = run_evaluation(config, store, send=False)
    assert result is not None  # it waits for nothing: every stage is read back
    data, path = result
    _print_leaderboard(data)
    print(f"\nreport: {os.path.relpath(path)}", file=sys.stderr)


@eval_app.command("rank")
def rank(config_path: Path = typer.Argument(..., help="The ranking's YAML file (items, trait, judges, "
                                            "comparisons_per_item, reversed_share)."),
         no_wait: bool = typer.Option(False, "--no-wait", help="Submit every judge's comparisons and return; run "
                                      "it again (or `batchery collect`) to collect them and rank.")) -> None:
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
            result = run_ranking(config, store, on_stage=progress.stage, on_progress=progress, wait=not no_wait)
            if result is None:  # --no-wait, and comparisons are open at the providers
                for job in store.list_jobs():
                    if job.name.startswith(config.name + "."):
                        stage, *who, _digest = job.name[len(config.name) + 1:].split(".")
                        row = {"stage": stage, "who": ".".join(who), "job": job.name, "state": job.state}
                        print(_stage_line(row, store), file=sys.stderr)
    finally:
        progress.close()
    if result is None:
        print(f"\nsubmitted; the ranking goes on when `batchery eval rank {config_path}` runs again (or "
              "`batchery collect --all` collects the comparison jobs)", file=sys.stderr)
        return
    data, path = result
    pairwise = data["pairwise"]
    print(f"\n{data['title']} — {len(pairwise['bradley_terry'])} items", file=sys.stderr)
    for rank_no, row in enumerate(pairwise["bradley_terry"], 1):
        print(f"{rank_no:>4}  {row['item']:<30} {row['strength']:+.2f}  [{row['lo']:+.2f}, {row['hi']:+.2f}]  "
              f"Elo {row['elo']:.0f}", file=sys.stderr)
    bias = pairwise["position_bias"]
    print(f"position bias: first shown won {bias['share_first'] or 0:.0%} of decisive judgements "
          f"(p = {bias['p_value'] if bias['p_value'] is not None else float('nan'):.3g})", file=sys.stderr)
    templates = data.get("templates") or []
    for row in templates if len(templates) > 1 else []:  # pairwiseLLM's grid: each template's own bias
        consistency = "n/a" if row.get("consistency") is None else f"{row['consistency']:.0%}"
        print(f"  template {row['template']}: first shown won {row['share_first'] or 0:.0%} "
              f"(p = {row['p_value'] if row['p_value'] is not None else float('nan'):.3g}), reverse consistency "
              f"{consistency} over {row['reversed_pairs']} reversed pairs", file=sys.stderr)
    print(f"\nreport: {os.path.relpath(path)}", file=sys.stderr)


def register(app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval")
