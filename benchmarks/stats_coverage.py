"""Coverage study: does each interval the evaluation reports cover the truth as often as it says?

Every method of ``batchery.eval.stats`` is run on data simulated with a known truth, many times,
and the share of 95 % intervals that hold the truth is printed with its Monte-Carlo standard error
(sqrt(c(1 − c)/runs)). Tests print their size (false-positive rate under no effect, nominal 5 %)
and power. Seeds are fixed: the same command prints the same table.

    .venv/bin/python benchmarks/stats_coverage.py            # the full study (a few minutes on 2 cores)
    .venv/bin/python benchmarks/stats_coverage.py --quick    # the fast version `make test` runs

What "covers" means, per method:
- rates: the population compliance rate (the mean of the statements' rates, which are drawn from
  a Beta distribution whose intra-statement correlation is ``icc``);
- Likert means: the population mean score;
- kappas: the population kappa of the simulated judges (from their error rate and the prevalence);
- Bradley–Terry: each item's true log-strength minus the mean true log-strength (the reported
  strengths are mean-centred); the coverage is averaged over items;
- the first-position effect: each judge's true first-position log-odds;
- PPI (when ``batchery.eval.calibration.ppi_mean`` exists): the true mean of the human label.

Data depend the way real evaluations do: inputs of one statement share the statement's rate;
in pairwise runs every judge and both orders of one input share a latent draw (probability
``rho`` that a verdict copies it), which keeps each verdict's marginal probability exactly the
Bradley–Terry one while making the verdicts of one input agree.

``run(quick=...)`` returns the rows; ``tests/eval/test_stats_coverage.py`` runs the quick study
and fails if any coverage drops below 92 % or a test's size leaves 1–9 %.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from batchery.eval import stats
from batchery.eval.pipeline import jury_verdict
from batchery.eval.verdicts import ComplianceVerdict

LEVEL = 0.95


@dataclass
class Row:
    group: str  # what is estimated
    method: str
    scenario: str
    value: float  # coverage, or the rejection rate of a test
    runs: int
    kind: str = "coverage"  # coverage | size | power | check
    reference: bool = False  # shown for comparison; not what the report uses

    @property
    def se(self) -> float:
        return math.sqrt(max(self.value * (1 - self.value), 0.0) / self.runs) if self.runs else 0.0


# --------------------------------------------------------------------------- rates


def exact_binomial_coverage(n: int, p: float, interval) -> float:
    """Exact coverage of a binomial interval: the probability of every k times whether it covers."""
    k = np.arange(n + 1)
    intervals = [interval(int(x), n) for x in k]
    covers = np.array([ci.lo <= p <= ci.hi for ci in intervals])
    return float(np.sum(sps.binom.pmf(k, n, p) * covers))


def one_statement(rows: list[Row], quick: bool) -> None:
    cases = [(10, 0.99), (10, 0.9), (30, 0.95)] if quick else \
        [(n, p) for n in (5, 10, 20, 50) for p in (0.5, 0.8, 0.9, 0.95, 0.99)]
    for n, p in cases:
        scenario = f"n = {n}, p = {p}"
        rows.append(Row("one statement's rate", "Clopper–Pearson", scenario,
                        exact_binomial_coverage(n, p, stats.clopper_pearson), 0))
        rows.append(Row("one statement's rate", "Wilson", scenario,
                        exact_binomial_coverage(n, p, stats.wilson), 0, reference=True))


def _clustered_rates(rng, sims: int, clusters: int, inputs: int, p: float, icc: float) -> tuple[np.ndarray, np.ndarray]:
    """Successes per statement (sims × clusters): statement rates ~ Beta with mean p and the given
    intra-statement correlation (icc = 1 / (a + b + 1))."""
    total = 1 / icc - 1
    rates = rng.beta(p * total, (1 - p) * total, size=(sims, clusters))
    return rng.binomial(inputs, rates).astype(float), np.full((sims, clusters), float(inputs))


def _bca(s: np.ndarray, n: np.ndarray, seed: int) -> tuple[float, float]:
    """The BCa cluster bootstrap the report used before (for comparison)."""
    res = sps.bootstrap((s, n), lambda a, b, axis=-1: a.sum(axis) / b.sum(axis), paired=True, vectorized=True,
                        n_resamples=1000, method="BCa", rng=np.random.default_rng(seed))
    return res.confidence_interval.low, res.confidence_interval.high


def several_statements(rows: list[Row], quick: bool, rng) -> None:
    sims = 400 if quick else 4000
    grid = [(8, 5, 0.9, 0.2), (20, 5, 0.8, 0.2)] if quick else \
        [(c, m, p, icc) for c in (5, 10, 20, 40) for m in (3, 10) for p in (0.5, 0.8, 0.95) for icc in (0.05, 0.2, 0.5)]
    for clusters, inputs, p, icc in grid:
        s, n = _clustered_rates(rng, sims, clusters, inputs, p, icc)
        scenario = f"{clusters} statements × {inputs} inputs, p = {p}, icc = {icc}"
        group = "rate over statements"
        _, lo, hi = stats._korn_graubard(s, n, LEVEL)  # the function cluster_rate calls, on all runs at once
        rows.append(Row(group, "Korn–Graubard", scenario, float(np.mean((lo <= p) & (p <= hi))), sims))
        pooled = s.sum(1)
        total = n.sum(1)
        naive = [stats.wilson(int(a), int(b)) for a, b in zip(pooled, total)]
        w_lo, w_hi = np.array([ci.lo for ci in naive]), np.array([ci.hi for ci in naive])
        rows.append(Row(group, "Wilson on all verdicts", scenario, float(np.mean((w_lo <= p) & (p <= w_hi))), sims,
                        reference=True))
        if not quick and clusters <= 20 and inputs == 10 and icc == 0.2:
            runs = 1000
            hits = 0
            for i in range(runs):
                if np.ptp(s[i] / n[i]) == 0:
                    ci = stats.cluster_rate(s[i], n[i])  # no spread: the bootstrap has none either
                    hits += ci.lo <= p <= ci.hi
                    continue
                a, b = _bca(s[i], n[i], i)
                hits += a <= p <= b
            rows.append(Row(group, "BCa bootstrap over statements", scenario, hits / runs, runs, reference=True))


def likert_means(rows: list[Row], quick: bool, rng) -> None:
    """Scores 1–5; each statement's score distribution ~ Dirichlet(alpha · base), so statements differ
    (smaller alpha = more correlated inputs); the truth is the mean of base."""
    sims = 400 if quick else 4000
    bases = {"mean 3.85": [0.05, 0.1, 0.15, 0.35, 0.35], "mean 4.53": [0.02, 0.03, 0.05, 0.2, 0.7],
             "mean 1.85": [0.5, 0.3, 0.1, 0.05, 0.05]}
    grid = [(8, 5, 2.0, "mean 4.53")] if quick else \
        [(c, m, a, b) for b in bases for c in (5, 10, 20, 40) for m in (3, 10) for a in (1.0, 5.0)]
    for clusters, inputs, alpha, name in grid:
        base = np.array(bases[name])
        truth = float(np.dot(base, np.arange(1, 6)))
        cum = rng.dirichlet(alpha * base, size=(sims, clusters)).cumsum(-1)
        scores = 1 + (rng.random((sims, clusters, inputs))[..., None] > cum[:, :, None, :]).sum(-1)
        totals, sizes = scores.sum(-1).astype(float), np.full((sims, clusters), float(inputs))
        scenario = f"{clusters} statements × {inputs} inputs, {name}, Dirichlet α = {alpha}"
        _, lo, hi = stats._cluster_t(totals, sizes, LEVEL, (1, 5))  # what mean_interval(bounds=(1, 5)) runs
        rows.append(Row("Likert mean", "cluster-robust t, logit scale", scenario,
                        float(np.mean((lo <= truth) & (truth <= hi))), sims))
        _, lo, hi = stats._cluster_t(totals, sizes, LEVEL)
        rows.append(Row("Likert mean", "cluster-robust t", scenario, float(np.mean((lo <= truth) & (truth <= hi))),
                        sims, reference=True))


# --------------------------------------------------------------------------- kappas


def kappas(rows: list[Row], quick: bool, rng) -> None:
    """Judges see a true label (prevalence 0.8) and each flips it with probability e, independently."""
    sims = 100 if quick else 1000
    grid = [(100, 0.1)] if quick else [(n, e) for n in (30, 100, 300) for e in (0.05, 0.15)]
    prevalence = 0.8
    for items, error in grid:
        q = prevalence * (1 - error) + (1 - prevalence) * error
        pe = q**2 + (1 - q) ** 2
        agree = (1 - error) ** 2 + error**2
        truth = (agree - pe) / (1 - pe)  # Cohen = Fleiss here: both judges have the same marginals
        hits_c = hits_f = runs_f = 0
        for _ in range(sims):
            label = rng.random(items) < prevalence
            verdicts = label[:, None] ^ (rng.random((items, 3)) < error)
            lo, hi = stats.kappa_interval(verdicts[:, 0].tolist(), verdicts[:, 1].tolist(), seed=int(rng.integers(2**31)))
            hits_c += lo is not None and lo <= truth <= hi
            lo, hi = stats.fleiss_interval(verdicts.tolist(), seed=int(rng.integers(2**31)))
            if lo is not None:
                runs_f += 1
                hits_f += lo <= truth <= hi
        scenario = f"{items} items, error {error}, prevalence {prevalence}"
        rows.append(Row("Cohen's kappa", "bootstrap over items", scenario, hits_c / sims, sims))
        rows.append(Row("Fleiss' kappa (3 judges)", "bootstrap over items", scenario, hits_f / max(runs_f, 1), runs_f))


# --------------------------------------------------------------------------- pairwise


def simulate_pairs(rng, truth: np.ndarray, order: np.ndarray, inputs: int, per_pair: int, both_orders: bool,
                   rho: float) -> stats._Entries:
    """Comparisons of len(truth) items by len(order) judges (order = each judge's first-position
    log-odds). Each input holds every pair (per_pair times), judged by every judge in one random
    order or both. A verdict copies the input's latent draw with probability rho, else draws
    afresh: the marginal is exactly Bradley–Terry with the judge's order effect."""
    k = len(truth)
    i, j = np.triu_indices(k, 1)
    pairs = np.repeat(np.stack([i, j], 1), per_pair, axis=0)
    n_pairs, judges = len(pairs), len(order)
    latent = rng.random((inputs, n_pairs))
    cluster = np.repeat(np.arange(inputs), n_pairs)
    a, b = np.tile(pairs[:, 0], inputs), np.tile(pairs[:, 1], inputs)
    flip = rng.random(a.size) < 0.5
    first, second = np.where(flip, b, a), np.where(flip, a, b)
    shown = [(first, second)] + ([(second, first)] if both_orders else [])
    cols: list[list[np.ndarray]] = [[], [], [], [], []]
    for g in range(judges):
        for f, s in shown:
            copy = rng.random(f.size) < rho
            u = np.where(copy, np.where(f == a, latent.reshape(-1), 1 - latent.reshape(-1)), rng.random(f.size))
            p_first = 1 / (1 + np.exp(-(order[g] + truth[f] - truth[s])))
            for col, value in zip(cols, (f, s, (u < p_first).astype(float), np.full(f.size, g), cluster)):
                col.append(value)
    f, s, y, g, c = (np.concatenate(col) for col in cols)
    names = [f"m{x}" for x in range(k)]
    return stats._Entries(names, f.astype(int), s.astype(int), y, g.astype(int), [f"j{x}" for x in range(judges)],
                          c.astype(int), inputs, {name: Counter() for name in names})


