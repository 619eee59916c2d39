"""Calibrating a jury with human labels (PPI++): coverage by simulation with known truth, the
estimator's limits, the labels file's errors, and imputed predictions for ties and unread verdicts."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.proportion import proportion_confint

from batchery.errors import InputError
from batchery.eval.calibration import calibrate, labels_needed, load_labels, ppi_mean

TRUE_RATE = 0.7
# A lenient jury: it passes 30 % of the non-compliant answers and 95 % of the compliant ones, so it
# reports about 75.5 % where the truth is 70 %.
PASSES_BAD, PASSES_GOOD = 0.3, 0.95


def biased_jury(rng: np.random.Generator, reps: int, size: int,
                passes_bad: float | np.ndarray = PASSES_BAD, truth: float | np.ndarray = TRUE_RATE):
    """Human truth and the jury's verdict for ``reps`` evaluations of ``size`` answers each."""
    y = rng.random((reps, size)) < truth
    yhat = np.where(y, rng.random((reps, size)) < PASSES_GOOD, rng.random((reps, size)) < passes_bad)
    return y.astype(float), yhat.astype(float)


def test_calibrated_intervals_cover_the_truth_where_a_biased_jury_never_does():
    rng = np.random.default_rng(12)
    unlabelled, reps = 2000, 1000
    jury_covered = 0
    for labels in (100, 200):
        y, yhat = biased_jury(rng, reps, labels + unlabelled)
        covered = 0
        for r in range(reps):
            estimate = ppi_mean(y[r, :labels], yhat[r, :labels], yhat[r, labels:])
            covered += estimate.low <= TRUE_RATE <= estimate.high
            lo, hi = proportion_confint(int(yhat[r].sum()), labels + unlabelled, method="wilson")
            jury_covered += lo <= TRUE_RATE <= hi
        assert 0.93 <= covered / reps <= 0.97, (labels, covered / reps)
    assert jury_covered == 0  # the jury alone: 0 of 2,000 intervals hold the true rate


def test_with_answers_clustered_by_statement_the_interval_still_covers():
    """Statements differ in how hard they are for the candidate and for the jury: the interval
    resamples statements. Ignoring them (every answer its own cluster) undercovers badly."""
    rng = np.random.default_rng(5)
    statements, labels, unlabelled, reps, spread = 20, 150, 2000, 1000, 0.8
    logit = np.log(TRUE_RATE / (1 - TRUE_RATE))
    # The truth is the rate over the statements' population: E[expit(logit + effect)].
    truth = float(np.mean(1 / (1 + np.exp(-(logit + np.random.default_rng(0).normal(0, spread, 400_000))))))
    covered = naive = 0
    for _ in range(reps):
        statement = rng.integers(0, statements, labels + unlabelled)
        rate = 1 / (1 + np.exp(-(logit + rng.normal(0, spread, statements)[statement])))
        passes_bad = 1 / (1 + np.exp(-(np.log(0.3 / 0.7) + rng.normal(0, spread, statements)[statement])))
        y, yhat = biased_jury(rng, 1, labels + unlabelled, passes_bad, rate)
        y, yhat = y[0], yhat[0]
        args = (y[:labels], yhat[:labels], yhat[labels:])
        estimate = ppi_mean(*args, statement[:labels], statement[labels:])
        covered += estimate.low <= truth <= estimate.high
        plain = ppi_mean(*args)
        naive += plain.low <= truth <= plain.high
    assert 0.93 <= covered / reps <= 0.97, covered / reps
    assert naive / reps < 0.85


