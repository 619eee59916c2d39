"""The evaluation report: one self-contained HTML page plus the numbers as JSON and CSV.

``write_report(data, out_dir)`` takes the summary the evaluation pipeline produces (plain,
JSON-serialisable data; see ``write_report``) and writes

- ``report.html``: a single file that needs no network to view (inline CSS, inline SVG plots
  drawn by matplotlib, one inline script that filters the table of answers, no external
  scripts, fonts or images), rendered by a Jinja2 template with autoescaping on. The table of
  answers (``items``) is rendered as HTML rows, each opening (``<details>``) on the input, the
  answer and every judge's explanation, so it reads and prints without the script; at most
  ``MAX_REPORT_ITEMS`` answers are embedded (an even sample, said on the page) and long texts are
  cut at ``MAX_REPORT_TEXT`` characters: items.jsonl holds them all;
- ``summary.json``: the data as given;
- ``leaderboard.csv``, ``statements.csv``, ``sections.csv``, ``agreement.csv``, ``costs.csv``
  and, when a pairwise stage ran, ``pairwise.csv`` and ``judge_bias.csv`` (one row per judge);
  with your own prompt templates, ``template_bias.csv`` (agreement and position bias per template);
  with ``parquet: true`` in the config, each table also as Parquet beside its CSV (same name and
  columns, values typed: numbers, booleans and nulls instead of text).

Any optional part may be missing, ``None`` or empty: the report then says "not measured"
instead of failing. A price that is not known is shown as "unknown price", never as $0.
Output is deterministic: the same data gives byte-identical files.

matplotlib is imported inside ``write_report`` (Agg backend), so importing this module is cheap.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..pricing import UNKNOWN as UNKNOWN_PRICE
from .numbers import clip01
from .numbers import finite_number as _num
from .plots import Plots

__all__ = ["write_report"]

NOT_MEASURED = "not measured"

LEADERBOARD_COLUMNS = ["rank", "candidate", "n", "compliant", "ties", "unparsed", "failed", "rate", "lo", "hi",
                       "method", "statements", "likert_mean", "likert_lo", "likert_hi", "generations", "failure_rate",
                       "rate_failed_as_noncompliant", "calibrated_estimate", "calibrated_lo", "calibrated_hi",
                       "calibrated_labels"]
STATEMENT_COLUMNS = ["statement", "section", "candidate", "n", "ties", "unparsed", "rate", "lo", "hi", "method"]
SECTION_COLUMNS = ["section", "candidate", "n", "ties", "unparsed", "rate", "lo", "hi", "method", "statements"]
AGREEMENT_COLUMNS = ["measure", "judge_a", "judge_b", "kappa", "lo", "hi", "n"]
PAIRWISE_COLUMNS = ["rank", "item", "strength", "lo", "hi", "se", "elo", "elo_lo", "elo_hi", "wins", "losses",
                    "ties", "n"]
JUDGE_BIAS_COLUMNS = ["judge", "decisive", "first", "second", "tie", "share_first", "lo", "hi", "first_both",
                      "second_both", "p_value", "p_adjusted", "flagged", "reversed_pairs", "consistency",
                      "order_log_odds", "order_lo", "order_hi"]
TEMPLATE_COLUMNS = ["template", "raters", "fleiss_kappa", "fleiss_lo", "fleiss_hi", "pairwise_kappa",
                    "pairwise_kappa_lo", "pairwise_kappa_hi", "n", "first", "second", "tie", "unparsed", "share_first",
                    "lo", "hi", "p_value", "p_adjusted", "flagged", "reversed_pairs", "consistency"]

# How each interval is made, in words for the report (keys: the ``method`` fields of stats.py).
METHODS = {
    "clopper-pearson": "Clopper–Pearson (exact; inputs of one statement)",
    "korn-graubard": "Korn–Graubard over statements (cluster-robust)",
    "cluster-t": "cluster-robust t over statements",
    "cluster-logit-t": "cluster-robust t over statements, on the logit of the scale",
}
COST_COLUMNS = ["stage", "provider", "model", "requests", "input_tokens", "output_tokens", "usd"]

MAX_REPORT_ITEMS = 1000  # answers embedded in report.html; items.jsonl has every one
MAX_REPORT_TEXT = 4000  # characters of an input, answer or explanation shown in the page

# Mini dot-and-whisker plots in the leaderboard table (hand-written SVG, user units = pixels).
_WHISKER_W, _WHISKER_H, _WHISKER_PAD = 200, 18, 6


# --------------------------------------------------------------------------- formatting


def _pct(x: Any) -> str:
    v = _num(x)
    return NOT_MEASURED if v is None else f"{100 * v:.1f}%"


def _ci(lo: Any, hi: Any) -> str:
    a, b = _num(lo), _num(hi)
    if a is None or b is None:
        return NOT_MEASURED
    return f"{100 * a:.1f}–{100 * b:.1f}%"


def _kappa(x: Any) -> str:
    v = _num(x)
    return NOT_MEASURED if v is None else f"{v:.2f}"


def _kappa_reading(x: Any) -> str:
    """Landis & Koch's conventional labels."""
    v = _num(x)
    if v is None:
        return ""
    if v < 0:
        return "worse than chance"
    for bound, label in ((0.2, "slight"), (0.4, "fair"), (0.6, "moderate"), (0.8, "substantial")):
        if v <= bound:
            return label
    return "almost perfect"


