"""The evaluation report: files, self-containment, content, CSVs, determinism, and a real render."""

from __future__ import annotations

import copy
import csv
import json
import random
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import ClassVar

import pytest

from batchery.eval.report import write_report

CANDIDATES = ["claude-sonnet", "gpt-4o", "mistral-large"]
JUDGES = ["judge-gpt", "judge-claude", "judge-gemini"]
SECTIONS = {
    "Stay in bounds": ["comply_with_laws", "no_info_hazards", "respect_creators", "protect_privacy"],
    "Seek the truth": ["avoid_sycophancy", "express_uncertainty", "no_agenda"],
    "Do the best work": ["avoid_factual_errors", "be_thorough_but_efficient", "use_markdown_sparingly"],
}


def make_data(*, seed: int = 7) -> dict:
    """A realistic summary: 3 candidates, 10 statements in 3 sections, a jury of 3, pairwise."""
    rng = random.Random(seed)
    skill = {"claude-sonnet": 0.86, "gpt-4o": 0.79, "mistral-large": 0.64}
    statements, sections = [], []
    for section, names in SECTIONS.items():
        for cand in CANDIDATES:
            sections.append({"section": section, "candidate": cand, "n": 30 * len(names),
                             "rate": skill[cand] - 0.03, "lo": skill[cand] - 0.1, "hi": skill[cand] + 0.04})
        for name in names:
            for cand in CANDIDATES:
                rate = min(1.0, max(0.0, skill[cand] + rng.uniform(-0.2, 0.12)))
                statements.append({"statement": name, "section": section, "candidate": cand, "n": 30,
                                   "rate": rate, "lo": max(0.0, rate - 0.16), "hi": min(1.0, rate + 0.1)})
    leaderboard = [
        {"candidate": c, "n": 300, "compliant": round(300 * skill[c]), "ties": 4 * i, "unparsed": i,
         "failed": 2 - i, "rate": skill[c], "lo": skill[c] - 0.042, "hi": skill[c] + 0.037,
         "method": "korn-graubard", "statements": 10, "likert_mean": None, "likert_lo": None, "likert_hi": None,
         "generations": 302, "failure_rate": (2 - i) / 302, "failure_lo": 0.0, "failure_hi": 0.02,
         "rate_failed_as_noncompliant": round(300 * skill[c]) / (302 - i), "rate_failed_as_noncompliant_lo": 0.5,
         "rate_failed_as_noncompliant_hi": 0.9}
        for i, c in enumerate(CANDIDATES)
    ]
    return {
        "title": "Model Spec compliance — November run",
        "created": "2025-11-23T13:05:00+00:00",
        "spec": "openai-model-spec-2025-09",
        "mode": "batch",
        "scale": "binary",
        "candidates": [{"name": "claude-sonnet", "provider": "anthropic", "model": "claude-sonnet-4-5"},
                       {"name": "gpt-4o", "provider": "openai", "model": "gpt-4o-2024-08-06"},
                       {"name": "mistral-large", "provider": "mistral", "model": "mistral-large-latest"}],
        "judges": [{"name": "judge-gpt", "provider": "openai", "model": "gpt-4.1"},
                   {"name": "judge-claude", "provider": "anthropic", "model": "claude-opus-4-1"},
                   {"name": "judge-gemini", "provider": "google", "model": "gemini-2.5-pro"}],
        "jury_rule": "majority",
        "leaderboard": leaderboard,
        "statements": statements,
        "sections": sections,
        "agreement": {"fleiss_kappa": 0.61, "fleiss_lo": 0.55, "fleiss_hi": 0.67, "pairs": [
            {"a": "judge-gpt", "b": "judge-claude", "kappa": 0.66, "lo": 0.6, "hi": 0.72, "n": 900},
            {"a": "judge-gpt", "b": "judge-gemini", "kappa": 0.58, "lo": 0.51, "hi": 0.65, "n": 900},
            {"a": "judge-claude", "b": "judge-gemini", "kappa": 0.6, "lo": 0.53, "hi": 0.67, "n": 898}]},
        "pairwise": {
            # Deliberately not sorted: the report ranks by strength.
            "bradley_terry": [
                {"item": "gpt-4o", "strength": 0.1, "lo": -0.2, "hi": 0.4, "wins": 52, "losses": 48, "ties": 10,
                 "n": 110, "elo": 1512.0, "elo_lo": 1490.0, "elo_hi": 1533.0},
                {"item": "claude-sonnet", "strength": 0.55, "lo": 0.25, "hi": 0.85, "wins": 66, "losses": 34,
                 "ties": 10, "n": 110, "elo": 1561.0, "elo_lo": 1538.0, "elo_hi": 1584.0},
                {"item": "mistral-large", "strength": -0.65, "lo": -0.98, "hi": -0.32, "wins": 30, "losses": 66,
                 "ties": 14, "n": 110, "elo": 1427.0, "elo_lo": 1401.0, "elo_hi": 1450.0}],
            "position_bias": {"first": 88, "second": 62, "tie": 15, "share_first": 88 / 150, "lo": 0.51, "hi": 0.66,
                              "first_both": 20, "second_both": 8, "p_value": 0.041},
            "judges": [
                {"judge": "judge-claude", "first": 25, "second": 24, "tie": 5, "share_first": 25 / 49, "lo": 0.4,
                 "hi": 0.62, "first_both": 3, "second_both": 3, "p_value": 0.9, "p_adjusted": 1.0, "flagged": False,
                 "reversed_pairs": 25, "consistency": 0.88},
                {"judge": "judge-gemini", "first": 24, "second": 25, "tie": 5, "share_first": 24 / 49, "lo": 0.39,
                 "hi": 0.61, "first_both": 3, "second_both": 4, "p_value": 0.7, "p_adjusted": 1.0, "flagged": False,
                 "reversed_pairs": 25, "consistency": 0.86},
                {"judge": "judge-gpt", "first": 39, "second": 13, "tie": 5, "share_first": 0.75, "lo": 0.62,
                 "hi": 0.85, "first_both": 14, "second_both": 1, "p_value": 0.0004, "p_adjusted": 0.0012,
                 "flagged": True, "reversed_pairs": 25, "consistency": 0.44}],
            "order_effect": [
                {"judge": "judge-gpt", "log_odds": 1.4, "lo": 0.8, "hi": 2.0, "share_first": 0.802,
                 "share_lo": 0.69, "share_hi": 0.881}],
            "reverse_consistency": {"share": 0.82, "n": 75},
            "clusters": 100,
        },
        "costs": [
            {"stage": "generate", "provider": "anthropic", "model": "claude-sonnet-4-5", "requests": 300,
             "input_tokens": 61_200, "output_tokens": 140_900, "usd": 1.1484},
            {"stage": "generate", "provider": "openai", "model": "gpt-4o-2024-08-06", "requests": 300,
             "input_tokens": 58_800, "output_tokens": 121_400, "usd": 0.68},
            {"stage": "judge", "provider": "google", "model": "gemini-2.5-pro", "requests": 900,
             "input_tokens": 1_350_000, "output_tokens": 90_000, "usd": 1.29375},
        ],
        "notes": ["Judged answers exclude 6 requests that failed after 3 attempts.",
                  "Spec source: https://model-spec.openai.com (mentioned as text, not loaded)."],
    }


