"""The statistics of an evaluation: compliance rates with honest intervals, judge agreement,
position bias, and rankings from pairwise comparisons.

Everything takes plain Python values (ints, lists, dicts of records) and returns small
dataclasses or dicts that are JSON-serialisable: floats are Python floats, and a quantity that is
undefined (a rate over zero items, a kappa with no variance) is ``None``, never NaN.

Data depend on each other: inputs of one statement, judges of one answer and both orders of one
pair are not independent. Every interval here therefore treats a *cluster* (a statement, an input)
as the unit of independence, and every interval says which method made it (a ``method`` field).
Each method's coverage is measured by simulation in ``benchmarks/stats_coverage.py``; the README's
statistics section has the table.

- one statement's rate (inputs independent): Clopper–Pearson, exact, never below 95 %;
- a rate over several statements: Korn–Graubard (Clopper–Pearson on the effective sample size
  from the cluster-robust variance, with t degrees of freedom = statements − 1);
- a mean (Likert scores): cluster-robust t interval, df = statements − 1;
- kappas: percentile bootstrap over the items the judges rated;
- Bradley–Terry strengths and the first-position effect: one logistic fit with a cluster-robust
  (sandwich) covariance and a t reference, df = clusters − 1;
- Elo: percentile bootstrap over clusters;
- position bias: an exact sign-flip test on per-cluster sums with mid-p (discordant reversed
  pairs when both orders were judged).

The maths uses numpy and scipy; statsmodels provides the Wilson interval and the kappas. Only the
Bradley–Terry Newton fit, the sign-flip distribution and the Elo replay are written here.

This module imports numpy/scipy/statsmodels at the top; it is imported only by the evaluation
layer, never by ``batchery --help``.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import combinations
from typing import Any

import numpy as np
from scipy import sparse as _sparse
from scipy import special as _special
from scipy import stats as _sps
from statsmodels.stats import inter_rater as _ir
from statsmodels.stats.proportion import proportion_confint

from .numbers import clip01
from .verdicts import TIE

__all__ = [
    "Interval",
    "agreement",
    "bradley_terry",
    "clopper_pearson",
    "cluster_rate",
    "cohen_kappa",
    "compliance_table",
    "elo",
    "elo_interval",
    "fleiss_kappa",
    "mean_interval",
    "pairwise_model",
    "pairwise_summary",
    "position_bias",
    "position_bias_by_judge",
    "reverse_consistency",
    "sign_flip_test",
    "wilson",
]


@dataclass(frozen=True)
class Interval:
    """An estimate (a rate or a mean) with a confidence interval and the method that made it;
    every number is None when the estimate is undefined (n == 0)."""

    rate: float | None
    lo: float | None
    hi: float | None
    n: int
    method: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- helpers


def _float(x: Any) -> float | None:
    """A Python float, or None for None/NaN/inf (JSON has no NaN)."""
    if x is None:
        return None
    value = float(x)
    return value if math.isfinite(value) else None




def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")


def _counts(successes: int, n: int) -> tuple[int, int]:
    successes, n = int(successes), int(n)
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    return successes, n


# --------------------------------------------------------------------------- rates


def wilson(successes: int, n: int, level: float = 0.95) -> Interval:
    """Rate with a Wilson score interval (verdicts treated as independent).

    Kept for comparison and for callers with truly independent trials; the evaluation's tables use
    :func:`clopper_pearson` (one statement) and :func:`cluster_rate` (several statements), because
    Wilson undercovers near 0 and 1 with small n (90.4 % at n = 10, p = 0.99) and ignores clustering.
    """
    _check_level(level)
    successes, n = _counts(successes, n)
    if n == 0:
        return Interval(None, None, None, 0, "wilson")
    lo, hi = proportion_confint(successes, n, alpha=1.0 - level, method="wilson")
    return Interval(successes / n, clip01(lo), clip01(hi), n, "wilson")


def _beta_bounds(x: np.ndarray, n: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Clopper–Pearson bounds for (possibly fractional) x successes in n trials, vectorised (beta
    quantiles via scipy.special: the distribution objects cost a millisecond a call)."""
    q = (1.0 - level) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = np.where(x > 0, _special.betaincinv(np.maximum(x, 1e-12), n - x + 1, q), 0.0)
        hi = np.where(x < n, _special.betaincinv(x + 1, np.maximum(n - x, 1e-12), 1 - q), 1.0)
    return lo, hi


def clopper_pearson(successes: int, n: int, level: float = 0.95) -> Interval:
    """Rate with the Clopper–Pearson ("exact") interval.

    Used for one statement's cell (a few inputs, rates near 0 or 1): it covers at least ``level``
    for every true rate, by construction. Wilson, shorter, covers only 90.4 % at n = 10, p = 0.99.
    """
    _check_level(level)
    successes, n = _counts(successes, n)
    if n == 0:
        return Interval(None, None, None, 0, "clopper-pearson")
    lo, hi = _beta_bounds(np.array(float(successes)), np.array(float(n)), level)
    return Interval(successes / n, clip01(float(lo)), clip01(float(hi)), n, "clopper-pearson")