def _int(x: Any) -> str:
    v = _num(x)
    return "" if v is None else f"{int(v):,}"


def _usd(x: Any) -> str:
    v = _num(x)
    if v is None:
        return UNKNOWN_PRICE
    if v != 0 and abs(v) < 0.01:
        return f"${v:.4f}"
    return f"${v:,.2f}"


def _fixed(x: Any, digits: int = 2) -> str:
    v = _num(x)
    return NOT_MEASURED if v is None else f"{v:.{digits}f}"


def _p_value(x: Any) -> str:
    v = _num(x)
    if v is None:
        return NOT_MEASURED
    return "p < 0.001" if v < 0.001 else f"p = {v:.3f}"


def _rows(x: Any) -> list[dict]:
    return [r for r in (x or []) if isinstance(r, dict)]


# --------------------------------------------------------------------------- SVG helpers


def _method(x: Any) -> str:
    return METHODS.get(str(x), str(x)) if x else ""


def _range(lo: Any, hi: Any, digits: int = 2) -> str:
    a, b = _num(lo), _num(hi)
    return NOT_MEASURED if a is None or b is None else f"{a:.{digits}f} – {b:.{digits}f}"


def _whisker(rate: Any, lo: Any, hi: Any) -> dict | None:
    """Coordinates for a row's dot-and-whisker plot on a fixed 0–100% axis (None: no rate)."""
    r = _num(rate)
    if r is None:
        return None

    def x(v: float) -> float:
        return round(_WHISKER_PAD + clip01(v) * (_WHISKER_W - 2 * _WHISKER_PAD), 2)

    out = {"w": _WHISKER_W, "h": _WHISKER_H, "mid": _WHISKER_H / 2, "x": x(r),
           "ticks": [x(t) for t in (0, 0.25, 0.5, 0.75, 1)], "ci": None}
    a, b = _num(lo), _num(hi)
    if a is not None and b is not None:
        out["ci"] = (x(a), x(b))
    return out


# --------------------------------------------------------------------------- view model


def _strongest_first(row: dict) -> float:
    """Sort key: Bradley–Terry strength, highest first, rows without one last."""
    strength = _num(row.get("strength"))
    return -(strength if strength is not None else -math.inf)


def _who(row: dict) -> dict:
    return {k: str(row.get(k) or "") for k in ("name", "provider", "model")}