def make_sparse_data() -> dict:
    """Pairwise not run, agreement not measured, some rates and prices unknown."""
    data = make_data()
    data["pairwise"] = None
    data["agreement"] = None
    data["sections"] = []
    data["leaderboard"][2].update(rate=None, lo=None, hi=None, method=None, compliant=0, n=0)
    for row in data["statements"][:4]:
        row.update(rate=None, lo=None, hi=None)
    data["costs"][2]["usd"] = None
    data["costs"].append({"stage": "judge", "provider": "together", "model": "some/unpriced-model",
                          "requests": 900, "input_tokens": 1_000_000, "output_tokens": 80_000, "usd": None})
    return data


class _Tables(HTMLParser):
    """Cell texts of each <table id=...>, row by row."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._in_body = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and attrs.get("id"):
            self._table = attrs["id"]
            self.tables[self._table] = []
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._table and self._in_body:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "tbody":
            self._in_body = False
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def tables(html: str) -> dict[str, list[list[str]]]:
    parser = _Tables()
    parser.feed(html)
    return parser.tables


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


class _Loads(HTMLParser):
    """Everything in a page that a browser would fetch: tags that load, URL attributes, CSS url()/@import."""

    LOADING_TAGS: ClassVar[set[str]] = {"link", "iframe", "frame", "object", "embed", "img", "image", "video", "audio",
                    "source", "track", "base", "use", "feimage"}

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.svg_uses = 0
        self._in_style = self._in_script = False

    def handle_starttag(self, tag, attrs):
        if tag == "use":
            self.svg_uses += 1  # <use href="#id"> within the page is fine; checked below like any href
        elif tag in self.LOADING_TAGS:
            self.problems.append(f"<{tag}>")
        for name, value in attrs:
            value = (value or "").strip()
            if name in ("href", "xlink:href"):
                if not value.startswith("#"):
                    self.problems.append(f"{tag} {name}={value!r}")
            elif name in ("src", "srcset", "poster", "data", "action", "background", "manifest"):
                self.problems.append(f"{tag} {name}={value!r}")
            elif name == "style" and re.search(r"url\(|@import", value, re.IGNORECASE):
                self.problems.append(f"{tag} style={value!r}")
        self._in_style = tag == "style"
        self._in_script = tag == "script"  # inline only: a src attribute is caught above

    def handle_endtag(self, tag):
        self._in_style = self._in_script = False

    def handle_data(self, data):
        if self._in_style and re.search(r"@import|@font-face|url\(\s*['\"]?(?!#)", data, re.IGNORECASE):
            self.problems.append(f"<style> loads: {data[:200]!r}")
        if self._in_script and re.search(r"fetch\(|XMLHttpRequest|import\(|WebSocket|\.src\s*=|https?:", data):
            self.problems.append(f"<script> loads: {data[:200]!r}")


def assert_self_contained(html: str) -> None:
    """Nothing to load: no external scripts, stylesheets, fonts, frames or images, no script that
    reaches the network; links stay in the page."""
    parser = _Loads()
    parser.feed(html)
    assert parser.problems == []


def test_full_report_files_and_content(tmp_path):
    data = make_data()
    out = write_report(data, tmp_path / "report")
    assert out == tmp_path / "report" / "report.html"
    for name in ["report.html", "summary.json", "leaderboard.csv", "statements.csv", "sections.csv",
                 "agreement.csv", "pairwise.csv", "costs.csv"]:
        assert (tmp_path / "report" / name).is_file(), name

    html = out.read_text(encoding="utf-8")
    assert_self_contained(html)
    assert "<?xml" not in html and "<!DOCTYPE svg" not in html
    assert html.count("<svg") >= 2 + len(CANDIDATES)  # heatmap, Bradley–Terry, one whisker per row
    assert 'class="plot fig1"' in html and "max-width:" in html  # matplotlib SVG scales with the page

    found = tables(html)
    board = found["leaderboard"]
    assert [row[1] for row in board] == CANDIDATES
    assert [row[0] for row in board] == ["1", "2", "3"]
    assert board[0][2] == "86.0%" and board[0][3] == "81.8–89.7%" and board[0][5:8] == ["300", "0", "0"]
    assert board[2][6] == "8"  # the jury's ties, in their own column
    assert "Likert" not in html.split('id="leaderboard"')[1].split("</table>")[0]
    assert "Korn–Graubard over statements" in html  # the interval says how it was made

    # The heatmap keeps its labels as text: every statement and candidate can be read.
    for names in SECTIONS.values():
        for name in names:
            assert f">{name}<" in html
    assert "Fleiss" in html and "0.61" in html and "moderate" in html and "substantial" in html
    assert [r[1] for r in found["pairwise"]] == ["claude-sonnet", "gpt-4o", "mistral-large"]
    assert "1561" in html and "58.7%" in html and "p = 0.041" in html and "82.0%" in html
    assert found["pairwise"][0][4:6] == ["1561", "1538 – 1584"]  # Elo with its interval
    assert "0.60 – 0.72" in html and "95% CI 0.55 – 0.67" in html  # kappas carry intervals
    bias = {row[0]: row for row in found["judge-bias"]}
    assert set(bias) == set(JUDGES)
    assert bias["judge-gpt"][8] == "position bias" and bias["judge-gpt"][7] == "p < 0.001"
    assert bias["judge-claude"][8] == "" and bias["judge-gpt"][6] == "14 / 1"
    assert bias["judge-gpt"][10:] == ["80.2%", "69.0–88.1%"]  # the model's first-position effect
    assert [r[0] for r in found["costs"]] == ["generate", "generate", "judge"]
    assert "$3.12" in html and "unknown price" not in html
    assert 'class="nm"' not in html  # nothing shown as "not measured"
    assert "https://model-spec.openai.com" in html  # a note's text, shown, not loaded

    assert json.loads((tmp_path / "report" / "summary.json").read_text()) == data


def test_csv_tables(tmp_path):
    data = make_data()
    write_report(data, tmp_path)

    columns, rows = read_csv(tmp_path / "leaderboard.csv")
    assert columns == ["rank", "candidate", "n", "compliant", "ties", "unparsed", "failed", "rate", "lo", "hi",
                       "method", "statements", "likert_mean", "likert_lo", "likert_hi", "generations", "failure_rate",
                       "rate_failed_as_noncompliant", "calibrated_estimate", "calibrated_lo", "calibrated_hi",
                       "calibrated_labels"]
    assert [r["candidate"] for r in rows] == CANDIDATES and [r["rank"] for r in rows] == ["1", "2", "3"]
    assert float(rows[0]["rate"]) == 0.86 and rows[0]["likert_mean"] == ""

    columns, rows = read_csv(tmp_path / "statements.csv")
    assert columns == ["statement", "section", "candidate", "n", "ties", "unparsed", "rate", "lo", "hi", "method"]
    assert len(rows) == 10 * 3

    columns, rows = read_csv(tmp_path / "agreement.csv")
    assert columns == ["measure", "judge_a", "judge_b", "kappa", "lo", "hi", "n"]
    assert [r["measure"] for r in rows] == ["fleiss_kappa"] + ["cohen_kappa"] * 3
    assert float(rows[1]["kappa"]) == 0.66 and float(rows[1]["lo"]) == 0.6 and float(rows[0]["hi"]) == 0.67

    columns, rows = read_csv(tmp_path / "pairwise.csv")
    assert columns == ["rank", "item", "strength", "lo", "hi", "se", "elo", "elo_lo", "elo_hi", "wins", "losses",
                       "ties", "n"]
    assert [r["item"] for r in rows] == ["claude-sonnet", "gpt-4o", "mistral-large"]

    columns, rows = read_csv(tmp_path / "judge_bias.csv")
    assert columns[:3] == ["judge", "decisive", "first"] and "p_value" in columns and "flagged" in columns
    gpt = next(r for r in rows if r["judge"] == "judge-gpt")
    assert (gpt["flagged"], float(gpt["p_value"]), float(gpt["order_log_odds"])) == ("True", 0.0004, 1.4)

    columns, rows = read_csv(tmp_path / "costs.csv")
    assert columns == ["stage", "provider", "model", "requests", "input_tokens", "output_tokens", "usd"]
    assert sum(float(r["usd"]) for r in rows) == pytest.approx(3.12215)

    columns, rows = read_csv(tmp_path / "sections.csv")
    assert columns == ["section", "candidate", "n", "ties", "unparsed", "rate", "lo", "hi", "method",
                       "statements"] and len(rows) == 9


def test_missing_parts_say_not_measured(tmp_path):
    (tmp_path / "pairwise.csv").write_text("stale\n")  # from an earlier report into the same folder
    (tmp_path / "judge_bias.csv").write_text("stale\n")
    data = make_sparse_data()
    html = write_report(data, tmp_path).read_text(encoding="utf-8")
    assert_self_contained(html)
    assert not (tmp_path / "pairwise.csv").exists() and not (tmp_path / "judge_bias.csv").exists()

    board = tables(html)["leaderboard"]
    assert [row[1] for row in board] == CANDIDATES
    assert board[2][2] == "not measured" and board[2][3] == "not measured"
    assert "Judge agreement: not measured" in html
    assert "Pairwise comparison: not measured" in html
    assert "Per-section results: not measured" in html

    costs = tables(html)["costs"]
    assert [r[-1] for r in costs] == ["$1.15", "$0.68", "unknown price", "unknown price"]
    assert "at least $1.83 (+ 2 stages at unknown price)" in html
    assert "$0.00" not in html

    _, rows = read_csv(tmp_path / "costs.csv")
    assert [r["usd"] for r in rows][2:] == ["", ""]
    _, rows = read_csv(tmp_path / "agreement.csv")
    assert rows == []
    _, rows = read_csv(tmp_path / "leaderboard.csv")
    assert rows[2]["rate"] == ""


def test_nothing_measured_at_all(tmp_path):
    html = write_report({"title": "Empty", "costs": [{"stage": "judge", "usd": None}]}, tmp_path).read_text()
    assert "Leaderboard: not measured" in html and "Per-statement results: not measured" in html
    assert "unknown price" in html and "$0" not in html
    for name in ["leaderboard.csv", "statements.csv", "agreement.csv", "costs.csv", "summary.json"]:
        assert (tmp_path / name).is_file()


def test_likert_and_hostile_names(tmp_path):
    data = make_data()
    data["scale"] = "likert"
    evil = "<script>alert(1)</script> & $x$ --> \"q\""
    data["leaderboard"][0]["candidate"] = evil
    data["leaderboard"][0].update(likert_mean=4.25, likert_lo=4.05, likert_hi=4.45)
    data["statements"][0]["candidate"] = evil
    data["statements"][0]["statement"] = "a_very_long_statement_identifier_" * 3
    data["notes"].append('<img src="https://evil.example/x.png">')
    html = write_report(data, tmp_path).read_text(encoding="utf-8")
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert_self_contained(html)
    board = tables(html)["leaderboard"]
    assert board[0][1] == evil and board[0][-2:] == ["4.25", "4.05 – 4.45"]
    assert board[1][-2:] == ["not measured", "not measured"]


def test_many_statements_heatmap_scales(tmp_path):
    data = make_data()
    data["statements"] = [
        {"statement": f"statement_number_{i:02d}", "section": f"Section {i // 10}", "candidate": c, "n": 20,
         "rate": (i % 7) / 6, "lo": 0.0, "hi": 1.0}
        for i in range(50) for c in CANDIDATES
    ]
    html = write_report(data, tmp_path).read_text(encoding="utf-8")
    for i in range(50):
        assert f">statement_number_{i:02d}<" in html
    heatmap = re.search(r'<svg[^>]*class="plot fig1"[^>]*>', html).group(0)
    width, height = map(float, re.search(r'viewBox="0 0 ([\d.]+) ([\d.]+)"', heatmap).groups())
    assert height / 50 >= 14  # at least ~14pt per row: labels at 8pt do not overlap
    assert width < 800


def test_output_is_deterministic(tmp_path):
    write_report(make_data(), tmp_path / "a")
    write_report(copy.deepcopy(make_data()), tmp_path / "b")
    for path in sorted((tmp_path / "a").iterdir()):
        assert path.read_bytes() == (tmp_path / "b" / path.name).read_bytes(), path.name


def test_import_does_not_load_matplotlib():
    code = "import sys, batchery.eval.report; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def _browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


def test_renders_in_headless_chromium(tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("chromium not installed: apt-get install chromium to run the report rendering test")
    out = write_report(make_data(), tmp_path / "report")
    result = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", out.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    board = tables(dom)["leaderboard"]
    assert [row[1] for row in board] == CANDIDATES
    assert [row[2] for row in board] == ["86.0%", "79.0%", "64.0%"]
    assert dom.count("<svg") >= 2 + len(CANDIDATES)


def make_items(per_statement: int = 2) -> list[dict]:
    """Records as items.jsonl holds them: every candidate x statement x input, with a tie, an
    unread verdict and a failed generation among them."""
    items = []
    statements = [name for names in SECTIONS.values() for name in names]
    for c, cand in enumerate(CANDIDATES):
        for s, statement in enumerate(statements):
            for index in range(per_statement):
                k = len(items)
                votes = [(k * 7 + j * 3) % 5 < 3 for j in range(3)]
                judges = {judge: {"verdict": vote, "score": None, "confidence": 0.8,
                                  "explanation": f"{judge} reasons about {statement} #{index}"}
                          for judge, vote in zip(JUDGES, votes)}
                result = "compliant" if sum(votes) >= 2 else "non-compliant"
                status, answer = "succeeded", f"Answer {k} by {cand}"
                if (c, s, index) == (0, 0, 1):
                    judges[JUDGES[2]] = {"verdict": None, "score": None, "confidence": None, "explanation": None}
                    judges[JUDGES[0]]["verdict"], judges[JUDGES[1]]["verdict"] = True, False
                    result = "tie"
                if (c, s, index) == (2, 1, 0):
                    status, answer, judges, result = "failed", None, {}, "failed"
                items.append({
                    "id": f"{cand}:{statement}:{index}", "candidate": cand, "statement_id": statement,
                    "section": "", "input_index": index, "input": f"Question {index} about {statement}",
                    "answer": answer, "status": status, "error": "model not found" if answer is None else None,
                    "judges": judges,
                    "jury": {"result": result, "compliant": {"compliant": True, "non-compliant": False}.get(result),
                             "yes": sum(bool(v["verdict"]) for v in judges.values()),
                             "votes": sum(v["verdict"] is not None for v in judges.values()), "score": None},
                    "human_label": (k % 3 != 0) if k % 5 == 0 else None})
    return items


def test_the_table_of_answers_lists_every_answer_with_each_judges_explanation(tmp_path):
    items = make_items()
    items[4]["answer"] = "<script>alert('answer')</script> & more"
    html = write_report(make_data(), tmp_path, items=items).read_text(encoding="utf-8")
    assert_self_contained(html)
    rows = tables(html)["items"]
    assert len(rows) == len(items) == 60
    assert rows[0][:3] == ["claude-sonnet", "comply_with_laws", "0"]
    assert "judge-claude reasons about comply_with_laws #0" in rows[0][3] and "Answer 0 by claude-sonnet" in rows[0][3]
    assert [r[4] for r in rows].count("tie") == 1 and [r[4] for r in rows].count("failed") == 1
    assert "no answer (failed)" in html and "model not found" in html
    assert "&lt;script&gt;alert(&#39;answer&#39;)&lt;/script&gt; &amp; more" in html and "<script>" not in html
    for option in ("compliant", "non-compliant", "tie", "failed", *CANDIDATES):
        assert f'<option value="{option}">' in html
    assert "human label ≠ jury" in html and rows[0][6] == "non-compliant"  # the human label column
    assert "This page shows" not in html  # nothing left out


def test_a_large_evaluation_embeds_an_even_sample_and_says_so(tmp_path, monkeypatch):
    from batchery.eval import report

    monkeypatch.setattr(report, "MAX_REPORT_ITEMS", 20)
    monkeypatch.setattr(report, "MAX_REPORT_TEXT", 10)
    html = write_report(make_data(), tmp_path, items=make_items(per_statement=4)).read_text(encoding="utf-8")
    rows = tables(html)["items"]
    assert len(rows) == 20 and {r[0] for r in rows} == set(CANDIDATES)  # every candidate still in view
    assert "This page shows 20 of 120 answers" in " ".join(html.split()) and "items.jsonl" in html
    assert "cut at 10 characters; the full text is in items.jsonl" in html


def test_calibrated_rates_stand_beside_the_jury_rates(tmp_path):
    data = make_data()
    data["leaderboard"][0]["calibrated"] = {"estimate": 0.8, "low": 0.74, "high": 0.86, "labels": 150,
                                            "lambda": 0.83, "labels_needed": 240, "target_halfwidth": 0.05}
    data["leaderboard"][1]["calibrated"] = {"estimate": None, "low": None, "high": None, "labels": 1,
                                            "lambda": None, "labels_needed": None, "target_halfwidth": 0.05}
    data["leaderboard"][2]["calibrated"] = {"estimate": 0.6, "low": 0.5, "high": 0.7, "labels": 40,
                                            "lambda": 0.5, "labels_needed": None, "target_halfwidth": 0.05}
    html = write_report(data, tmp_path).read_text(encoding="utf-8")
    calibration = tables(html)["calibration"]
    assert calibration[0] == ["claude-sonnet", "86.0%", "81.8–89.7%", "80.0%", "74.0–86.0%", "150", "0.83",
                              "±5 pts: about 240 labels"]
    assert calibration[1][3] == "not measured" and calibration[1][5] == "1"
    assert calibration[2][-1] == "±5 pts: not reachable with this many answers: evaluate more inputs"
    board = tables(html)["leaderboard"]
    assert board[0][9:11] == ["0.7%", "85.4%"]  # failure rate; compliance had failures counted non-compliant
    _, rows = read_csv(tmp_path / "leaderboard.csv")
    assert rows[0]["calibrated_estimate"] == "0.8" and rows[0]["calibrated_labels"] == "150"
    assert rows[0]["failure_rate"] == str(2 / 302)


def test_the_table_of_answers_filters_and_opens_in_headless_chromium(tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("chromium not installed: apt-get install chromium to run the report rendering test")
    items = make_items()
    out = write_report(make_data(), tmp_path / "report", items=items)
    wanted = [i for i in items if i["candidate"] == "gpt-4o" and i["jury"]["result"] == "non-compliant"]
    opened = wanted[1]["id"]
    url = f"{out.as_uri()}#items?candidate=gpt-4o&verdict=non-compliant&open={opened}"
    result = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", url],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    shown = re.findall(r'<tr data-id="([^"]+)"(?![^>]*hidden)[^>]*>', dom)
    assert shown == [i["id"] for i in wanted] and len(shown) < len(items)
    assert f"showing {len(wanted)} of {len(items)} answers" in dom
    row = dom[dom.index(f'<tr data-id="{opened}"'):]
    assert row[:row.index("</tr>")].count("<details open") == 1
    assert dom.count("<details open") == 1