def bradley_terry(rows: list[Row], quick: bool, rng) -> None:
    sims = 60 if quick else 500
    logit = math.log(0.85 / 0.15)
    cases = [
        ("5 items × 3 comparisons per pair, 1 judge, random order, independent", np.linspace(-1, 1, 5), [0.0], 3, 1,
         False, 0.0),
        ("6 items, 40 inputs, 3 judges × both orders, rho 0.6", np.linspace(-1, 1, 6), [0.0] * 3, 40, 1, True, 0.6),
    ]
    if not quick:
        cases += [
            ("6 items, 15 inputs, 3 judges × both orders, rho 0.6", np.linspace(-1, 1, 6), [0.0] * 3, 15, 1, True, 0.6),
            ("6 items, 100 inputs, 3 judges × both orders, rho 0.3", np.linspace(-1, 1, 6), [0.0] * 3, 100, 1, True, 0.3),
            ("6 items, 40 inputs, 3 judges (one at 0.85 first) × both orders, rho 0.6", np.linspace(-1, 1, 6),
             [logit, 0.0, 0.0], 40, 1, True, 0.6),
            ("6 items, 40 inputs, 3 judges all at 0.85 first, one random order, rho 0.3", np.linspace(-1, 1, 6),
             [logit] * 3, 40, 1, False, 0.3),
            ("10 items, 30 inputs, 5 judges × both orders, rho 0.8", np.linspace(-1.5, 1.5, 10), [0.0] * 5, 30, 1,
             True, 0.8),
        ]
    for scenario, truth, order, inputs, per_pair, both, rho in cases:
        order = np.array(order)
        centred = truth - truth.mean()
        hits = total = order_hits = order_total = 0
        for _ in range(sims):
            e = simulate_pairs(rng, truth, order, inputs, per_pair, both, rho)
            if rho == 0.0:  # independent comparisons: each is its own cluster
                e.cluster, e.clusters = np.arange(e.score.size), e.score.size
            model = stats._pairwise_model(e, LEVEL, True)
            for r in model["strengths"]:
                x = centred[int(r["item"][1:])]
                hits += r["lo"] <= x <= r["hi"]
                total += 1
            for o in model["order_effect"]:
                a = order[int(o["judge"][1:])]
                order_hits += o["lo"] <= a <= o["hi"]
                order_total += 1
        rows.append(Row("Bradley–Terry strength", "cluster-robust sandwich, t", scenario, hits / total, sims))
        rows.append(Row("first-position effect", "cluster-robust sandwich, t", scenario, order_hits / order_total, sims))


