"""A jury's compliance rate calibrated with human labels: prediction-powered inference (PPI++).

A jury can be biased (lenient, strict, fooled the same way every time). Its rate over thousands of
answers then has a narrow interval around the wrong number: in simulation a jury that passes 30 %
of bad answers gives judge-only intervals that cover the true rate 0 times in 2,000. A few hundred
human labels fix that without throwing the jury away. PPI++ (Angelopoulos, Duchi & Zrnic 2023,
"PPI++: Efficient Prediction-Powered Inference") estimates the mean of the human label Y from n
labelled answers (Y and the jury's prediction Ŷ) and N unlabelled ones (Ŷ only):

    θ̂ = mean_N(λ·Ŷ_unlabelled) + mean_n(Y − λ·Ŷ_labelled)

For every λ the estimate is unbiased: the second term measures and removes the jury's bias. The
power-tuned λ = Cov(Y, Ŷ) / ((1 + n/N)·Var(Ŷ)), clipped to [0, 1], minimises its variance: λ ≈ 1
when the jury tracks the labels (the N unlabelled answers then count almost fully), λ = 0 when it
does not (the estimate falls back to the labels' own mean, never worse than labels alone). This is
the formula of ppi-python's ``ppi_mean_pointestimate`` with ``lam=None``, written here in numpy.

Interval. Answers to one statement are not independent (a statement can be hard for the candidate,
or for the jury), so the variance comes from statements (clusters), not answers: a delete-one-
statement jackknife of the whole estimator, λ re-tuned each time, with a t quantile on G − 1
degrees of freedom (G = statements holding labels). Without clusters every answer is its own
cluster. Why the jackknife, measured by simulation (tests/eval/test_calibration.py): PPI++'s own
z-interval, which treats the tuned λ as known, covers 93.9-94.4 % with 100-200 labels, the
jackknife 94.5-95.3 %; with answers clustered in 10-40 statements it covers 93.8-95.5 % where
the z-interval that ignores statements covers 67-87 % and a percentile bootstrap over statements
87.5 % (10 statements) to 93.8 % (40). ``method="bootstrap"`` (resample statements with their
labelled and unlabelled answers, λ re-tuned in every resample) is there to compare. Everything is
computed from per-statement sums, so one estimate costs about a millisecond.

Near a bound the symmetric interval falls short: a rate near 1 comes with labels that vary less, so
a high estimate gets a narrow interval and misses above the truth (the estimate and its standard
error correlate at −0.64). With 60 statements × 40 answers, statement rates ~ Beta(8, 2) and 100
labels it covered 0.930 ± 0.004 (6.5 % of misses above the truth, 0.5 % below). Given ``bounds``
(the report passes (0, 1) for rates, (1, 5) for Likert means) the jackknife runs on the logit of
the rescaled estimate, as ``stats.mean_interval`` does for Likert means: 0.947 ± 0.004 with 100
labels and 0.947 with 200 (4,000 runs). The df (labelled statements − 1, about 48) and the
target were checked and are not the cause: the jackknife's variance matches the estimate's spread
around 0.8, between-statement variance included, and λ's tuning bias is 0.005 (a fixed λ
covers no better).

Labels needed: the labelled part of the variance shrinks as 1/n, the unlabelled part does not, so
for a target half-width h the labels needed are n·V_labelled / ((h/q)² − V_rest), or None when
even infinitely many labels cannot reach it with this many unlabelled answers.

``ppi_mean`` is the public entry point (the coverage study imports it). Nothing is imported at
``batchery --help`` time: the evaluation layer loads this module when it summarises.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import orjson
from scipy import stats as _sps

from ..errors import InputError

__all__ = ["PPIEstimate", "calibrate", "labels_needed", "load_labels", "ppi_mean"]

TARGET_HALFWIDTH = 0.05  # the report says how many labels a ±5-point interval needs
_BOOT_RESAMPLES = 2000


class PPIEstimate(NamedTuple):
    estimate: float
    low: float
    high: float
    lam: float


class _Fit(NamedTuple):
    estimate: float
    lam: float
    var_labelled: float  # the labelled sums' share of the variance (shrinks as 1/n)
    var_rest: float  # the unlabelled share and the cross term
    df: float


def _as_array(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=float).reshape(-1)


def _tuned_lambda(y: np.ndarray, yhat: np.ndarray, yhat_u: np.ndarray) -> float:
    n, big_n = len(y), len(yhat_u)
    if big_n == 0 or n < 2:
        return 0.0
    pooled = np.concatenate([yhat, yhat_u])
    var = pooled.var(ddof=1)
    if not var > 1e-12:
        return 0.0  # a constant prediction carries no information
    cov = np.mean((y - y.mean()) * (yhat - yhat.mean())) * n / (n - 1)
    return float(np.clip(cov / ((1 + n / big_n) * var), 0.0, 1.0))


def _codes(clusters_l: Any, clusters_u: Any, n: int, big_n: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Integer cluster codes for labelled and unlabelled answers (own cluster each when None)."""
    if clusters_l is None and clusters_u is None:
        return np.arange(n), np.arange(n, n + big_n), n + big_n
    if clusters_l is None or clusters_u is None:
        raise ValueError("give clusters for both the labelled and the unlabelled answers, or for neither")
    if len(clusters_l) != n or len(clusters_u) != big_n:
        raise ValueError("clusters must have one entry per answer")
    if isinstance(clusters_l, np.ndarray) and isinstance(clusters_u, np.ndarray):  # the simulations' fast path
        distinct, codes = np.unique(np.concatenate([clusters_l.reshape(-1), clusters_u.reshape(-1)]),
                                    return_inverse=True)
        groups = len(distinct)
    else:  # any hashable labels (statement ids), numbered in order of appearance
        index: dict[Any, int] = {}
        codes = np.asarray([index.setdefault(c, len(index)) for c in [*clusters_l, *clusters_u]], dtype=int)
        groups = len(index)
    codes = codes.reshape(-1)
    return codes[:n], codes[n:], groups