def test_lambda_zero_is_the_labels_alone_and_lambda_one_plain_ppi():
    rng = np.random.default_rng(1)
    y, yhat = biased_jury(rng, 1, 400)
    y, yhat = y[0], yhat[0]
    alone = ppi_mean(y[:100], yhat[:100], yhat[100:], lam=0)
    assert alone.estimate == pytest.approx(y[:100].mean())
    half = alone.high - alone.estimate
    assert half == pytest.approx(1.984 * y[:100].std(ddof=1) / 10, rel=0.01)  # the t interval of the labels
    plain = ppi_mean(y[:100], yhat[:100], yhat[100:], lam=1)
    assert plain.estimate == pytest.approx(yhat[100:].mean() + (y[:100] - yhat[:100]).mean())
    tuned = ppi_mean(y[:100], yhat[:100], yhat[100:])
    assert 0 < tuned.lam < 1 and tuned.high - tuned.low < alone.high - alone.low  # the jury helps
    noise = rng.random(400)  # a jury that knows nothing: λ goes to about 0, not worse than labels alone
    assert ppi_mean(y[:100], noise[:100], noise[100:]).lam < 0.2
    assert ppi_mean(y[:100], yhat[:100], yhat[100:], method="bootstrap").low < tuned.estimate
    one_statement = ppi_mean(y[:100], yhat[:100], yhat[100:], ["s"] * 100, ["s", "t"] * 150)
    assert (one_statement.low, one_statement.high) == (-np.inf, np.inf)
    with pytest.raises(ValueError, match="at least 2"):
        ppi_mean([1.0], [1.0], [0.0])


def test_labels_needed_reaches_the_target_width():
    rng = np.random.default_rng(4)
    y, yhat = biased_jury(rng, 1, 20_000)
    y, yhat = y[0], yhat[0]
    needed = labels_needed(y[:1000], yhat[:1000], yhat[1000:], halfwidth=0.04)  # from a well-measured variance
    assert needed is not None and 200 < needed < 1000
    fresh = slice(5000, 5000 + needed)  # other answers, labelled as many times as advised
    estimate = ppi_mean(y[fresh], yhat[fresh], np.concatenate([yhat[:5000], yhat[5000 + needed:]]))
    assert (estimate.high - estimate.low) / 2 == pytest.approx(0.04, rel=0.1)
    # The unlabelled answers' own spread sets a floor no number of labels gets under.
    assert labels_needed(y[:100], yhat[:100], yhat[100:130], halfwidth=0.01) is None


def _item(candidate: str, statement: str, index: int, yes: int, votes: int, compliant: bool | None,
          status: str = "succeeded") -> dict:
    return {"id": f"{candidate}:{statement}:{index}", "candidate": candidate, "statement_id": statement,
            "status": status, "jury": {"compliant": compliant, "yes": yes, "votes": votes, "score": None}}


def test_ties_and_unread_verdicts_get_an_imputed_prediction_instead_of_being_dropped():
    items = [_item("c", f"s{i % 4}", i, 3, 3, True) for i in range(12)]
    items += [_item("c", f"s{i % 4}", i, 0, 3, False) for i in range(12, 16)]
    items += [_item("c", "s0", 16, 1, 2, None),  # a tie: half the judges said compliant
              _item("c", "s1", 17, 0, 0, None),  # no judge could be read: the candidate's jury rate
              _item("c", "s2", 18, 0, 0, None, status="failed")]  # no answer: not in either set
    labels: dict[str, bool | int] = {f"c:s{i % 4}:{i}": i % 5 != 0 for i in range(0, 16, 2)}
    result = calibrate(items, labels, "binary")["c"]
    assert result["labels"] == 8
    jury_rate = 12 / 16
    y = [float(labels[k]) for k in labels]
    yhat = [1.0 if int(k.rsplit(":", 1)[1]) < 12 else 0.0 for k in labels]
    unlabelled = [i for i in items[:16] if i["id"] not in labels]
    yhat_u = [1.0 if i["jury"]["compliant"] else 0.0 for i in unlabelled] + [0.5, jury_rate]
    clusters_u = [i["statement_id"] for i in unlabelled] + ["s0", "s1"]
    expected = ppi_mean(y, yhat, yhat_u, [f"s{int(k.rsplit(':', 1)[1]) % 4}" for k in labels], clusters_u)
    assert result["estimate"] == pytest.approx(expected.estimate)
    assert result["low"] == pytest.approx(max(0.0, expected.low))
    assert calibrate(items, {"c:s0:0": True}, "binary")["c"]["estimate"] is None  # one label: no estimate