def _judge_rows(pairwise: dict) -> list[dict]:
    """Per-judge position bias, reverse consistency and the model's first-position effect."""
    order = {str(o.get("judge")): o for o in _rows(pairwise.get("order_effect"))}
    rows: list[dict[str, Any]] = []
    for r in _rows(pairwise.get("judges")):
        o = order.get(str(r.get("judge")), {})
        rows.append({
            "judge": str(r.get("judge") if r.get("judge") is not None else "(all)"),
            "first": _int(r.get("first")), "second": _int(r.get("second")), "tie": _int(r.get("tie")),
            "share_first": _pct(r.get("share_first")), "ci": _ci(r.get("lo"), r.get("hi")),
            "discordant": f"{_int(r.get('first_both')) or 0} / {_int(r.get('second_both')) or 0}",
            "p": _p_value(r.get("p_value")), "flagged": r.get("flagged") is True,
            "consistency": _pct(r.get("consistency")), "reversed_pairs": _int(r.get("reversed_pairs")),
            "order": _pct(o.get("share_first")), "order_ci": _ci(o.get("share_lo"), o.get("share_hi")),
        })
    return rows


def _view(data: dict, plots: Plots) -> dict:
    candidates = [_who(r) for r in _rows(data.get("candidates"))]
    judges = [_who(r) for r in _rows(data.get("judges"))]
    board = _rows(data.get("leaderboard"))
    statements = _rows(data.get("statements"))
    sections = _rows(data.get("sections"))
    has_likert = any(_num(r.get("likert_mean")) is not None for r in board)

    leaderboard = [{
        "rank": i,
        "candidate": str(r.get("candidate", "")),
        "rate": _pct(r.get("rate")),
        "ci": _ci(r.get("lo"), r.get("hi")),
        "method": _method(r.get("method")),
        "whisker": _whisker(r.get("rate"), r.get("lo"), r.get("hi")),
        "n": _int(r.get("n")),
        "compliant": _int(r.get("compliant")),
        "ties": _int(r.get("ties")),
        "unparsed": _int(r.get("unparsed")),
        "failed": _int(r.get("failed")),
        "likert": _fixed(r.get("likert_mean")),
        "likert_ci": _range(r.get("likert_lo"), r.get("likert_hi")),
        "failure": _pct(r.get("failure_rate")),
        "failure_ci": _ci(r.get("failure_lo"), r.get("failure_hi")),
        "worst": _pct(r.get("rate_failed_as_noncompliant")),
        "worst_ci": _ci(r.get("rate_failed_as_noncompliant_lo"), r.get("rate_failed_as_noncompliant_hi")),
    } for i, r in enumerate(board, 1)]
    has_ties = any(_num(r.get("ties")) for r in board + statements + sections)
    calibration = _calibration_view(board)

    # Heatmap columns: leaderboard order, then anyone else who appears in the statements.
    cand_order: list[str] = []
    for name in [str(r["candidate"]) for r in leaderboard] + [str(r.get("candidate", "")) for r in statements]:
        if name not in cand_order:
            cand_order.append(name)
    rank = {name: i for i, name in enumerate(cand_order)}
    heatmap = plots.heatmap(statements, cand_order) if statements else None
    n_statements = len({str(r.get("statement", "")) for r in statements})

    # Sections in first-seen order (as in the heatmap), candidates in leaderboard order within each.
    section_order: dict[str, int] = {}
    for r in statements + sections:
        section_order.setdefault(str(r.get("section", "")), len(section_order))
    section_rows = sorted(sections, key=lambda r: (section_order[str(r.get("section", ""))],
                                                   rank.get(str(r.get("candidate", "")), len(rank))))
    section_table = [{
        "section": str(r.get("section", "")), "candidate": str(r.get("candidate", "")), "n": _int(r.get("n")),
        "rate": _pct(r.get("rate")), "ci": _ci(r.get("lo"), r.get("hi")), "method": _method(r.get("method")),
        "ties": _int(r.get("ties")),
    } for r in section_rows]

    agreement = None
    raw_agreement = data.get("agreement")
    if isinstance(raw_agreement, dict):
        agreement = {
            "fleiss": _kappa(raw_agreement.get("fleiss_kappa")),
            "fleiss_ci": _range(raw_agreement.get("fleiss_lo"), raw_agreement.get("fleiss_hi")),
            "fleiss_reading": _kappa_reading(raw_agreement.get("fleiss_kappa")),
            "pairs": [{"a": str(p.get("a", "")), "b": str(p.get("b", "")), "kappa": _kappa(p.get("kappa")),
                       "ci": _range(p.get("lo"), p.get("hi")),
                       "reading": _kappa_reading(p.get("kappa")), "n": _int(p.get("n"))}
                      for p in _rows(raw_agreement.get("pairs"))],
        }

    pairwise = None
    raw_pairwise = data.get("pairwise")
    if isinstance(raw_pairwise, dict):
        bt = _rows(raw_pairwise.get("bradley_terry"))
        bt_sorted = sorted(bt, key=_strongest_first)
        has_elo = any(_num(r.get("elo")) is not None for r in bt)
        bias = got if isinstance(got := raw_pairwise.get("position_bias"), dict) else None
        reverse = (raw_pairwise.get("reverse_consistency")
                   if isinstance(raw_pairwise.get("reverse_consistency"), dict) else None)
        p = _num(bias.get("p_value")) if bias else None
        pairwise = {
            "plot": plots.strengths(bt_sorted),
            "has_elo": has_elo,
            "rows": [{"rank": i, "item": str(r.get("item", "")), "strength": _fixed(r.get("strength")),
                      "lo": _fixed(r.get("lo")), "hi": _fixed(r.get("hi")), "elo": _fixed(r.get("elo"), 0),
                      "elo_ci": _range(r.get("elo_lo"), r.get("elo_hi"), 0),
                      "wins": _int(r.get("wins")), "losses": _int(r.get("losses")), "ties": _int(r.get("ties")),
                      "n": _int(r.get("n"))} for i, r in enumerate(bt_sorted, 1)],
            "judges": _judge_rows(raw_pairwise),
            "clusters": _int(raw_pairwise.get("clusters")),
            "bias": None if bias is None else {
                "first": _int(bias.get("first")), "second": _int(bias.get("second")), "tie": _int(bias.get("tie")),
                "share_first": _pct(bias.get("share_first")), "ci": _ci(bias.get("lo"), bias.get("hi")),
                "first_both": _int(bias.get("first_both")), "second_both": _int(bias.get("second_both")),
                "p": _p_value(bias.get("p_value")),
                "reading": ("" if p is None else
                            "the judges favour one position more than chance explains" if p < 0.05 else
                            "no evidence that the judges favour a position"),
            },
            "reverse": None if reverse is None else {"share": _pct(reverse.get("share")), "n": _int(reverse.get("n"))},
        }

    costs = _rows(data.get("costs"))
    cost_rows = [{
        "stage": str(c.get("stage", "")), "provider": str(c.get("provider", "")), "model": str(c.get("model", "")),
        "requests": _int(c.get("requests")), "input_tokens": _int(c.get("input_tokens")),
        "output_tokens": _int(c.get("output_tokens")), "usd": _usd(c.get("usd")),
        "unknown": _num(c.get("usd")) is None,
    } for c in costs]
    known = [_num(c.get("usd")) for c in costs if _num(c.get("usd")) is not None]
    unknown = len(costs) - len(known)
    if not costs:
        total_usd = total_cell = NOT_MEASURED
    elif not known:
        total_usd = total_cell = UNKNOWN_PRICE
    elif unknown:
        total_cell = f"at least {_usd(sum(known))}"
        total_usd = f"{total_cell} (+ {unknown} stage{'s' if unknown > 1 else ''} at unknown price)"
    else:
        total_usd = total_cell = _usd(sum(known))

    def total(key: str) -> str:
        return _int(sum(_num(c.get(key)) or 0 for c in costs))

    best = leaderboard[0] if leaderboard and leaderboard[0]["whisker"] else None
    return {
        "title": str(data.get("title") or "Evaluation report"),
        "created": str(data.get("created") or ""),
        "spec": str(data.get("spec") or ""),
        "mode": str(data.get("mode") or ""),
        "scale": str(data.get("scale") or ""),
        "jury_rule": str(data.get("jury_rule") or ""),
        "candidates": candidates,
        "judges": judges,
        "best": best,
        "leaderboard": leaderboard,
        "calibration": calibration,
        "has_likert": has_likert,
        "has_ties": has_ties,
        "heatmap": heatmap,
        "n_statements": n_statements,
        "sections": section_table,
        "agreement": agreement,
        "pairwise": pairwise,
        "templates": [{
            "template": str(t.get("template", "")), "raters": ", ".join(str(r) for r in t.get("raters") or []),
            "kappa": _kappa(t.get("fleiss_kappa")), "kappa_ci": _range(t.get("fleiss_lo"), t.get("fleiss_hi")),
            "pairwise_kappa": _kappa(t.get("pairwise_kappa")), "share_first": _pct(t.get("share_first")),
            "ci": _ci(t.get("lo"), t.get("hi")), "p": _p_value(t.get("p_value")), "flagged": t.get("flagged") is True,
            "consistency": _pct(t.get("consistency")), "reversed_pairs": _int(t.get("reversed_pairs")),
        } for t in _rows(data.get("templates"))],
        "costs": cost_rows,
        "cost_totals": {"requests": total("requests"), "input_tokens": total("input_tokens"),
                        "output_tokens": total("output_tokens"), "usd": total_usd, "usd_cell": total_cell,
                        "unknown": unknown},
        "notes": [str(n) for n in (data.get("notes") or [])],
        "not_measured": NOT_MEASURED,
    }