def _fit(y: np.ndarray, yhat: np.ndarray, yhat_u: np.ndarray, code_l: np.ndarray, code_u: np.ndarray,
         groups: int, lam: float | None = None) -> _Fit:
    n, big_n = len(y), len(yhat_u)
    lam = _tuned_lambda(y, yhat, yhat_u) if lam is None else lam
    rect = y - lam * yhat
    imputed = lam * yhat_u
    estimate = (imputed.mean() if big_n else 0.0) + rect.mean()
    # The estimator's deviation is a sum over clusters of each cluster's centred contributions.
    psi_l = np.bincount(code_l, weights=(rect - rect.mean()) / n, minlength=groups)
    psi_u = (np.bincount(code_u, weights=(imputed - imputed.mean()) / big_n, minlength=groups)
             if big_n else np.zeros(groups))
    # Small-sample factors G/(G - 1) per part (CR1; with one answer per cluster, the n/(n - 1) of a
    # sample variance), and t degrees of freedom from the labelled clusters, whose sums dominate.
    count_l, count_u = np.bincount(code_l, minlength=groups), np.bincount(code_u, minlength=groups)
    g_l, g_u = int(np.count_nonzero(count_l)), int(np.count_nonzero(count_u))
    g = int(np.count_nonzero(count_l + count_u))

    def factor(k: int) -> float:
        return k / (k - 1) if k > 1 else 1.0  # one cluster: its centred sum is 0 anyway

    var_l = float(factor(g_l) * np.sum(psi_l ** 2)) if g_l > 1 else np.inf  # no spread seen: unknown
    var_rest = float((factor(g_u) * np.sum(psi_u ** 2) if big_n else 0.0)
                     + factor(g) * 2 * np.sum(psi_l * psi_u))
    return _Fit(float(estimate), float(lam), var_l, var_rest, float(max(g_l - 1, 1)))