def _bias_data(rng, judges: int, inputs: int, both: bool, rho: float, biased: float | None = None) -> list[dict]:
    """4 candidates, every pair on every input; with ``biased`` the first judge picks the first
    answer with that probability between the (then equal) candidates, as in issue 12."""
    order = np.zeros(judges)
    truth = np.linspace(-1, 1, 4)
    if biased is not None:
        order[0], truth = math.log(biased / (1 - biased)), np.zeros(4)
    e = simulate_pairs(rng, truth, order, inputs, 1, both, rho)
    names = ("first", "second")
    return [{"item": int(c), "judge": f"j{g}", "first": int(f), "second": int(s), "winner": names[int(y == 0)]}
            for f, s, y, g, c in zip(e.first, e.second, e.score, e.judge, e.cluster)]


def position_bias(rows: list[Row], quick: bool, rng) -> None:
    sims = 200 if quick else 1000
    cases = [(3, 10, True, 0.5), (3, 10, False, 0.5)] if quick else \
        [(j, n, both, 0.6) for j in (1, 3) for n in (10, 30) for both in (True, False)]
    for judges, inputs, both, rho in cases:
        reject = 0
        for _ in range(sims):
            p = stats.position_bias(_bias_data(rng, judges, inputs, both, rho))["p_value"]
            reject += p is not None and p < 0.05
        rows.append(Row("position-bias test, all judges", "sign-flip mid-p over pairs",
                        f"no bias; {judges} judge(s), {inputs} inputs × 6 pairs, "
                        f"{'both orders' if both else 'one order'}, rho {rho}", reject / sims, sims, kind="size"))
    runs = 100 if quick else 1000
    flagged = hidden = false_flags = 0
    for _ in range(runs):
        comps = _bias_data(rng, 5, 5, False, 0.0, biased=0.85)
        by_judge = stats.position_bias_by_judge(comps)
        flagged += by_judge[0]["p_value"] < 0.01 and by_judge[0]["flagged"]
        false_flags += any(r["flagged"] for r in by_judge[1:])
        hidden += stats.position_bias(comps)["p_value"] >= 0.05
    scenario = "5 judges, one at 0.85 first; 30 comparisons each (5 inputs × 6 pairs, one order)"
    rows.append(Row("per-judge test: biased judge flagged (p < 0.01)", "sign test mid-p + Holm", scenario,
                    flagged / runs, runs, kind="power"))
    rows.append(Row("per-judge test: an unbiased judge flagged", "sign test mid-p + Holm", scenario,
                    false_flags / runs, runs, kind="size"))
    rows.append(Row("pooled test misses it (p ≥ 0.05)", "sign-flip mid-p", scenario, hidden / runs, runs, kind="check"))