def _calibration_view(board: list[dict]) -> list[dict] | None:
    """Jury-only and label-calibrated rates side by side (None: no human labels configured)."""
    rows = [r for r in board if isinstance(r.get("calibrated"), dict)]
    if not rows:
        return None
    out = []
    for r in rows:
        c = r["calibrated"]
        needed = _num(c.get("labels_needed"))
        target = _num(c.get("target_halfwidth"))
        answers = (_num(r.get("n")) or 0) + (_num(r.get("unparsed")) or 0)
        if needed is None:
            reach = "not reachable with this many answers: evaluate more inputs"
        elif needed > answers:
            reach = f"about {int(needed):,} labels, more than the {int(answers):,} answers: evaluate more inputs"
        else:
            reach = f"about {int(needed):,} labels"
        out.append({
            "candidate": str(r.get("candidate", "")), "jury": _pct(r.get("rate")), "jury_ci": _ci(r.get("lo"), r.get("hi")),
            "estimate": _pct(c.get("estimate")), "ci": _ci(c.get("low"), c.get("high")), "labels": _int(c.get("labels")),
            "lam": _fixed(c.get("lambda")),
            "needed": (NOT_MEASURED if target is None or _num(c.get("estimate")) is None else
                       f"±{100 * target:.0f} pts: {reach}"),
        })
    return out