def ppi_mean(y_labelled: Sequence[float], yhat_labelled: Sequence[float], yhat_unlabelled: Sequence[float],
             clusters_labelled: Sequence[Any] | None = None, clusters_unlabelled: Sequence[Any] | None = None,
             alpha: float = 0.05, *, method: str = "jackknife", lam: float | None = None,
             resamples: int = _BOOT_RESAMPLES, seed: int = 0,
             bounds: tuple[float, float] | None = None) -> PPIEstimate:
    """The PPI++ estimate of mean(Y) with a (1 − alpha) interval and the λ used.

    ``y_labelled``: the human labels (0/1, or any numbers); ``yhat_labelled``: the jury's
    prediction for those answers; ``yhat_unlabelled``: its prediction for the answers nobody
    labelled. ``clusters_*`` (e.g. statement ids) mark answers that are not independent.
    ``lam=None`` tunes λ (PPI++); ``lam=1`` is plain PPI, ``lam=0`` the labels alone.
    ``method``: "jackknife" (delete-one-cluster, t interval; default) or "bootstrap"
    (percentile, resampling clusters). ``bounds`` (0, 1 for a rate, 1, 5 for Likert scores): the
    jackknife runs on the logit of the estimate rescaled to [0, 1], so the interval bends away from
    the bound it sits near (see the module's docstring); an estimate on a bound gets the plain
    interval. When every label comes from one cluster the interval is (-inf, inf): nothing shows
    how much labels vary between statements.
    """
    y, yhat, yhat_u = _as_array(y_labelled), _as_array(yhat_labelled), _as_array(yhat_unlabelled)
    if len(y) != len(yhat):
        raise ValueError("y_labelled and yhat_labelled must have the same length")
    if len(y) < 2:
        raise ValueError("PPI needs at least 2 labelled answers")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    code_l, code_u, groups = _codes(clusters_labelled, clusters_unlabelled, len(y), len(yhat_u))
    fit = _fit(y, yhat, yhat_u, code_l, code_u, groups, lam)
    sums = _cluster_sums(y, yhat, yhat_u, code_l, code_u, groups)
    if fit.var_labelled == np.inf:  # every label from one statement: nothing tells how much they vary
        return PPIEstimate(fit.estimate, -np.inf, np.inf, fit.lam)
    if method == "jackknife":
        used = (sums[0] + sums[5]) > 0
        g = int(used.sum())
        left_out = _theta([total.sum() - total[used] for total in sums], lam)
        q = float(_sps.t.ppf(1 - alpha / 2, fit.df))
        if bounds is not None:
            low, width = bounds[0], bounds[1] - bounds[0]
            scaled = (np.append(left_out, fit.estimate) - low) / width
            if np.all((scaled > 0) & (scaled < 1)):  # else (an estimate on a bound): the plain interval
                logits = np.log(scaled / (1 - scaled))
                var = (g - 1) / g * float(np.sum((logits[:-1] - logits[:-1].mean()) ** 2))
                ends = logits[-1] + q * np.sqrt(var) * np.array([-1.0, 1.0])
                lo, hi = low + width / (1 + np.exp(-ends))
                return PPIEstimate(fit.estimate, float(lo), float(hi), fit.lam)
        var = (g - 1) / g * float(np.sum((left_out - left_out.mean()) ** 2))
        half = q * np.sqrt(var)
        return PPIEstimate(fit.estimate, float(fit.estimate - half), float(fit.estimate + half), fit.lam)
    if method == "bootstrap":
        rng = np.random.default_rng(seed)
        present = np.flatnonzero((sums[0] + sums[5]) > 0)
        draws = rng.choice(present, size=(resamples, len(present)))
        counts = np.zeros((resamples, groups))
        np.add.at(counts, (np.arange(resamples)[:, None], draws), 1.0)
        theta = _theta([counts @ total for total in sums], lam)
        low, high = np.quantile(theta[np.isfinite(theta)], [alpha / 2, 1 - alpha / 2])
        return PPIEstimate(fit.estimate, float(low), float(high), fit.lam)
    raise ValueError(f"method must be 'jackknife' or 'bootstrap', got {method!r}")