# --------------------------------------------------------------------------- juries


def juries(rows: list[Row], quick: bool, rng) -> None:
    """Verdicts of independent judges (P(compliant) = 0.8), some replies unread."""
    runs = 2000 if quick else 20000
    yes, no = ComplianceVerdict(True, None, None, ""), ComplianceVerdict(False, None, None, "")
    votes = rng.random((runs, 3)) < 0.8
    outcomes = Counter(jury_verdict([yes if v else no for v in row[:2]], "majority")[0] for row in votes)
    rows.append(Row("2 judges, majority, every reply read: share unparsed", "whole-jury denominator", "P(yes) 0.8",
                    outcomes[None] / runs, runs, kind="check"))
    rows.append(Row("2 judges, majority, every reply read: share tie", "whole-jury denominator", "P(yes) 0.8",
                    outcomes["tie"] / runs, runs, kind="check"))
    for unread in (0.0, 0.25, 0.5):
        lost = rng.random(votes.shape) < unread
        share = sum(jury_verdict([None if gone else (yes if v else no) for v, gone in zip(row, miss)],
                                 "unanimous")[0] is True for row, miss in zip(votes, lost)) / runs
        rows.append(Row("3 judges, unanimous: share compliant", "every judge read and agreed",
                        f"P(yes) 0.8, unread share {unread}", share, runs, kind="check"))


