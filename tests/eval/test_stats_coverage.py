"""The quick version of the coverage study (benchmarks/stats_coverage.py): every interval the
report uses keeps at least 92 % coverage on simulated data with a known truth, every test keeps
its size near 5 %, and the jury rules count the whole jury. The full study (more runs and
scenarios; its table is in the README) is `python benchmarks/stats_coverage.py`."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

STUDY = Path(__file__).parents[2] / "benchmarks" / "stats_coverage.py"


@pytest.fixture(scope="module")
def rows():
    spec = importlib.util.spec_from_file_location("stats_coverage", STUDY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.run(quick=True)


def test_every_interval_the_report_uses_covers_at_least_92_percent(rows):
    used = [r for r in rows if r.kind == "coverage" and not r.reference]
    groups = {r.group for r in used}
    assert {"one statement's rate", "rate over statements", "Likert mean", "Cohen's kappa",
            "Fleiss' kappa (3 judges)", "Bradley–Terry strength", "first-position effect"} <= groups
    low = [(r.group, r.scenario, round(r.value, 3)) for r in used if r.value < 0.92]
    assert low == []


def test_the_comparisons_show_what_the_old_intervals_missed(rows):
    """The references are there to fail: Wilson ignores clustering, the plain t ignores the bound."""
    def worst(group: str, method: str) -> float:
        return min(r.value for r in rows if r.reference and (r.group, r.method) == (group, method))

    assert worst("rate over statements", "Wilson on all verdicts") < 0.9
    assert worst("one statement's rate", "Wilson") < 0.92  # n = 10, p = 0.99: 0.904
    assert worst("Likert mean", "cluster-robust t") < 0.93


def test_position_bias_tests_keep_their_size_and_find_the_biased_judge(rows):
    sizes = [r for r in rows if r.kind == "size"]
    assert sizes and all(0.01 <= r.value <= 0.11 for r in sizes), [(r.scenario, r.value) for r in sizes]
    (power,) = [r for r in rows if r.kind == "power"]
    assert power.value >= 0.85


def test_jury_rules_count_the_whole_jury(rows):
    checks = {(r.group, r.scenario): r.value for r in rows if r.kind == "check"}
    assert checks[("2 judges, majority, every reply read: share unparsed", "P(yes) 0.8")] == 0.0
    unanimous = [v for (group, _), v in checks.items() if group.startswith("3 judges, unanimous")]
    assert len(unanimous) == 3 and unanimous == sorted(unanimous, reverse=True)