def _clip_text(text: Any) -> str:
    text = "" if text is None else str(text)
    if len(text) <= MAX_REPORT_TEXT:
        return text
    return text[:MAX_REPORT_TEXT] + f" … [cut at {MAX_REPORT_TEXT:,} characters; the full text is in items.jsonl]"


def _verdict_text(judged: Mapping) -> tuple[str, str]:
    """A judge's verdict as shown, and its colour class."""
    verdict, score = judged.get("verdict"), judged.get("score")
    if verdict is None:
        return ("call failed", "failed") if judged.get("status") == "failed" else ("unparsed", "unparsed")
    text = "compliant" if verdict else "non-compliant"
    return (f"{text} ({score}/5)" if _num(score) is not None else text), text


def _items_view(items: list[dict] | None) -> dict | None:
    """The table of answers: every one, or an even sample of MAX_REPORT_ITEMS when there are more."""
    if not items:
        return None
    total = len(items)
    shown = items if total <= MAX_REPORT_ITEMS else [items[i * total // MAX_REPORT_ITEMS]
                                                     for i in range(MAX_REPORT_ITEMS)]
    labelled = any(item.get("human_label") is not None for item in items)
    rows: list[dict[str, Any]] = []
    for item in shown:
        jury = item.get("jury") or {}
        judges = item.get("judges") or {}
        votes = {v.get("verdict") for v in judges.values() if v.get("verdict") is not None}
        label = item.get("human_label")
        human = ("" if label is None else
                 ("compliant" if label else "non-compliant") if isinstance(label, bool) else f"{label}/5")
        human_compliant = None if label is None else (label if isinstance(label, bool) else label >= 4)
        rows.append({
            "id": str(item.get("id", "")), "candidate": str(item.get("candidate", "")),
            "statement": str(item.get("statement_id", "")), "index": _int(item.get("input_index")),
            "input": _clip_text(item.get("input")), "answer": _clip_text(item.get("answer")),
            "preview": " ".join(str(item.get("input") or "").split())[:120],
            "status": str(item.get("status", "")), "error": str(item.get("error") or ""),
            "verdict": str(jury.get("result", "")),
            "votes": f"{_int(jury.get('yes'))}/{_int(jury.get('votes'))}" if jury.get("votes") else "–",
            "disagree": len(votes) > 1,
            "human": human,
            "human_disagrees": human_compliant is not None and jury.get("compliant") is not None
            and human_compliant != jury.get("compliant"),
            "judges": [{"name": str(name), **dict(zip(("verdict", "cls"), _verdict_text(v))),
                        "confidence": _fixed(v.get("confidence")) if v.get("confidence") is not None else "",
                        "explanation": _clip_text(v.get("explanation"))} for name, v in judges.items()],
        })

    def distinct(key: str) -> list[str]:
        return list(dict.fromkeys(r[key] for r in rows))

    return {"rows": rows, "total": total, "shown": len(rows), "capped": len(rows) < total,
            "candidates": distinct("candidate"), "statements": sorted(set(distinct("statement"))),
            "verdicts": [v for v in ("compliant", "non-compliant", "tie", "unparsed", "failed")
                         if v in {r["verdict"] for r in rows}],
            "labelled": labelled}


# --------------------------------------------------------------------------- files


def _csv_value(x: Any) -> Any:
    if x is None:
        return ""
    if isinstance(x, float) and not math.isfinite(x):
        return ""
    return x


def _write_csv(path: Path, columns: list[str], rows: Iterable[dict], parquet: bool = False) -> None:
    """A table as CSV and, with `parquet`, as Parquet beside it (same name, same columns, typed)."""
    rows = list(rows)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: _csv_value(row.get(c)) for c in columns})
    if parquet:
        from ..columnar import write_table

        write_table(path.with_suffix(".parquet"), columns, rows)
    else:
        path.with_suffix(".parquet").unlink(missing_ok=True)  # stale from an earlier report: it would mislead