# --------------------------------------------------------------------------- PPI


def ppi(rows: list[Row], quick: bool, rng) -> None:
    """Prediction-powered inference, when batchery.eval.calibration provides ``ppi_mean``
    (``ppi_mean(y, yhat, yhat_unlabelled, clusters_labelled, clusters_unlabelled, alpha, bounds=)``
    returning (estimate, low, high, ...)). A biased jury: it passes 30 % of bad answers."""
    try:
        from batchery.eval.calibration import ppi_mean
    except ImportError:
        rows.append(Row("PPI calibrated rate", "skipped: batchery.eval.calibration.ppi_mean not found", "", 0.0, 0,
                        kind="check"))
        return
    sims = 200 if quick else 2000
    for labels in (100, 200):
        hits = 0
        for _ in range(sims):
            statements, per = 60, 40
            rate = rng.beta(8, 2, size=statements)  # the population rate is 0.8
            clusters = np.repeat(np.arange(statements), per)
            truth = rng.random(clusters.size) < rate[clusters]
            jury = truth | (rng.random(clusters.size) < 0.3)  # lenient: passes 30 % of bad answers
            chosen = rng.permutation(clusters.size)[:labels]
            rest = np.setdiff1d(np.arange(clusters.size), chosen)
            est = ppi_mean(truth[chosen].astype(float), jury[chosen].astype(float), jury[rest].astype(float),
                           clusters[chosen], clusters[rest], 0.05, bounds=(0.0, 1.0))  # as the report calls it
            hits += est[1] <= 0.8 <= est[2]
        rows.append(Row("PPI calibrated rate", "ppi_mean (PPI++, cluster-robust, logit-scale jackknife)",
                        f"biased jury, {labels} labels, 60 statements × 40 answers", hits / sims, sims))


