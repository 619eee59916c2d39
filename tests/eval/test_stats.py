"""Statistics of an evaluation, checked against simulated data with a known truth.

Coverage tests simulate thousands of evaluations and check that 95% intervals cover the truth
95% of the time (±1.5 points); ranking tests simulate a Bradley–Terry world and check the order
is recovered. Everything is seeded, so the figures are reproducible.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from scipy.stats import binomtest, spearmanr

from batchery.eval.stats import (
    Interval,
    agreement,
    bradley_terry,
    cluster_bootstrap,
    cohen_kappa,
    compliance_table,
    elo,
    fleiss_kappa,
    position_bias,
    reverse_consistency,
    wilson,
)


def _json(obj) -> str:
    """Must serialise as strict JSON: no NaN, no numpy scalars."""
    return json.dumps(obj, allow_nan=False)


# --------------------------------------------------------------------------- Wilson


def test_wilson_coverage_of_the_true_rate():
    rng = np.random.default_rng(20240601)
    n, sims_per_p = 200, 2000
    covered_total = 0
    for p in (0.5, 0.7, 0.8, 0.9, 0.95):
        ks = rng.binomial(n, p, size=sims_per_p)
        intervals = {
            k: wilson(int(k), n) for k in np.unique(ks)
        }  # the real function, per distinct k
        covered = sum(intervals[k].lo <= p <= intervals[k].hi for k in ks)
        assert covered / sims_per_p > 0.92, (p, covered / sims_per_p)  # no gross failure at any p
        covered_total += covered
    coverage = covered_total / (5 * sims_per_p)
    assert abs(coverage - 0.95) <= 0.015, coverage


def test_wilson_known_values_and_level():
    # Hand formula: centre (k + z²/2)/(n + z²), half-width z·sqrt(k(n-k)/n + z²/4)/(n + z²).
    z = 1.959963984540054
    k, n = 8, 10
    centre = (k + z * z / 2) / (n + z * z)
    half = z * math.sqrt(k * (n - k) / n + z * z / 4) / (n + z * z)
    ci = wilson(k, n)
    assert ci == Interval(0.8, pytest.approx(centre - half), pytest.approx(centre + half), 10)
    assert wilson(8, 10, level=0.80).hi < ci.hi  # a lower level gives a narrower interval
    zero, full = wilson(0, 20), wilson(20, 20)
    assert zero.lo == 0.0 and 0 < zero.hi < 0.2
    assert full.hi == 1.0 and 0.8 < full.lo < 1
    assert _json(ci.to_dict())


def test_wilson_edge_cases():
    assert wilson(0, 0) == Interval(None, None, None, 0)
    with pytest.raises(ValueError):
        wilson(3, 2)
    with pytest.raises(ValueError):
        wilson(-1, 2)
    with pytest.raises(ValueError):
        wilson(1, 2, level=1.5)


# --------------------------------------------------------------------------- cluster bootstrap


def test_cluster_bootstrap_coverage_on_clustered_data():
    """40–60 statements × 5 inputs, statement rates ~ Beta(8, 2): the truth is the population
    mean rate 0.8. BCa over statements covers ~95%; a pooled Wilson interval, which ignores the
    clustering, does not (so the test would notice a bootstrap that resampled verdicts)."""
    rng = np.random.default_rng(7)
    a, b, inputs, sims = 8.0, 2.0, 5, 2000
    truth = a / (a + b)
    boot_cover = wilson_cover = 0
    for _ in range(sims):
        k = int(rng.integers(40, 61))
        s = rng.binomial(inputs, rng.beta(a, b, size=k))
        ci = cluster_bootstrap(
            s.tolist(), [inputs] * k, resamples=1000, seed=int(rng.integers(2**31))
        )
        boot_cover += ci.lo <= truth <= ci.hi
        naive = wilson(int(s.sum()), inputs * k)
        wilson_cover += naive.lo <= truth <= naive.hi
    coverage = boot_cover / sims
    assert abs(coverage - 0.95) <= 0.015, coverage
    assert wilson_cover / sims < 0.93, wilson_cover / sims


def test_cluster_bootstrap_rate_and_reproducibility():
    s, n = [5, 4, 3, 5, 0, 2], [5, 5, 5, 6, 4, 5]
    ci = cluster_bootstrap(s, n)
    assert ci.rate == pytest.approx(19 / 30) and ci.n == 30
    assert ci.lo < ci.rate < ci.hi
    assert cluster_bootstrap(s, n) == ci  # seeded by default: reports are reproducible
    # Clusters with n == 0 (all verdicts unparsed) are dropped, not counted as failures.
    assert cluster_bootstrap(s + [0], n + [0]) == ci


def test_cluster_bootstrap_degenerate_cases_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cluster_bootstrap([], []) == Interval(None, None, None, 0)
        assert cluster_bootstrap([0], [0]) == Interval(None, None, None, 0)
        # A single cluster carries no between-cluster information: Wilson on its counts.
        assert cluster_bootstrap([3], [5]) == wilson(3, 5)
        # All 0 or all 1: no bootstrap spread, but still an honest non-zero-width interval.
        zeros = cluster_bootstrap([0] * 10, [5] * 10)
        assert zeros.rate == 0.0 and zeros.lo == 0.0 and 0 < zeros.hi < 0.15
        ones = cluster_bootstrap([5] * 10, [5] * 10)
        assert ones.rate == 1.0 and ones.hi == 1.0 and 0.85 < ones.lo < 1
        # Two clusters: BCa is fragile here; still a finite interval around the rate.
        two = cluster_bootstrap([1, 4], [5, 5])
        assert 0.0 <= two.lo <= 0.5 <= two.hi <= 1.0
    with pytest.raises(ValueError):
        cluster_bootstrap([1, 2], [3])
    with pytest.raises(ValueError):
        cluster_bootstrap([4], [3])


# --------------------------------------------------------------------------- compliance table


def _records():
    recs = []

    def add(candidate, statement, section, verdicts):
        for v in verdicts:
            recs.append(
                {
                    "candidate": candidate,
                    "statement": statement,
                    "section": section,
                    "spec": "ms",
                    "verdict": v,
                }
            )

    add("alpha", "s1", "safety", [True, True, True, True, False])
    add("alpha", "s2", "safety", [True, True, True, True, True, None])
    add("alpha", "s3", "style", [True, False, True, True, True])
    add("beta", "s1", "safety", [False, False, True, None, None])
    add("beta", "s2", "safety", [True, False, True, False, True])
    add("beta", "s3", "style", [True, True, False, True, False])
    add("gamma", "s1", "safety", [None, None])  # every judgement failed
    return recs


def test_compliance_table_by_candidate():
    rows = compliance_table(_records(), "candidate")
    assert [r["candidate"] for r in rows] == [
        "alpha",
        "beta",
        "gamma",
    ]  # rate descending, None last
    alpha, beta, gamma = rows
    assert (alpha["n"], alpha["compliant"], alpha["unparsed"], alpha["statements"]) == (
        15,
        13,
        1,
        3,
    )
    assert (beta["n"], beta["compliant"], beta["unparsed"]) == (13, 7, 2)
    w = wilson(13, 15)
    assert (alpha["rate"], alpha["lo"], alpha["hi"]) == (w.rate, w.lo, w.hi)
    boot = cluster_bootstrap([4, 5, 4], [5, 5, 5])
    assert (alpha["boot_lo"], alpha["boot_hi"]) == (boot.lo, boot.hi)
    assert gamma == {
        "candidate": "gamma",
        "n": 0,
        "compliant": 0,
        "unparsed": 2,
        "rate": None,
        "lo": None,
        "hi": None,
        "statements": 0,
        "boot_lo": None,
        "boot_hi": None,
    }
    assert _json(rows)


def test_compliance_table_by_several_fields():
    rows = compliance_table(_records(), ("candidate", "section"))
    keys = [(r["candidate"], r["section"]) for r in rows]
    assert keys == [
        ("alpha", "safety"),
        ("alpha", "style"),
        ("beta", "safety"),
        ("beta", "style"),
        ("gamma", "safety"),
    ]
    alpha_style = rows[1]
    assert (alpha_style["n"], alpha_style["compliant"], alpha_style["statements"]) == (5, 4, 1)
    # One statement: no clusters to resample, so no bootstrap interval.
    assert alpha_style["boot_lo"] is None and alpha_style["boot_hi"] is None
    assert rows[0]["boot_lo"] is not None  # safety spans s1 and s2
    by_statement = compliance_table(_records(), "statement")
    assert [r["statement"] for r in by_statement] == ["s1", "s2", "s3"]
    assert by_statement[0]["unparsed"] == 4


def test_compliance_table_all_unparsed_and_empty():
    recs = [{"candidate": "x", "statement": "s", "section": "", "spec": "", "verdict": None}] * 3
    (row,) = compliance_table(recs, "candidate")
    assert (row["n"], row["unparsed"], row["rate"], row["lo"]) == (0, 3, None, None)
    assert compliance_table([], "candidate") == []


# --------------------------------------------------------------------------- agreement


def test_cohen_kappa_known_case():
    # 50 items: yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> po = 0.7, pe = 0.5, kappa = 0.4.
    a = ["y"] * 25 + ["n"] * 25
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    # Items where either judge has no label are skipped, whatever the other said.
    assert cohen_kappa(a + ["y", None], b + [None, "n"]) == pytest.approx(0.4)


def test_kappa_perfect_and_random():
    rng = np.random.default_rng(3)
    labels = rng.choice(["compliant", "violation", "unclear"], size=2000).tolist()
    assert cohen_kappa(labels, labels) == pytest.approx(1.0)
    other = rng.choice(["compliant", "violation", "unclear"], size=2000).tolist()
    assert abs(cohen_kappa(labels, other)) < 0.05
    assert fleiss_kappa([[x] * 4 for x in labels]) == pytest.approx(1.0)
    random_items = rng.choice([True, False], size=(2000, 4), p=[0.8, 0.2]).tolist()
    assert abs(fleiss_kappa(random_items)) < 0.05


def test_fleiss_kappa_known_cases():
    # Wikipedia's worked example: 10 items, 14 raters, 5 categories -> kappa = 0.210.
    table = [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
    items = [[cat for cat, count in enumerate(row) for _ in range(count)] for row in table]
    assert fleiss_kappa(items) == pytest.approx(0.20993, abs=1e-4)
    # Two raters: Fleiss reduces to Scott's pi; the Cohen case above has pooled yes-share 0.55,
    # pe = 0.55² + 0.45² = 0.505 -> pi = (0.7 - 0.505) / 0.495.
    a = ["y"] * 25 + ["n"] * 25
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    pairs = [list(p) for p in zip(a, b)]
    assert fleiss_kappa(pairs) == pytest.approx(0.195 / 0.495)
    # Items with a missing label (None, or fewer labels) are dropped.
    assert fleiss_kappa(pairs + [["y", None], ["n"]]) == pytest.approx(0.195 / 0.495)


def test_kappa_undefined_is_none():
    assert cohen_kappa([], []) is None
    assert cohen_kappa([True] * 5, [True] * 5) is None  # no variance: chance agreement is 1
    assert cohen_kappa([None, True], [False, None]) is None
    assert fleiss_kappa([]) is None
    assert fleiss_kappa([[True, True, True]] * 4) is None
    assert fleiss_kappa([[True]] * 4) is None  # one rater
    with pytest.raises(ValueError):
        cohen_kappa([True], [True, False])


def test_agreement_between_judges():
    j1 = {"i1": True, "i2": True, "i3": False, "i4": False, "i5": True}
    j2 = {"i1": True, "i2": True, "i3": False, "i4": False, "i5": True}
    j3 = {"i1": True, "i2": False, "i3": False, "i4": None, "i5": True, "i6": False}
    out = agreement({"j1": j1, "j2": j2, "j3": j3})
    assert out["judges"] == ["j1", "j2", "j3"]
    rows = {(r["a"], r["b"]): r for r in out["pairwise"]}
    assert rows[("j1", "j2")]["kappa"] == pytest.approx(1.0) and rows[("j1", "j2")]["n"] == 5
    j1j3 = rows[("j1", "j3")]
    assert j1j3["n"] == 4 and j1j3["agreement"] == pytest.approx(0.75)
    assert j1j3["kappa"] == pytest.approx(
        cohen_kappa([True, True, False, True], [True, False, False, True])
    )
    assert out["n_items"] == 4
    assert out["fleiss_kappa"] == pytest.approx(
        fleiss_kappa([[True] * 3, [True, True, False], [False] * 3, [True] * 3])
    )
    assert _json(out)
    assert agreement({"solo": j1}) == {
        "judges": ["solo"],
        "pairwise": [],
        "fleiss_kappa": None,
        "n_items": 0,
    }


# --------------------------------------------------------------------------- pairwise: bias


def _biased_judge(rng, n, share_first, tie_rate=0.1):
    """Comparisons on a tie-ish pool (equal candidates): the winner only reflects position."""
    out = []
    for i in range(n):
        first, second = rng.permutation(["m1", "m2", "m3", "m4"])[:2].tolist()
        u = rng.random()
        winner = "tie" if u < tie_rate else ("first" if rng.random() < share_first else "second")
        out.append({"item": f"q{i}", "first": first, "second": second, "winner": winner})
    return out


def test_position_bias_detects_a_judge_that_favours_position_a():
    rng = np.random.default_rng(11)
    biased = position_bias(_biased_judge(rng, 300, 0.65))
    assert biased["p_value"] < 0.01
    assert abs(biased["share_first"] - 0.65) < 0.07
    assert biased["lo"] > 0.5
    fair = position_bias(_biased_judge(rng, 300, 0.5))
    assert fair["p_value"] > 0.01
    assert fair["lo"] < 0.5 < fair["hi"]


def test_position_bias_counts():
    comps = [{"winner": w} for w in ["first"] * 7 + ["second"] * 2 + ["tie"] * 3 + [None]]
    out = position_bias(comps)
    assert {k: out[k] for k in ("n", "first", "second", "tie", "unparsed", "decisive")} == {
        "n": 13,
        "first": 7,
        "second": 2,
        "tie": 3,
        "unparsed": 1,
        "decisive": 9,
    }
    assert out["share_first"] == pytest.approx(7 / 9)
    assert out["p_value"] == pytest.approx(binomtest(7, 9, 0.5).pvalue)
    empty = position_bias([])
    assert empty["share_first"] is None and empty["p_value"] is None
    assert _json(out) and _json(empty)
    with pytest.raises(ValueError):
        position_bias([{"winner": "A"}])


def test_reverse_consistency_hand_built():
    def c(item, first, second, winner, **extra):
        return {"item": item, "first": first, "second": second, "winner": winner, **extra}

    comps = [
        c("q1", "A", "B", "first"),
        c("q1", "B", "A", "second"),  # A both times: consistent
        c("q2", "A", "B", "first"),
        c("q2", "B", "A", "first"),  # position A both times
        c("q3", "A", "B", "tie"),
        c("q3", "B", "A", "tie"),  # tie both times: consistent
        c("q4", "A", "B", "second"),
        c("q4", "B", "A", "tie"),  # tie in one order only
        c("q5", "A", "B", "second"),
        c("q5", "B", "A", "second"),  # position B both times
        c("q6", "A", "B", "first"),  # one order only: not counted
        c("q7", "A", "B", "first"),
        c("q7", "B", "A", None),  # unparsed: not counted
        c("q8", "A", "B", "first", judge="j1"),
        c("q8", "B", "A", "second", judge="j2"),  # other judge
        c("q9", "A", "B", "first"),
        c("q9", "A", "C", "first"),  # different pairs
    ]
    out = reverse_consistency(comps)
    assert out == {
        "n": 5,
        "consistent": 2,
        "share": 0.4,
        "first_both": 1,
        "second_both": 1,
        "tie_mixed": 1,
    }
    assert reverse_consistency([])["share"] is None


# --------------------------------------------------------------------------- pairwise: rankings


def _bt_world(rng, n_items=12, n_comparisons=3000, tie_rate=0.0):
    truth = rng.permutation(np.linspace(-1.5, 1.5, n_items))
    names = [f"m{i:02d}" for i in range(n_items)]
    i = rng.integers(0, n_items, size=n_comparisons)
    j = (i + rng.integers(1, n_items, size=n_comparisons)) % n_items  # j != i
    first_wins = rng.random(n_comparisons) < 1.0 / (1.0 + np.exp(truth[j] - truth[i]))
    tie = rng.random(n_comparisons) < tie_rate
    comps = [
        {
            "item": f"q{k}",
            "first": names[i[k]],
            "second": names[j[k]],
            "winner": "tie" if tie[k] else ("first" if first_wins[k] else "second"),
        }
        for k in range(n_comparisons)
    ]
    return dict(zip(names, truth)), comps


def test_bradley_terry_recovers_simulated_strengths():
    rng = np.random.default_rng(5)
    truth, comps = _bt_world(rng)
    rows = bradley_terry(comps, resamples=200, seed=1)
    assert [r["strength"] for r in rows] == sorted((r["strength"] for r in rows), reverse=True)
    est = {r["item"]: r for r in rows}
    names = sorted(truth)
    rho = spearmanr([est[n]["strength"] for n in names], [truth[n] for n in names]).statistic
    assert rho >= 0.95, rho
    # Same scale as the truth (log-odds, centred), so the values themselves are recovered...
    assert sum(r["strength"] for r in rows) == pytest.approx(0.0, abs=1e-9)
    assert max(abs(est[n]["strength"] - truth[n]) for n in names) < 0.3
    # ...and the bootstrap intervals cover most true strengths (~95% each).
    assert sum(est[n]["lo"] <= truth[n] <= est[n]["hi"] for n in names) >= 10
    assert all(r["n"] == r["wins"] + r["losses"] + r["ties"] for r in rows)
    assert sum(r["n"] for r in rows) == 2 * len(comps)
    assert _json(rows)
    ratings = elo(comps)
    rho_elo = spearmanr([ratings[n] for n in names], [truth[n] for n in names]).statistic
    assert rho_elo >= 0.9, rho_elo


def test_bradley_terry_and_elo_with_ties():
    rng = np.random.default_rng(6)
    truth, comps = _bt_world(rng, tie_rate=0.15)
    rows = bradley_terry(comps, resamples=0)
    names = sorted(truth)
    est = {r["item"]: r["strength"] for r in rows}
    assert spearmanr([est[n] for n in names], [truth[n] for n in names]).statistic >= 0.95
    assert sum(r["ties"] for r in rows) == 2 * sum(c["winner"] == "tie" for c in comps)
    assert rows[0]["lo"] is None  # no resamples, no interval
    ratings = elo(comps)
    assert spearmanr([ratings[n] for n in names], [truth[n] for n in names]).statistic >= 0.9


def test_elo_does_not_depend_on_the_order_of_judging():
    # A beats B in the first half of the log and loses in the second: plain sequential Elo would
    # rate whoever won last higher; averaged over random orderings they come out level.
    comps = [{"first": "A", "second": "B", "winner": "first"}] * 50 + [
        {"first": "A", "second": "B", "winner": "second"}
    ] * 50
    ratings = elo(comps, rounds=200)
    assert abs(ratings["A"] - ratings["B"]) < 5
    assert ratings["A"] + ratings["B"] == pytest.approx(2000)  # Elo is zero-sum
    reverse = elo(list(reversed(comps)), rounds=200)
    assert abs(reverse["A"] - ratings["A"]) < 5


def test_pairwise_edge_cases():
    assert bradley_terry([]) == []
    assert elo([]) == {}
    # One comparison: the winner ranks first, strengths stay finite thanks to regularisation.
    (top, bottom) = bradley_terry([{"first": "A", "second": "B", "winner": "first"}], resamples=20)
    assert (top["item"], bottom["item"]) == ("A", "B")
    assert math.isfinite(top["strength"]) and top["strength"] > 0 > bottom["strength"]
    assert (top["wins"], top["losses"], bottom["losses"], top["n"]) == (1, 0, 1, 1)
    # A candidate whose comparisons all failed to parse is listed, with no strength.
    rows = bradley_terry(
        [
            {"first": "A", "second": "B", "winner": "tie"},
            {"first": "A", "second": "C", "winner": None},
        ]
    )
    c_row = next(r for r in rows if r["item"] == "C")
    assert c_row["strength"] is None and c_row["n"] == 0 and rows[-1] is c_row
    assert next(r for r in rows if r["item"] == "A")["strength"] == pytest.approx(0.0, abs=1e-9)
    assert _json(rows)
    assert set(elo([{"first": "A", "second": "C", "winner": None}])) == set()
    # An item that wins everything gets a large but finite strength.
    always = [{"first": "A", "second": o, "winner": "first"} for o in "BCD" for _ in range(5)]
    always += [{"first": "B", "second": "C", "winner": w} for w in ("first", "second")]
    best = bradley_terry(always, resamples=20)[0]
    assert best["item"] == "A" and math.isfinite(best["strength"]) and math.isfinite(best["hi"])