def test_a_bad_labels_file_names_the_file_line_and_field(tmp_path):
    known = ["a:s:0", "a:s:1", "b:s:0"]
    path = tmp_path / "labels.jsonl"
    cases = [
        ('{"id": "a:s:0", "label": true}\n{"id": "zz:s:9", "label": false}\n', r"labels\.jsonl:2: field 'id': no answer 'zz:s:9'"),
        ('{"id": "a:s:0", "label": 1}\n', r"labels\.jsonl:1: field 'label': expected true or false"),
        ('{"id": "a:s:0", "label": true}\n\n{"id": "a:s:0", "label": false}\n', r"labels\.jsonl:3: .*labelled twice \(first at line 1\)"),
        ('{"id": "a:s:0", "label": true}\nnot json\n', r"labels\.jsonl:2: not valid JSON"),
        ('{"id": "a:s:0"}\n', r"labels\.jsonl:1: expected"),
    ]
    for text, message in cases:
        path.write_text(text)
        with pytest.raises(InputError, match=message):
            load_labels(path, "binary", known)
    path.write_text('{"id": "a:s:0", "label": 5}\n{"id": "a:s:1", "label": true}\n')
    with pytest.raises(InputError, match=r"labels\.jsonl:2: field 'label': expected an integer 1-5"):
        load_labels(path, "likert", known)
    path.write_text('{"id": "a:s:0", "label": 5}\n{"id": "b:s:0", "label": 2}\n')
    assert load_labels(path, "likert", known) == {"a:s:0": 5, "b:s:0": 2}
    with pytest.raises(InputError, match="no such file"):
        load_labels(tmp_path / "missing.jsonl", "binary", known)


def test_on_the_likert_scale_labels_calibrate_the_rate_and_the_mean_score():
    items, labels = [], {}
    for i in range(40):
        score = 5 if (i // 2) % 4 else 2  # the jury's mean score (compliant from 4): 75 % compliant
        item = _item("c", f"s{i % 5}", i, int(score >= 4), 1, score >= 4)
        item["jury"]["score"] = float(score)
        items.append(item)
        if i % 2 == 0:  # every other answer labelled; people rate a third of the jury's 5s a 3
            labels[item["id"]] = 3 if (i // 2) % 4 == 1 else (4 if score == 5 else 1)
    result = calibrate(items, labels, "likert")["c"]
    assert result["labels"] == 20 and result["low"] <= result["estimate"] <= result["high"]
    assert result["estimate"] < 0.6  # the jury says 75 %; the people, 50 % of what they read
    likert = result["likert"]
    assert 1 <= likert["low"] <= likert["estimate"] <= likert["high"] <= 5 and likert["labels"] == 20
    assert likert["estimate"] < 3.5  # the jury's mean is 4.25


def test_near_a_high_rate_the_interval_on_the_logit_scale_covers_where_the_symmetric_one_falls_short():
    """60 statements × 40 answers, statement rates ~ Beta(8, 2) (population rate 0.8), 100 labels.
    A high estimate comes with a small spread (the labels vary less near 1), so symmetric intervals
    miss mostly above the truth; on the logit scale (``bounds``, as the report calls it) they bend down."""
    rng = np.random.default_rng(3)
    reps, statements, per, labels = 1500, 60, 40, 100
    clusters = np.repeat(np.arange(statements), per)
    covered = symmetric = 0
    for _ in range(reps):
        truth = rng.random(clusters.size) < rng.beta(8, 2, statements)[clusters]
        jury = (truth | (rng.random(clusters.size) < PASSES_BAD)).astype(float)
        order = rng.permutation(clusters.size)
        chosen, rest = order[:labels], order[labels:]
        args = (truth[chosen].astype(float), jury[chosen], jury[rest], clusters[chosen], clusters[rest])
        logit = ppi_mean(*args, bounds=(0.0, 1.0))
        covered += logit.low <= 0.8 <= logit.high
        plain = ppi_mean(*args)
        symmetric += plain.low <= 0.8 <= plain.high
    assert covered / reps >= 0.94, covered / reps
    assert symmetric / reps < covered / reps