def _drop_table(path: Path) -> None:
    """Remove a table an earlier report into the same folder left, in both formats."""
    path.unlink(missing_ok=True)
    path.with_suffix(".parquet").unlink(missing_ok=True)


def _json_safe(x: Any) -> Any:
    """NaN and infinities become null so summary.json is strict JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def _template():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("batchery.eval", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    return env.get_template("report.html.j2")


def _calibrated_columns(row: dict) -> dict:
    c = got if isinstance(got := row.get("calibrated"), dict) else {}
    return {"calibrated_estimate": c.get("estimate"), "calibrated_lo": c.get("low"), "calibrated_hi": c.get("high"),
            "calibrated_labels": c.get("labels")}


def write_report(data: dict, out_dir: Path, items: list[dict] | None = None, parquet: bool = False) -> Path:
    """Write the evaluation report for ``data`` into ``out_dir``; return the path of report.html.

    ``data`` is the evaluation summary (title, created, spec, mode, scale, candidates, judges,
    jury_rule, leaderboard, statements, sections, agreement, pairwise, costs, notes). Optional
    parts may be missing, None or empty; they are reported as "not measured". ``items`` (the
    records of items.jsonl) fill the table of answers. With ``parquet`` every table is also
    written as Parquet beside its CSV (leaderboard.parquet, ...; needs pyarrow).
    """
    import markupsafe

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = data or {}

    plots = Plots()
    view = _view(data, plots)
    view["items"] = _items_view(items)
    for key in ("heatmap",):
        if view[key]:
            view[key] = markupsafe.Markup(view[key])
    if view["pairwise"] and view["pairwise"]["plot"]:
        view["pairwise"]["plot"] = markupsafe.Markup(view["pairwise"]["plot"])
    html = _template().render(**view)
    html_path = out_dir / "report.html"
    html_path.write_text(html, encoding="utf-8")

    (out_dir / "summary.json").write_text(
        json.dumps(_json_safe(data), indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")

    _write_csv(out_dir / "leaderboard.csv", LEADERBOARD_COLUMNS,
               ({"rank": i, **r, **_calibrated_columns(r)} for i, r in enumerate(_rows(data.get("leaderboard")), 1)),
               parquet)
    _write_csv(out_dir / "statements.csv", STATEMENT_COLUMNS, _rows(data.get("statements")), parquet)
    _write_csv(out_dir / "sections.csv", SECTION_COLUMNS, _rows(data.get("sections")), parquet)

    agreement = got if isinstance(got := data.get("agreement"), dict) else None
    agreement_rows: list[dict] = []
    if agreement is not None:
        agreement_rows.append({"measure": "fleiss_kappa", "kappa": agreement.get("fleiss_kappa"),
                               "lo": agreement.get("fleiss_lo"), "hi": agreement.get("fleiss_hi")})
        agreement_rows += [{"measure": "cohen_kappa", "judge_a": p.get("a"), "judge_b": p.get("b"),
                            "kappa": p.get("kappa"), "lo": p.get("lo"), "hi": p.get("hi"), "n": p.get("n")}
                           for p in _rows(agreement.get("pairs"))]
    _write_csv(out_dir / "agreement.csv", AGREEMENT_COLUMNS, agreement_rows, parquet)

    pairwise_path, judges_path = out_dir / "pairwise.csv", out_dir / "judge_bias.csv"
    if isinstance(data.get("pairwise"), dict):
        bt = _rows(data["pairwise"].get("bradley_terry"))
        bt = sorted(bt, key=_strongest_first)
        _write_csv(pairwise_path, PAIRWISE_COLUMNS, ({"rank": i, **r} for i, r in enumerate(bt, 1)), parquet)
        order = {str(o.get("judge")): o for o in _rows(data["pairwise"].get("order_effect"))}
        _write_csv(judges_path, JUDGE_BIAS_COLUMNS, ({
            **r, "order_log_odds": order.get(str(r.get("judge")), {}).get("log_odds"),
            "order_lo": order.get(str(r.get("judge")), {}).get("lo"),
            "order_hi": order.get(str(r.get("judge")), {}).get("hi")} for r in _rows(data["pairwise"].get("judges"))),
            parquet)
    else:
        for stale in (pairwise_path, judges_path):  # a stale file from an earlier report would mislead
            _drop_table(stale)

    templates_path = out_dir / "template_bias.csv"
    if _rows(data.get("templates")):
        _write_csv(templates_path, TEMPLATE_COLUMNS, ({**t, "raters": ";".join(str(r) for r in t.get("raters") or [])}
                                                     for t in _rows(data.get("templates"))), parquet)
    else:
        _drop_table(templates_path)  # stale from an earlier report into the same folder
    _write_csv(out_dir / "costs.csv", COST_COLUMNS, _rows(data.get("costs")), parquet)
    return html_path