def _cluster_arrays(values: Sequence[float], sizes: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(list(values), dtype=float).reshape(-1)
    n = np.asarray(list(sizes), dtype=float).reshape(-1)
    if s.shape != n.shape:
        raise ValueError(f"{s.size} cluster totals but {n.size} cluster sizes")
    if np.any(n < 0):
        raise ValueError("cluster sizes must be >= 0")
    keep = n > 0
    return s[keep], n[keep]


def _ratio_variance(s: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ratio estimate sum(s)/sum(n) over the last axis (clusters) and its cluster-robust (CR1)
    variance, vectorised over leading axes (the coverage study runs thousands at once)."""
    total = n.sum(axis=-1)
    estimate = s.sum(axis=-1) / total
    clusters = s.shape[-1]
    resid = s - estimate[..., None] * n
    var = clusters / (clusters - 1) * np.sum(resid**2, axis=-1) / total**2
    return estimate, var


def _korn_graubard(s: np.ndarray, n: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rate, lo, hi per row of (rows × clusters) success and size arrays (≥ 2 clusters, n > 0)."""
    rate, var = _ratio_variance(s, n)
    total = n.sum(axis=-1)
    fewest = total**2 / np.sum(n**2, axis=-1)  # effective n when the inputs of a statement all agree
    q = 1 - (1 - level) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        estimated = np.clip(rate * (1 - rate) / var, fewest, total)
        # The t adjustment pays for estimating the variance; the no-spread case estimates nothing.
        estimated *= (_special.stdtrit(total - 1, q) / _special.stdtrit(s.shape[-1] - 1, q)) ** 2
    n_eff = np.where(var > 0, estimated, fewest)
    lo, hi = _beta_bounds(rate * n_eff, n_eff, level)
    return rate, lo, hi


def cluster_rate(
    successes_per_cluster: Sequence[int],
    n_per_cluster: Sequence[int],
    level: float = 0.95,
) -> Interval:
    """Pooled rate sum(s)/sum(n) over clusters (statements) with a Korn–Graubard interval.

    Inputs of one statement are correlated (a model that breaks a rule tends to break it on every
    input), so a binomial interval over all verdicts is too narrow. Korn & Graubard (1998), the
    interval survey statisticians use for proportions from clustered samples: the cluster-robust
    variance v of the rate gives an effective sample size n* = r(1 − r)/v, shrunk by
    (t_{n−1}/t_{C−1})² for the C − 1 degrees of freedom the variance rests on, and the interval is
    Clopper–Pearson on r·n* successes in n*. It stays at or above its level with 5–20 statements,
    where the BCa cluster bootstrap covered only 0.89–0.915, and keeps to [0, 1] near the bounds.

    n* is kept between the number of clusters (every input of a statement alike) and the number
    of verdicts (all independent). When every statement has the same rate (all 0 or all 1) the
    variance is 0 and says nothing about the correlation, so the cautious end is taken: n* =
    clusters (no variance was estimated, so no t adjustment). One cluster: Clopper–Pearson on its
    counts. Clusters with n == 0 are dropped.
    """
    _check_level(level)
    s, n = _cluster_arrays(successes_per_cluster, n_per_cluster)
    if np.any(s < 0) or np.any(s > n):
        raise ValueError("need 0 <= successes <= n in every cluster")
    total_s, total_n = round(float(s.sum())), round(float(n.sum()))
    if total_n == 0:
        return Interval(None, None, None, 0, "korn-graubard")
    if s.size < 2:
        return clopper_pearson(total_s, total_n, level)
    rate, lo, hi = _korn_graubard(s[None, :], n[None, :], level)
    return Interval(float(rate[0]), clip01(lo[0]), clip01(hi[0]), total_n, "korn-graubard")


def _cluster_t(s: np.ndarray, n: np.ndarray, level: float,
               bounds: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, lo, hi per row of (rows × clusters) total and size arrays (≥ 2 clusters, n > 0).

    With ``bounds`` (a scale such as Likert 1–5) the t interval is made on the logit of the mean
    rescaled to [0, 1] and mapped back, so it bends away from the bound the mean sits near; a
    mean on a bound or with no spread gets Korn–Graubard on the rescaled mean instead."""
    mean, var = _ratio_variance(s, n)
    t = _special.stdtrit(s.shape[-1] - 1, 1 - (1 - level) / 2)
    if bounds is None:
        half = t * np.sqrt(var)
        return mean, mean - half, mean + half
    low, high = bounds
    width = high - low
    r = (mean - low) / width
    inside = (r > 0) & (r < 1) & (var > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        centre = np.log(r / (1 - r))
        half = t * np.sqrt(var) / width / (r * (1 - r))
        lo = low + width / (1 + np.exp(-(centre - half)))
        hi = low + width / (1 + np.exp(-(centre + half)))
    if not np.all(inside):
        _, kg_lo, kg_hi = _korn_graubard((s - low * n) / width, n, level)
        lo = np.where(inside, lo, low + width * kg_lo)
        hi = np.where(inside, hi, low + width * kg_hi)
    return mean, lo, hi


def mean_interval(
    sum_per_cluster: Sequence[float],
    n_per_cluster: Sequence[int],
    level: float = 0.95,
    bounds: tuple[float, float] | None = None,
) -> Interval:
    """Mean sum(values)/sum(n) over clusters with a cluster-robust t interval (df = clusters − 1).

    For Likert scores: answers to one statement are correlated, so the standard error comes from
    the spread of the statements' totals around the mean (the CR1 sandwich of a ratio), and the
    t quantile on C − 1 degrees of freedom keeps the level with few statements. Scores live on a
    bounded scale and their means pile up near its ends, where a symmetric t interval covered
    only 0.87–0.92 with 5–10 statements; given ``bounds`` (1, 5) the interval is made on the logit
    of the rescaled mean (``method`` "cluster-logit-t"), which held 0.95–0.99 in the coverage
    study. With one cluster there is no interval (``lo``/``hi`` None): one statement's scores say
    nothing about how much another statement would differ.
    """
    _check_level(level)
    method = "cluster-t" if bounds is None else "cluster-logit-t"
    s, n = _cluster_arrays(sum_per_cluster, n_per_cluster)
    total_n = round(float(n.sum()))
    if total_n == 0:
        return Interval(None, None, None, 0, method)
    if s.size < 2:
        return Interval(float(s.sum() / n.sum()), None, None, total_n, method)
    mean, lo, hi = _cluster_t(s[None, :], n[None, :], level, bounds)
    return Interval(float(mean[0]), float(lo[0]), float(hi[0]), total_n, method)


def _as_keys(by: str | Sequence[str]) -> tuple[str, ...]:
    keys = (by,) if isinstance(by, str) else tuple(by)
    if not keys:
        raise ValueError("by must name at least one field")
    return keys


def _sort_key(value: Any) -> tuple[int, str]:
    """Sort None last and mixed types without TypeError."""
    return (1, "") if value is None else (0, str(value))


def compliance_table(
    records: Iterable[Mapping[str, Any]],
    by: str | Sequence[str],
    *,
    level: float = 0.95,
) -> list[dict[str, Any]]:
    """Compliance rate per group of verdict records, with the interval that fits the group.

    Each record has ``candidate``, ``statement``, ``section``, ``spec`` and ``verdict``: True /
    False, ``"tie"`` (the jury split evenly) or None (no verdict could be read). Ties and unparsed
    verdicts are left out of ``n`` (the rate is compliant ÷ decided) but counted in ``ties`` and
    ``unparsed``, so they stay visible instead of silently shrinking the denominator.

    Rows: the group fields, then ``n, compliant, ties, unparsed, rate, lo, hi, method,
    statements``. The interval is Clopper–Pearson when the group is one statement (its inputs are
    the independent units) and Korn–Graubard over statements when it spans several (inputs of one
    statement are correlated): see :func:`clopper_pearson` and :func:`cluster_rate`.

    A table grouped by ``candidate`` alone is sorted by rate descending (a leaderboard); other
    tables are sorted by their group fields.
    """
    keys = _as_keys(by)
    groups: dict[tuple, dict[str, Any]] = {}
    for rec in records:
        gkey = tuple(rec.get(k) for k in keys)
        g = groups.setdefault(gkey, {"compliant": 0, "n": 0, "ties": 0, "unparsed": 0, "clusters": {}})
        verdict = rec.get("verdict")
        if verdict is None:
            g["unparsed"] += 1
            continue
        if verdict == TIE:
            g["ties"] += 1
            continue
        ok = bool(verdict)
        g["n"] += 1
        g["compliant"] += ok
        cluster = g["clusters"].setdefault((rec.get("spec"), rec.get("statement")), [0, 0])
        cluster[0] += ok
        cluster[1] += 1

    rows: list[dict[str, Any]] = []
    for gkey, g in groups.items():
        if len(g["clusters"]) >= 2:
            s_arr, n_arr = zip(*g["clusters"].values())
            ci = cluster_rate(s_arr, n_arr, level)
        else:
            ci = clopper_pearson(g["compliant"], g["n"], level)
        row: dict[str, Any] = dict(zip(keys, gkey))
        row.update(
            n=g["n"],
            compliant=g["compliant"],
            ties=g["ties"],
            unparsed=g["unparsed"],
            rate=ci.rate,
            lo=ci.lo,
            hi=ci.hi,
            method=ci.method,
            statements=len(g["clusters"]),
        )
        rows.append(row)

    if keys == ("candidate",):
        rows.sort(key=lambda r: (r["rate"] is None, -(r["rate"] or 0.0), _sort_key(r["candidate"])))
    else:
        rows.sort(key=lambda r: tuple(_sort_key(r[k]) for k in keys))
    return rows


# --------------------------------------------------------------------------- agreement


def _codes(labels: Iterable[Hashable]) -> dict[Hashable, int]:
    """Integer code per distinct label (labels may be bools, strings, ints...)."""
    distinct = sorted(set(labels), key=lambda x: (type(x).__name__, str(x)))
    return {label: i for i, label in enumerate(distinct)}


def cohen_kappa(a: Sequence[Hashable | None], b: Sequence[Hashable | None]) -> float | None:
    """Cohen's kappa between two judges' labels on the same items (statsmodels).

    Kappa rather than raw agreement because two judges that both say "compliant" 95% of the time
    agree ~90% by chance alone. Items where either label is None are skipped. Returns None when
    kappa is undefined: no items, or both judges give one and the same label to everything.
    """
    if len(a) != len(b):
        raise ValueError(f"label lists differ in length: {len(a)} vs {len(b)}")
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    if not pairs:
        return None
    codes = _codes([x for x, _ in pairs] + [y for _, y in pairs])
    k = len(codes)
    table = np.zeros((k, k))
    for x, y in pairs:
        table[codes[x], codes[y]] += 1
    total = table.sum()
    p_exp = float((table.sum(0) * table.sum(1)).sum() / total**2)
    if math.isclose(p_exp, 1.0):
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = _ir.cohens_kappa(table, return_results=False)
    return _float(kappa)


def fleiss_kappa(labels_by_item: Sequence[Sequence[Hashable | None]]) -> float | None:
    """Fleiss' kappa for two or more judges (statsmodels ``aggregate_raters`` + ``fleiss_kappa``).

    ``labels_by_item`` holds one list of labels per item (one label per judge). Fleiss needs the
    same number of ratings per item, so items with a None label or fewer labels than the most
    complete item are dropped. Returns None when undefined (no items, fewer than 2 judges, or
    every label identical).
    """
    items = [list(labels) for labels in labels_by_item]
    if not items:
        return None
    m = max(len(labels) for labels in items)
    items = [labels for labels in items if len(labels) == m and all(x is not None for x in labels)]
    if m < 2 or not items:
        return None
    codes = _codes(x for labels in items for x in labels)
    data = np.array([[codes[x] for x in labels] for labels in items], dtype=int)
    table, _ = _ir.aggregate_raters(data, n_cat=len(codes))
    shares = table.sum(0) / table.sum()
    if math.isclose(float((shares**2).sum()), 1.0):
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = _ir.fleiss_kappa(table, method="fleiss")
    return _float(kappa)


KAPPA_RESAMPLES = 1000


def _kappa_from_tables(tables: np.ndarray, k: int) -> np.ndarray:
    """Cohen's kappa of each row of ``tables`` (replicates × k² joint counts), vectorised."""
    t = tables.reshape(-1, k, k)
    total = t.sum(axis=(1, 2))
    po = np.trace(t, axis1=1, axis2=2) / total
    pe = np.sum(t.sum(axis=2) * t.sum(axis=1), axis=1) / total**2
    with np.errstate(divide="ignore", invalid="ignore"):
        return (po - pe) / (1 - pe)


def _fleiss_from_counts(weights: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Fleiss' kappa for items weighted by ``weights`` (replicates × items), vectorised."""
    m = table[0].sum()
    per_item = (np.sum(table**2, axis=1) - m) / (m * (m - 1))
    n = weights.sum(axis=1)
    shares = weights @ table / (n[:, None] * m)
    p_bar = weights @ per_item / n
    pe = np.sum(shares**2, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (p_bar - pe) / (1 - pe)


def _percentile(values: np.ndarray, level: float) -> tuple[float | None, float | None]:
    values = values[np.isfinite(values)]
    if values.size < 2:
        return None, None
    q = (1.0 - level) / 2
    lo, hi = np.quantile(values, [q, 1.0 - q])
    return _float(lo), _float(hi)


def _bootstrap_items(n: int, statistic: Any, resamples: int, seed: int | None) -> np.ndarray:
    """``statistic(weights)`` over bootstrap replicates of n items, where ``weights`` (replicates ×
    n) says how often each item is drawn; replicates are made in chunks to bound memory."""
    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, 2_000_000 // max(n, 1)))
    out = []
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        draws = rng.integers(0, n, size=(size, n))
        flat = (np.arange(size)[:, None] * n + draws).reshape(-1)
        weights = np.bincount(flat, minlength=size * n).reshape(size, n).astype(float)
        out.append(statistic(weights))
    return np.concatenate(out)


def kappa_interval(
    a: Sequence[Hashable | None], b: Sequence[Hashable | None], level: float = 0.95,
    resamples: int = KAPPA_RESAMPLES, seed: int | None = 0,
) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval for Cohen's kappa, resampling the items both judges rated."""
    _check_level(level)
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    if len(pairs) < 2 or cohen_kappa([x for x, _ in pairs], [y for _, y in pairs]) is None:
        return None, None
    codes = _codes([x for x, _ in pairs] + [y for _, y in pairs])
    k = len(codes)
    cell = np.array([codes[x] * k + codes[y] for x, y in pairs])
    onehot = np.eye(k * k)[cell]  # items × k² joint-count cells
    kappas = _bootstrap_items(len(pairs), lambda w: _kappa_from_tables(w @ onehot, k), resamples, seed)
    return _percentile(kappas, level)


def fleiss_interval(
    labels_by_item: Sequence[Sequence[Hashable | None]], level: float = 0.95,
    resamples: int = KAPPA_RESAMPLES, seed: int | None = 0,
) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval for Fleiss' kappa, resampling items (same rules as
    :func:`fleiss_kappa` for which items count)."""
    _check_level(level)
    if fleiss_kappa(labels_by_item) is None:
        return None, None
    items = [list(labels) for labels in labels_by_item]
    m = max(len(labels) for labels in items)
    items = [labels for labels in items if len(labels) == m and all(x is not None for x in labels)]
    codes = _codes(x for labels in items for x in labels)
    data = np.array([[codes[x] for x in labels] for labels in items], dtype=int)
    table, _ = _ir.aggregate_raters(data, n_cat=len(codes))
    counts = table.astype(float)
    kappas = _bootstrap_items(len(items), lambda w: _fleiss_from_counts(w, counts), resamples, seed)
    return _percentile(kappas, level)


def agreement(
    verdicts_by_judge: Mapping[Any, Mapping[Any, Hashable | None]],  # Any: Mapping's key type is invariant
    level: float = 0.95,
) -> dict[str, Any]:
    """Agreement between judges: pairwise Cohen's kappa and overall Fleiss' kappa, with intervals.

    ``verdicts_by_judge`` maps judge -> {item -> label}; None or missing labels are skipped.
    Returns ``{"judges", "pairwise": [{a, b, kappa, lo, hi, agreement, n}], "fleiss_kappa",
    "fleiss_lo", "fleiss_hi", "n_items", "method"}``, where ``agreement`` is the raw share of
    items with the same label (useful when kappa is None) and ``n_items`` counts the items every
    judge labelled (the items Fleiss' kappa is over). Intervals: percentile bootstrap over items
    (``method``), seeded so the report is reproducible.
    """
    judges = list(verdicts_by_judge)
    pairwise = []
    for ja, jb in combinations(judges, 2):
        va, vb = verdicts_by_judge[ja], verdicts_by_judge[jb]
        common = [i for i in va if i in vb and va[i] is not None and vb[i] is not None]
        la, lb = [va[i] for i in common], [vb[i] for i in common]
        same = sum(x == y for x, y in zip(la, lb))
        lo, hi = kappa_interval(la, lb, level)
        pairwise.append(
            {
                "a": ja,
                "b": jb,
                "kappa": cohen_kappa(la, lb),
                "lo": lo,
                "hi": hi,
                "agreement": same / len(common) if common else None,
                "n": len(common),
            }
        )
    fleiss, fleiss_lo, fleiss_hi, n_items = None, None, None, 0
    if len(judges) >= 2:
        first = verdicts_by_judge[judges[0]]
        complete = [
            i for i in first if all(verdicts_by_judge[j].get(i) is not None for j in judges)
        ]
        n_items = len(complete)
        labels = [[verdicts_by_judge[j][i] for j in judges] for i in complete]
        fleiss = fleiss_kappa(labels)
        fleiss_lo, fleiss_hi = fleiss_interval(labels, level)
    return {"judges": judges, "pairwise": pairwise, "fleiss_kappa": fleiss, "fleiss_lo": fleiss_lo,
            "fleiss_hi": fleiss_hi, "n_items": n_items, "method": "bootstrap-percentile (items)"}


# --------------------------------------------------------------------------- pairwise


_WINNERS = ("first", "second", "tie")
SIGN_FLIP_EXACT_UP_TO = 50_000  # total |cluster sums| up to which the null distribution is exact


def _winner(comp: Mapping[str, Any]) -> str | None:
    winner = comp.get("winner")
    if winner is not None and winner not in _WINNERS:
        raise ValueError(f"winner must be one of {_WINNERS} or None, got {winner!r}")
    return winner


def _cluster(comp: Mapping[str, Any], index: int) -> Hashable:
    """The unit of independence of a comparison: its ``item`` (the input, or the pair instance),
    which every judge and both orders of that input share; a comparison without one stands alone."""
    item = comp.get("item")
    return ("#", index) if item is None else ("item", item)


def sign_flip_test(cluster_sums: Iterable[float]) -> float | None:
    """Two-sided mid-p value of an exact sign-flip test that the unit sums are symmetric about 0.

    Position bias: a unit is one pair of answers on one input (every judge and order of it), and
    its sum is (first-position wins − second-position wins) over its decisive verdicts. Without
    bias, showing that pair the other way round is as likely as what was shown and negates the
    sum, so each sum's sign is a fair coin whatever the candidates' strengths and however the
    verdicts depend on each other (the order is randomised per pair, so units are independent
    under the null). Concordant reversed pairs add 0 (one first-position win, one second), so with
    both orders judged this is McNemar's test on the discordant reversed pairs; with one
    comparison per unit it is the sign (binomial) test. The null distribution of the total is
    computed exactly (a convolution over the distinct |sums|) up to SIGN_FLIP_EXACT_UP_TO, else by
    its normal approximation.

    The mid-p (P(|T| > |t|) + ½·P(|T| = |t|)) makes the test's size close to its nominal level
    instead of well below it, as the exact p of a discrete test is; the coverage study measures it.
    Returns None when every sum is 0 (there is nothing to test).
    """
    sums = np.rint(np.asarray(list(cluster_sums), dtype=float)).astype(np.int64)
    sums = sums[sums != 0]
    if sums.size == 0:
        return None
    observed = abs(int(sums.sum()))
    magnitude = np.abs(sums)
    total = int(magnitude.sum())
    if total > SIGN_FLIP_EXACT_UP_TO:
        z = observed / math.sqrt(float(np.sum(magnitude.astype(float) ** 2)))
        return float(2 * _sps.norm.sf(z))
    pmf = np.ones(1)
    for value, count in zip(*np.unique(magnitude, return_counts=True)):
        part = np.zeros(2 * int(value) * int(count) + 1)
        part[:: 2 * int(value)] = _sps.binom.pmf(np.arange(count + 1), count, 0.5)
        if pmf.size * part.size > 1_000_000:
            # scipy.signal is slow to import; only large tests need it.
            from scipy.signal import fftconvolve

            pmf = fftconvolve(pmf, part)
        else:
            pmf = np.convolve(pmf, part)
    pmf = np.clip(pmf, 0.0, None)
    pmf /= pmf.sum()
    t = np.abs(np.arange(pmf.size) - total)  # pmf[i] is P(T = i - total)
    p = float(pmf[t > observed].sum() + 0.5 * pmf[t == observed].sum())
    return min(1.0, p)


def _pair_unit(comp: Mapping[str, Any], index: int) -> Hashable:
    """The unit a position-bias test flips: one unordered pair on one input, with all its judges
    and orders (``eval rank`` shows every judge the same order, so judges cannot be split)."""
    pair = tuple(sorted((comp.get("first"), comp.get("second")), key=_sort_key))
    return (_cluster(comp, index), pair)


def position_bias(comparisons: Iterable[Mapping[str, Any]], level: float = 0.95) -> dict[str, Any]:
    """Does the judge (or the pooled judges) favour the answer shown first (position A)?

    Counts first/second/tie wins (and unparsed, winner None); ``share_first`` is the share of
    decisive verdicts won by position A, with a Korn–Graubard interval over the pairs judged
    (``lo``, ``hi``; the verdicts on one pair of one input are not independent). ``p_value`` is
    the two-sided mid-p of :func:`sign_flip_test` on each pair's (first − second) sum (``test``
    names it): McNemar on the discordant reversed pairs when both orders were judged
    (``first_both`` / ``second_both`` count them), a sign test otherwise. With both orders
    judged, share_first is pulled towards 0.5 by the concordant pairs; the discordant pairs carry
    the evidence.
    """
    comparisons = list(comparisons)
    counts = Counter(_winner(c) for c in comparisons)
    first, second, tie = counts["first"], counts["second"], counts["tie"]
    decisive = first + second
    by_unit: dict[Hashable, list[int]] = defaultdict(lambda: [0, 0])
    for index, comp in enumerate(comparisons):
        winner = comp.get("winner")
        if winner in ("first", "second") and comp.get("first") != comp.get("second"):
            cell = by_unit[_pair_unit(comp, index)]
            cell[0] += winner == "first"
            cell[1] += 1
    wins = [c[0] for c in by_unit.values()]
    sizes = [c[1] for c in by_unit.values()]
    ci = cluster_rate(wins, sizes, level) if wins else Interval(None, None, None, 0, "korn-graubard")
    reverse = reverse_consistency(comparisons)
    return {
        "n": first + second + tie + counts[None],
        "first": first,
        "second": second,
        "tie": tie,
        "unparsed": counts[None],
        "decisive": decisive,
        "share_first": ci.rate,
        "lo": ci.lo,
        "hi": ci.hi,
        "first_both": reverse["first_both"],
        "second_both": reverse["second_both"],
        "p_value": sign_flip_test(2 * w - n for w, n in zip(wins, sizes)),
        "test": "sign-flip mid-p over pairs (McNemar on discordant reversed pairs)" if wins else None,
        "pairs": len(by_unit),
    }


def _holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment (None stays None): controls the chance of flagging any
    unbiased judge at the nominal level however many judges there are."""
    known = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(known):
        running = max(running, min(1.0, (len(known) - rank) * p))
        out[i] = running
    return out


def position_bias_by_judge(
    comparisons: Iterable[Mapping[str, Any]], level: float = 0.95, alpha: float = 0.05,
) -> list[dict[str, Any]]:
    """Position bias and reverse consistency for each judge (the ``judge`` key), one row each.

    Pooling hides a biased judge among unbiased ones (one judge at 0.85 among five pools to 0.57),
    so every judge is tested on its own verdicts (:func:`position_bias`). ``p_adjusted`` is Holm's
    adjustment over the judges and ``flagged`` says p_adjusted < ``alpha``. ``consistency`` is the
    judge's reverse-consistency share over ``reversed_pairs``.
    """
    by_judge: dict[Hashable, list[Mapping[str, Any]]] = defaultdict(list)
    for comp in comparisons:
        by_judge[comp.get("judge")].append(comp)
    rows = []
    for judge in sorted(by_judge, key=_sort_key):
        comps = by_judge[judge]
        row = {"judge": judge, **position_bias(comps, level)}
        reverse = reverse_consistency(comps)
        row["reversed_pairs"], row["consistency"] = reverse["n"], reverse["share"]
        rows.append(row)
    for row, adjusted in zip(rows, _holm([r["p_value"] for r in rows])):
        row["p_adjusted"] = adjusted
        row["flagged"] = adjusted is not None and adjusted < alpha
    return rows


def per_template(
    raters: Mapping[str, str],
    verdicts_by_rater: Mapping[str, Mapping[Any, Any]],
    comparisons: Sequence[Mapping[str, Any]],
    level: float = 0.95, alpha: float = 0.05,
) -> list[dict[str, Any]] | None:
    """One row per prompt template (pairwiseLLM's templates x directions grid): agreement between
    the judges that used it (Fleiss' kappa over its compliance verdicts, and over its pairwise
    verdicts as the name that won), and its pairwise position bias and reverse consistency, tested
    per template with Holm's adjustment over the templates. ``raters`` maps a verdict column to
    its template; comparisons carry a ``template`` key. None when only the built-in prompts ran."""
    names = sorted({*raters.values(), *(c["template"] for c in comparisons if c.get("template"))}, key=_sort_key)
    if not names or names == ["builtin"]:
        return None
    rows = []
    for name in names:
        judged = {r: v for r, v in verdicts_by_rater.items() if raters.get(r) == name}
        comps = [c for c in comparisons if c.get("template") == name]
        row: dict[str, Any] = {"template": name, "raters": sorted(judged) or sorted({c.get("judge") for c in comps},
                                                                                     key=_sort_key)}
        judge_agreement = agreement(judged, level) if len(judged) > 1 else None
        row["fleiss_kappa"] = judge_agreement["fleiss_kappa"] if judge_agreement else None
        row["fleiss_lo"] = judge_agreement["fleiss_lo"] if judge_agreement else None
        row["fleiss_hi"] = judge_agreement["fleiss_hi"] if judge_agreement else None
        by_rater: dict[Hashable, dict[Hashable, Hashable | None]] = defaultdict(dict)
        for comp in comps:
            by_rater[comp.get("judge")][(comp.get("item"), comp.get("first"), comp.get("second"))] = _outcome(comp)
        pair_agreement = agreement(by_rater, level) if len(by_rater) > 1 else None
        row["pairwise_kappa"] = pair_agreement["fleiss_kappa"] if pair_agreement else None
        row["pairwise_kappa_lo"] = pair_agreement["fleiss_lo"] if pair_agreement else None
        row["pairwise_kappa_hi"] = pair_agreement["fleiss_hi"] if pair_agreement else None
        bias = position_bias(comps, level) if comps else None
        reverse = reverse_consistency(comps) if comps else None
        for key in ("n", "first", "second", "tie", "unparsed", "share_first", "lo", "hi", "p_value"):
            row[key] = bias[key] if bias else None
        row["reversed_pairs"] = reverse["n"] if reverse else None
        row["consistency"] = reverse["share"] if reverse else None
        rows.append(row)
    for row, adjusted in zip(rows, _holm([r["p_value"] for r in rows])):
        row["p_adjusted"] = adjusted
        row["flagged"] = adjusted is not None and adjusted < alpha
    return rows


def _outcome(comp: Mapping[str, Any]) -> Hashable | None:
    """The verdict in terms of names, independent of position: the winner's name, or "=" for a tie."""
    winner = _winner(comp)
    if winner is None:
        return None
    return ("=",) if winner == "tie" else ("win", comp[winner])


def reverse_consistency(comparisons: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Share of pairs judged in both orders whose verdicts agree once positions are swapped.

    Comparisons are grouped by (judge if a "judge" key is present, item, unordered pair of
    names). Within a group the A-B and B-A verdicts are matched up in input order (repeats pair
    off one to one; surplus ones in one order are ignored); unparsed verdicts are skipped. A pair
    is consistent when the same name wins both times, or both are ties. Inconsistent pairs are
    broken down into ``first_both`` / ``second_both`` (the same *position* won both times: the
    signature of position bias) and ``tie_mixed`` (a tie in one order only).
    """
    orders: dict[tuple, dict[tuple, list]] = defaultdict(lambda: defaultdict(list))
    for comp in comparisons:
        outcome = _outcome(comp)
        first, second = comp.get("first"), comp.get("second")
        if outcome is None or first == second:
            continue
        pair = tuple(sorted((first, second), key=_sort_key))
        group = (comp.get("judge"), comp.get("item"), pair)
        orders[group][(first, second)].append((comp["winner"], outcome))

    n = consistent = first_both = second_both = tie_mixed = 0
    for (_, _, (x, y)), by_order in orders.items():
        for (w1, o1), (w2, o2) in zip(by_order.get((x, y), []), by_order.get((y, x), [])):
            n += 1
            if o1 == o2:
                consistent += 1
            elif w1 == w2 == "first":
                first_both += 1
            elif w1 == w2 == "second":
                second_both += 1
            else:
                tie_mixed += 1
    return {
        "n": n,
        "consistent": consistent,
        "share": consistent / n if n else None,
        "first_both": first_both,
        "second_both": second_both,
        "tie_mixed": tie_mixed,
    }


@dataclass
class _Entries:
    """Usable comparisons as index arrays: first, second, score of first, judge, cluster."""

    names: list[Hashable]
    first: np.ndarray
    second: np.ndarray
    score: np.ndarray
    judge: np.ndarray
    judges: list[Hashable]
    cluster: np.ndarray
    clusters: int
    tally: dict[Hashable, Counter]


def _pairwise_entries(comparisons: Iterable[Mapping[str, Any]]) -> _Entries:
    """Index the names, judges and clusters; one entry per usable comparison; per-name tallies.

    Every name that appears is indexed (even if its only comparisons are unparsed), so tables
    still list a candidate whose judgements all failed.
    """
    names: dict[Hashable, int] = {}
    judges: dict[Hashable, int] = {}
    clusters: dict[Hashable, int] = {}
    rows: list[tuple[int, int, float, int, int]] = []
    tally: dict[Hashable, Counter] = {}
    for index, comp in enumerate(comparisons):
        first, second, winner = comp.get("first"), comp.get("second"), _winner(comp)
        for name in (first, second):
            if name not in names:
                names[name] = len(names)
                tally[name] = Counter()
        if winner is None or first == second:
            continue
        score = {"first": 1.0, "second": 0.0, "tie": 0.5}[winner]
        judge = judges.setdefault(comp.get("judge"), len(judges))
        cluster = clusters.setdefault(_cluster(comp, index), len(clusters))
        rows.append((names[first], names[second], score, judge, cluster))
        if winner == "tie":
            tally[first]["ties"] += 1
            tally[second]["ties"] += 1
        else:
            won, lost = (first, second) if winner == "first" else (second, first)
            tally[won]["wins"] += 1
            tally[lost]["losses"] += 1
    cols = list(zip(*rows)) if rows else [(), (), (), (), ()]
    return _Entries(
        list(names), np.array(cols[0], dtype=int), np.array(cols[1], dtype=int),
        np.array(cols[2], dtype=float), np.array(cols[3], dtype=int), list(judges),
        np.array(cols[4], dtype=int), len(clusters), tally,
    )


BT_RIDGE = 0.01  # a whisper of shrinkage: finite strengths for an item that wins or loses everything


def _sum_zero_basis(k: int) -> np.ndarray:
    """k × (k − 1) orthonormal basis of the vectors that sum to 0 (strengths are mean-centred)."""
    from scipy.linalg import null_space

    return null_space(np.ones((1, k)))


@dataclass
class _BTFit:
    strength: np.ndarray  # k, mean-centred log-strengths
    order: np.ndarray  # G first-position log-odds, one per judge
    var_strength: np.ndarray  # k
    var_order: np.ndarray  # G
    df: int  # clusters − 1


def _bt_fit(e: _Entries, k: int, groups: int, ridge: float = BT_RIDGE) -> _BTFit:
    """Bradley–Terry with a first-position effect per judge, by penalised Newton, with a
    cluster-robust covariance.

    logit P(first wins) = a_judge + b_first − b_second (Agresti's home-advantage model), b summing
    to 0; a tie scores 0.5 (a quasi-likelihood: its variance is left to the robust covariance).
    """
    f, s, y, g, c = e.first, e.second, e.score, e.judge, e.cluster
    z = _sum_zero_basis(k)
    p_theta = k - 1
    theta, a = np.zeros(p_theta), np.zeros(groups)

    def predictor(theta: np.ndarray, a: np.ndarray) -> np.ndarray:
        b = z @ theta
        return b[f] - b[s] + (a[g] if groups else 0.0)

    def objective(theta: np.ndarray, a: np.ndarray) -> float:
        eta = predictor(theta, a)
        return float(np.sum(y * eta - np.logaddexp(0.0, eta)) - ridge / 2 * (theta @ theta + a @ a))

    def information(v: np.ndarray) -> np.ndarray:
        lap = np.bincount(f * k + s, weights=v, minlength=k * k).reshape(k, k)
        h_b = np.diag(lap.sum(0) + lap.sum(1)) - lap - lap.T
        h_ba: np.ndarray = np.zeros((k, groups))
        if groups:
            h_ba = (np.bincount(f * groups + g, weights=v, minlength=k * groups)
                    - np.bincount(s * groups + g, weights=v, minlength=k * groups)).reshape(k, groups)
        info = np.empty((p_theta + groups, p_theta + groups))
        info[:p_theta, :p_theta] = z.T @ h_b @ z
        info[:p_theta, p_theta:] = z.T @ h_ba
        info[p_theta:, :p_theta] = info[:p_theta, p_theta:].T
        info[p_theta:, p_theta:] = np.diag(np.bincount(g, weights=v, minlength=groups)[:groups])
        return info + ridge * np.eye(p_theta + groups)

    current = objective(theta, a)
    for _ in range(100):
        eta = predictor(theta, a)
        prob = 1.0 / (1.0 + np.exp(-eta))
        r = y - prob
        grad = np.concatenate([
            z.T @ (np.bincount(f, weights=r, minlength=k) - np.bincount(s, weights=r, minlength=k)) - ridge * theta,
            np.bincount(g, weights=r, minlength=groups)[:groups] - ridge * a,
        ])
        step = np.linalg.solve(information(prob * (1 - prob)), grad)
        scale = 1.0
        while True:  # Newton on a concave objective; halve the step on the rare overshoot
            new_theta, new_a = theta + scale * step[:p_theta], a + scale * step[p_theta:]
            new = objective(new_theta, new_a)
            if new >= current - 1e-12 or scale < 1e-6:
                break
            scale /= 2
        theta, a, current = new_theta, new_a, new
        if np.max(np.abs(scale * step)) < 1e-9:
            break

    eta = predictor(theta, a)
    prob = 1.0 / (1.0 + np.exp(-eta))
    r = y - prob
    bread = np.linalg.inv(information(prob * (1 - prob)))
    # Score contributions summed per cluster (clusters × (k + G), sparse), then the sandwich.
    parts = 3 if groups else 2  # the order-effect scores only when the model has them
    rows = np.concatenate([c, c, c][:parts])
    cols = np.concatenate([f, s, k + g][:parts])
    vals = np.concatenate([r, -r, r][:parts])
    u = _sparse.coo_matrix((vals, (rows, cols)), shape=(e.clusters, k + groups)).tocsr()
    meat_b = (u.T @ u).toarray()
    t = np.zeros((p_theta + groups, k + groups))
    t[:p_theta, :k] = z.T
    t[p_theta:, k:] = np.eye(groups)
    if e.clusters > 1:
        robust = e.clusters / (e.clusters - 1) * bread @ (t @ meat_b @ t.T) @ bread
    else:  # one cluster: nothing to measure the spread between clusters with
        robust = np.full_like(bread, math.inf)
    # Never narrower than the model-based (independent comparisons) variance: when an item wins
    # or loses nearly everything its score contributions vanish and the sandwich alone would
    # claim a precision the data do not have.
    def strength_var(cov: np.ndarray) -> np.ndarray:
        return np.sum((z @ cov[:p_theta, :p_theta]) * z, axis=1)

    var_strength = np.maximum(strength_var(robust), strength_var(bread))
    var_order = np.maximum(np.diag(robust), np.diag(bread))[p_theta:]
    return _BTFit(z @ theta, a, var_strength, var_order, e.clusters - 1)


def pairwise_model(
    comparisons: Iterable[Mapping[str, Any]],
    level: float = 0.95,
    order_effect: bool = True,
) -> dict[str, Any]:
    """Bradley–Terry strengths and each judge's first-position effect, with intervals.

    Strengths are log-scale and centred at mean 0: without position effects item i beats j with
    probability 1 / (1 + exp(s_j − s_i)). The model (Agresti's home-advantage form) adds one
    first-position log-odds per judge: logit P(first wins) = a_judge + s_first − s_second, so a
    judge that favours the answer shown first neither shrinks the strengths nor shifts them.
    A tie counts as half a win each way (as in Elo). Unparsed comparisons are ignored.

    Intervals: strength ± t·se with the cluster-robust (sandwich) covariance over clusters (the
    ``item`` of each comparison: every judge and order of one input together), t on clusters − 1
    degrees of freedom, and never narrower than the model-based se. "Covers the truth" means: for
    each item, the interval holds its true strength minus the mean true strength (the scale the
    strengths are reported on); the coverage study averages this over items.

    Returns ``{"strengths": [{item, strength, lo, hi, se, wins, losses, ties, n}],
    "order_effect": [{judge, log_odds, lo, hi, share_first, share_lo, share_hi}], "method",
    "clusters"}``; strengths sorted strongest first; an item with no usable comparison has None.
    ``share_first`` = 1 / (1 + exp(−a)) is the chance the judge picks the first of two equals.
    """
    _check_level(level)
    return _pairwise_model(_pairwise_entries(comparisons), level, order_effect)


def _pairwise_model(e: _Entries, level: float, order_effect: bool) -> dict[str, Any]:
    """:func:`pairwise_model` on indexed comparisons (the coverage study builds these directly)."""
    counted = sorted({int(i) for i in e.first} | {int(i) for i in e.second})
    strength: dict[int, tuple[float | None, float | None, float | None, float | None]] = {}
    order_rows: list[dict[str, Any]] = []
    if e.score.size:
        index = np.full(len(e.names), -1)
        index[counted] = np.arange(len(counted))
        sub = _Entries(e.names, index[e.first], index[e.second], e.score,
                       e.judge if order_effect else np.zeros(e.score.size, dtype=int), e.judges,
                       e.cluster, e.clusters, e.tally)
        groups = len(e.judges) if order_effect else 0
        fit = _bt_fit(sub, len(counted), groups)
        tq = float(_sps.t.ppf(1 - (1 - level) / 2, fit.df)) if fit.df >= 1 else math.inf
        for new, old in enumerate(counted):
            se = math.sqrt(max(float(fit.var_strength[new]), 0.0))
            half = tq * se
            strength[old] = (float(fit.strength[new]), _float(fit.strength[new] - half),
                             _float(fit.strength[new] + half), _float(se))
        for j, judge in enumerate(e.judges[:groups]):
            est = float(fit.order[j])
            half = tq * math.sqrt(max(float(fit.var_order[j]), 0.0))
            lo, hi = _float(est - half), _float(est + half)
            order_rows.append({
                "judge": judge, "log_odds": est, "lo": lo, "hi": hi,
                "share_first": 1 / (1 + math.exp(-est)),
                "share_lo": None if lo is None else 1 / (1 + math.exp(-lo)),
                "share_hi": None if hi is None else 1 / (1 + math.exp(-hi)),
            })

    rows: list[dict[str, Any]] = []
    for i, name in enumerate(e.names):
        t = e.tally[name]
        values = strength.get(i, (None, None, None, None))
        rows.append({"item": name, "strength": values[0], "lo": values[1], "hi": values[2], "se": values[3],
                     "wins": t["wins"], "losses": t["losses"], "ties": t["ties"],
                     "n": t["wins"] + t["losses"] + t["ties"]})
    rows.sort(key=lambda r: (r["strength"] is None, -(r["strength"] or 0.0), _sort_key(r["item"])))
    return {"strengths": rows, "order_effect": order_rows, "clusters": e.clusters,
            "method": "cluster-robust sandwich, t(clusters − 1)"}


def bradley_terry(
    comparisons: Iterable[Mapping[str, Any]], level: float = 0.95, order_effect: bool = True,
) -> list[dict[str, Any]]:
    """The strengths of :func:`pairwise_model` (rows sorted strongest first)."""
    return pairwise_model(comparisons, level, order_effect)["strengths"]


def _elo_replay(a: np.ndarray, b: np.ndarray, score: np.ndarray, order: np.ndarray, k: float,
                initial: float, n_names: int) -> np.ndarray:
    """Sequential Elo, one replay per row of ``order`` (indices into the comparisons; −1 = skip),
    all rows side by side as numpy vectors. Returns replays × names ratings."""
    replays = order.shape[0]
    ratings = np.full((replays, n_names), float(initial))
    r = np.arange(replays)
    for step in range(order.shape[1]):
        c = order[:, step]
        live = c >= 0
        c = np.where(live, c, 0)
        ia, ib = a[c], b[c]
        expected = 1.0 / (1.0 + 10.0 ** ((ratings[r, ib] - ratings[r, ia]) / 400.0))
        delta = np.where(live, k * (score[c] - expected), 0.0)
        ratings[r, ia] += delta
        ratings[r, ib] -= delta
    return ratings


def elo(
    comparisons: Iterable[Mapping[str, Any]],
    k: float = 16,
    initial: float = 1000,
    rounds: int = 100,
    seed: int | None = 0,
) -> dict[Hashable, float]:
    """Elo ratings averaged over ``rounds`` random orderings of the comparisons.

    Sequential Elo depends on the order games are played; judging order is arbitrary (batch
    results come back in any order), so we replay the comparisons in several random orders and
    average. Ties score 0.5. The rounds run side by side as numpy vectors. Only items with at
    least one usable (parsed) comparison are rated; the result is sorted best first.
    """
    e = _pairwise_entries(comparisons)
    if not e.score.size:
        return {}
    used = sorted({int(i) for i in e.first} | {int(i) for i in e.second})
    rounds = max(1, int(rounds))
    rng = np.random.default_rng(seed)
    order = np.argsort(rng.random((rounds, e.score.size)), axis=1)
    mean = _elo_replay(e.first, e.second, e.score, order, k, initial, len(e.names)).mean(axis=0)
    result = {e.names[i]: float(mean[i]) for i in used}
    return dict(sorted(result.items(), key=lambda kv: -kv[1]))


def elo_interval(
    comparisons: Iterable[Mapping[str, Any]],
    level: float = 0.95,
    resamples: int = 200,
    k: float = 16,
    initial: float = 1000,
    seed: int | None = 0,
) -> dict[Hashable, tuple[float, float]]:
    """Percentile bootstrap interval of each item's Elo rating, resampling clusters.

    Each replicate draws the clusters (inputs: every judge and order of one input together) with
    replacement and replays its comparisons in a fresh random order, so the interval holds both
    the sampling of inputs and Elo's dependence on order. Elo has no population value to cover
    (it is a running score, not a model parameter), so this interval shows its stability; use the
    Bradley–Terry interval for inference.
    """
    _check_level(level)
    e = _pairwise_entries(comparisons)
    if not e.score.size or e.clusters < 2:
        return {}
    rng = np.random.default_rng(seed)
    members = np.argsort(e.cluster, kind="stable")
    starts = np.searchsorted(e.cluster[members], np.arange(e.clusters))
    sizes = np.bincount(e.cluster, minlength=e.clusters)
    draws = rng.integers(0, e.clusters, size=(resamples, e.clusters))
    lengths = sizes[draws].sum(axis=1)
    order = np.full((resamples, int(lengths.max())), -1)
    for row in range(resamples):
        lens = sizes[draws[row]]
        offset = np.repeat(starts[draws[row]] - (np.cumsum(lens) - lens), lens)
        picked = members[np.arange(int(lens.sum())) + offset]
        order[row, : picked.size] = rng.permutation(picked)
    ratings = _elo_replay(e.first, e.second, e.score, order, k, initial, len(e.names))
    q = (1.0 - level) / 2
    lo, hi = np.quantile(ratings, [q, 1 - q], axis=0)
    used = sorted({int(i) for i in e.first} | {int(i) for i in e.second})
    return {e.names[i]: (float(lo[i]), float(hi[i])) for i in used}


def pairwise_summary(comparisons: Iterable[Mapping[str, Any]], level: float = 0.95) -> dict[str, Any]:
    """Everything the report shows about pairwise comparisons, in one dict: Bradley–Terry strengths
    with Elo beside them (each with its interval), each judge's first-position effect from the
    model, position bias pooled and per judge, and reverse consistency."""
    comparisons = list(comparisons)
    model = pairwise_model(comparisons, level)
    ratings = elo(comparisons)
    intervals = elo_interval(comparisons, level)
    for row in model["strengths"]:
        row["elo"] = ratings.get(row["item"])
        row["elo_lo"], row["elo_hi"] = intervals.get(row["item"], (None, None))
    return {
        "bradley_terry": model["strengths"],
        "order_effect": model["order_effect"],
        "position_bias": position_bias(comparisons, level),
        "judges": position_bias_by_judge(comparisons, level),
        "reverse_consistency": reverse_consistency(comparisons),
        "clusters": model["clusters"],
        "methods": {"strength": model["method"], "elo": "bootstrap-percentile (clusters)",
                    "position_bias": "sign-flip mid-p over pairs (McNemar on discordant reversed pairs)"},
    }