# --------------------------------------------------------------------------- table


STUDIES = (one_statement, several_statements, likert_means, kappas, bradley_terry, position_bias, juries, ppi)


def run(quick: bool = False, seed: int = 20260512, on_rows=None) -> list[Row]:
    """Every study in turn (one generator, seeded); ``on_rows`` sees each study's rows as they come."""
    rng = np.random.default_rng(seed)
    rows: list[Row] = []
    for study in STUDIES:
        new: list[Row] = []
        if study is one_statement:
            study(new, quick)
        else:
            study(new, quick, rng)
        rows += new
        if on_rows:
            on_rows(new)
    return rows


HEADER = "| estimate | method | scenario | result | runs |\n|---|---|---|---|---|"


def table(rows: list[Row]) -> str:
    lines = []
    for r in rows:
        if r.kind == "coverage":
            value = f"coverage {r.value:.3f}" + (f" ± {r.se:.3f}" if r.runs else " (exact)")
        else:
            value = f"{r.kind} {r.value:.3f}" + (f" ± {r.se:.3f}" if r.runs and r.kind != "check" else "")
        method = r.method + (" (reference, not used)" if r.reference else "")
        lines.append(f"| {r.group} | {method} | {r.scenario} | {value} | {r.runs or '-'} |")
    return "\n".join(lines)


def summary(rows: list[Row]) -> str:
    """One line per estimate and method: how many scenarios, the lowest and highest value (with the
    scenario of the lowest), so the README can show the whole study in a screenful."""
    groups: dict[tuple, list[Row]] = {}
    for r in rows:
        groups.setdefault((r.group, r.method, r.kind, r.reference), []).append(r)
    lines = ["| estimate | method | scenarios | lowest (where) | highest |", "|---|---|---|---|---|"]
    for (group, method, kind, reference), members in groups.items():
        low, high = min(members, key=lambda r: r.value), max(members, key=lambda r: r.value)
        se = f" ± {low.se:.3f}" if low.runs and kind != "check" else ""
        where = f" ({low.scenario})" if len(members) > 1 or low.scenario else ""
        label = f"{kind} " if kind != "coverage" else ""
        lines.append(f"| {group} | {method}{' (reference, not used)' if reference else ''} | {len(members)} | "
                     f"{label}{low.value:.3f}{se}{where} | {high.value:.3f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and scenarios (the test suite's version)")
    parser.add_argument("--seed", type=int, default=20260512)
    args = parser.parse_args()
    started = time.monotonic()
    print(HEADER, flush=True)
    rows = run(quick=args.quick, seed=args.seed, on_rows=lambda new: print(table(new), flush=True))
    print("\nSummary\n\n" + summary(rows))
    used = [r for r in rows if r.kind == "coverage" and not r.reference and r.runs >= 0]
    worst = min(used, key=lambda r: r.value)
    print(f"\nlowest coverage of a method the report uses: {worst.value:.3f} ({worst.group}, {worst.scenario}); "
          f"{time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