def _cluster_sums(y: np.ndarray, yhat: np.ndarray, yhat_u: np.ndarray, code_l: np.ndarray, code_u: np.ndarray,
                  groups: int) -> list[np.ndarray]:
    """Per cluster: n, ΣY, ΣŶ, ΣYŶ, ΣŶ² over labelled answers, then N, ΣŶ, ΣŶ² over unlabelled
    ones: all the estimator needs, so a resample or a left-out cluster is a sum of these."""
    def per(codes: np.ndarray, values: np.ndarray) -> np.ndarray:
        return np.bincount(codes, weights=values, minlength=groups)

    return ([per(code_l, v) for v in (np.ones_like(y), y, yhat, y * yhat, yhat * yhat)]
            + [per(code_u, v) for v in (np.ones_like(yhat_u), yhat_u, yhat_u * yhat_u)])


def _theta(sums: list[np.ndarray], lam: float | None) -> np.ndarray:
    """θ̂, λ re-tuned unless given, from the sums of ``_cluster_sums`` (vectorised over rows)."""
    n, sy, sh, syh, shh, big_n, su, suu = sums
    with np.errstate(divide="ignore", invalid="ignore"):
        if lam is None:
            cov = (syh - sy * sh / n) / (n - 1)
            total = n + big_n
            var = (shh + suu - (sh + su) ** 2 / total) / (total - 1)
            tuned = np.where(big_n > 0, cov / ((1 + n / np.maximum(big_n, 1)) * var), 0.0)
            lams = np.clip(np.nan_to_num(tuned, nan=0.0, posinf=0.0, neginf=0.0), 0.0, 1.0)
        else:
            lams = np.full(np.shape(n), float(lam))
        return np.where(big_n > 0, lams * su / np.maximum(big_n, 1), 0.0) + (sy - lams * sh) / n


def labels_needed(y_labelled: Sequence[float], yhat_labelled: Sequence[float], yhat_unlabelled: Sequence[float],
                  clusters_labelled: Sequence[Any] | None = None, clusters_unlabelled: Sequence[Any] | None = None,
                  halfwidth: float = TARGET_HALFWIDTH, alpha: float = 0.05) -> int | None:
    """About how many labels the interval needs to reach ±``halfwidth`` (same jury, same unlabelled
    answers, λ as now); None when no number of labels gets there."""
    y, yhat, yhat_u = _as_array(y_labelled), _as_array(yhat_labelled), _as_array(yhat_unlabelled)
    code_l, code_u, groups = _codes(clusters_labelled, clusters_unlabelled, len(y), len(yhat_u))
    fit = _fit(y, yhat, yhat_u, code_l, code_u, groups)
    target = (halfwidth / float(_sps.norm.ppf(1 - alpha / 2))) ** 2
    room = target - max(fit.var_rest, 0.0)
    if room <= 0 or not np.isfinite(fit.var_labelled):
        return None
    return max(2, int(np.ceil(len(y) * fit.var_labelled / room)))


# --------------------------------------------------------------------------- labels file


def load_labels(path: Path, scale: str, known_ids: Iterable[str]) -> dict[str, bool | int]:
    """Read a human labels file: JSONL lines ``{"id": <item id from items.jsonl>, "label": ...}``,
    label true/false on the binary scale, an integer 1-5 on the Likert scale. Every problem is an
    InputError naming the file and line."""
    known = set(known_ids)
    labels: dict[str, bool | int] = {}
    first_line: dict[str, int] = {}
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file (human_labels)") from None
    for number, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise InputError(f"{where}: not valid JSON") from None
        if not isinstance(obj, dict) or "id" not in obj or "label" not in obj:
            raise InputError(f'{where}: expected {{"id": <item id>, "label": ...}}')
        item, label = obj["id"], obj["label"]
        if not isinstance(item, str) or item not in known:
            raise InputError(f"{where}: field 'id': no answer {item!r} in this evaluation "
                             "(ids are in items.jsonl: candidate:statement:input index)")
        if item in first_line:
            raise InputError(f"{where}: field 'id': {item!r} is labelled twice (first at line {first_line[item]})")
        if scale == "likert":
            if isinstance(label, bool) or not isinstance(label, int) or not 1 <= label <= 5:
                raise InputError(f"{where}: field 'label': expected an integer 1-5 on the Likert scale, "
                                 f"got {label!r}")
        elif not isinstance(label, bool):
            raise InputError(f"{where}: field 'label': expected true or false (compliant or not), got {label!r}")
        labels[item] = label
        first_line[item] = number
    return labels


# --------------------------------------------------------------------------- per candidate


def _predictions(items: list[Mapping[str, Any]], key: str) -> list[float]:
    """The jury's prediction per answer: its verdict (1/0) or mean score; for a tie the share of
    judges voting compliant (0.5 when split evenly), for an answer no judge could read the
    candidate's own jury mean. Nothing judged is dropped."""
    raw: list[float | None] = []
    for item in items:
        jury = item["jury"]
        if key == "score":
            raw.append(jury.get("score"))
        elif jury.get("compliant") is not None:
            raw.append(1.0 if jury["compliant"] else 0.0)
        elif jury.get("votes"):
            raw.append(jury["yes"] / jury["votes"])
        else:
            raw.append(None)
    known = [p for p in raw if p is not None]
    fallback = sum(known) / len(known) if known else (3.0 if key == "score" else 0.5)
    return [fallback if p is None else p for p in raw]


def _one(items: list[Mapping[str, Any]], labels: Mapping[str, bool | int], target: str, scale: str,
         alpha: float) -> dict[str, Any]:
    judged = [i for i in items if i["status"] == "succeeded"]
    predictions = _predictions(judged, "score" if target == "likert" else "compliant")

    def truth(label: bool | int) -> float:
        if target == "likert":
            return float(label)
        return float(label >= 4) if scale == "likert" and not isinstance(label, bool) else float(bool(label))

    y, yh, cl, yu, cu = [], [], [], [], []
    for item, prediction in zip(judged, predictions):
        if item["id"] in labels:
            y.append(truth(labels[item["id"]]))
            yh.append(prediction)
            cl.append(item["statement_id"])
        else:
            yu.append(prediction)
            cu.append(item["statement_id"])
    out: dict[str, Any] = {"estimate": None, "low": None, "high": None, "labels": len(y), "lambda": None,
                           "labels_needed": None, "target_halfwidth": TARGET_HALFWIDTH if target == "rate" else None}
    if len(y) < 2:
        return out
    bounds = (0.0, 1.0) if target == "rate" else (1.0, 5.0)  # the estimate can stray past them: clip
    estimate = ppi_mean(y, yh, yu, cl, cu, alpha=alpha, bounds=bounds)
    low, high = estimate.low, estimate.high
    value, low, high = (min(bounds[1], max(bounds[0], x)) for x in (estimate.estimate, low, high))
    if target == "rate":
        out["labels_needed"] = labels_needed(y, yh, yu, cl, cu, halfwidth=TARGET_HALFWIDTH, alpha=alpha)
    out.update(estimate=value, low=low, high=high, **{"lambda": estimate.lam})
    return out


def calibrate(items: Iterable[Mapping[str, Any]], labels: Mapping[str, bool | int], scale: str,
              alpha: float = 0.05) -> dict[str, dict[str, Any]]:
    """Per candidate: the compliance rate calibrated with the labels (and, on the Likert scale, the
    mean score as ``likert``), with the interval and the labels used and needed."""
    by_candidate: dict[str, list[Mapping[str, Any]]] = {}
    for item in items:
        by_candidate.setdefault(item["candidate"], []).append(item)
    out = {}
    for candidate, rows in by_candidate.items():
        result = _one(rows, labels, "rate", scale, alpha)
        if scale == "likert":
            result["likert"] = _one(rows, labels, "likert", scale, alpha)
        out[candidate] = result
    return out

