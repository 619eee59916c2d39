"""An evaluation as a chain of batchery jobs: generate → judge → re-ask → (pairwise) → statistics → report.

Every stage is an ordinary job in the store, named after the evaluation, the stage and the model,
plus a digest of its requests. Running the evaluation again resumes the stage that was running and
finds the finished ones done (their answers are in the store), so a crash costs nothing and a
re-run sends nothing. The evaluation layer only builds requests and reads results.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import combinations
from pathlib import Path
from typing import Any

import orjson

from ..api import EMULATOR_POLL, Connection, drive, job_options
from ..engine import PollPolicy, Progress, check_endpoint, prepare_job
from ..errors import BatcheryError, ConfigError, JobError
from ..export import Result, iter_results
from ..inputs import iter_objects
from ..live import LivePolicy
from ..pricing import PriceBook, actual_cost, total
from ..providers import EMULATOR_ORIGIN, get_provider, provider_class, provider_origin
from ..store import Store
from .config import EvalConfig, JudgeSpec, ModelSpec, RunSettings
from .items import (
    build_items,
    build_pairs,
    known_ids,
    load_answers,
    missing_answers,
    write_items,
)
from .prompts import (
    PromptTemplate,
    compare_variables,
    compliance_request,
    generation_request,
    judge_variables,
    pairwise_request,
    reask_request,
)
from .specs import Statement, load_inputs, load_spec
from .verdicts import (
    JUDGE_FAILED,
    LIKERT_COMPLIANT_FROM,
    TIE,
    ComplianceVerdict,
)


class EvalStopped(BatcheryError):
    """A stage stopped before its end (the budget, or the provider: a refused key, failures a later
    run can fix); the evaluation is saved and resumable. Exits 3 for the budget, 4 otherwise."""

    def __init__(self, message: str, capped: bool) -> None:
        super().__init__(message)
        self.exit_code = 3 if capped else 4



@dataclass
class Evaluation:
    """What the stages produced, before statistics."""

    statements: list[Statement]
    inputs: dict[str, list[str]]
    answers: dict[str, dict[str, Result]] = field(default_factory=dict)  # candidate -> item -> result
    verdicts: dict[str, dict[tuple[str, str], ComplianceVerdict | None]] = field(default_factory=dict)
    comparisons: list[dict] = field(default_factory=list)
    labels: dict[str, bool | int] | None = None  # human labels by item id, when the config gives them
    raters: dict[str, str] = field(default_factory=dict)  # verdict column (judge or judge/template) -> template


def item_id(statement: str, index: int) -> str:
    return f"{statement}#{index}"


class EvalRunner:
    """Runs (or, with send=False, only reads back) the stages of one evaluation config."""

    def __init__(self, config: RunSettings, store: Store, *, send: bool = True,
                 on_stage: Callable[[str], None] | None = None,
                 on_progress: Callable[[Progress], None] | None = None,
                 poll: PollPolicy | None = None) -> None:
        self.config, self.store, self.send = config, store, send
        self.on_stage = on_stage or (lambda message: None)
        self.on_progress = on_progress
        self.poll = poll
        self.prices = PriceBook(store_dir=store.dir)
        self._emulator = None

    # -- the whole evaluation -------------------------------------------------------------------

    def run(self) -> Evaluation:
        config = self.config
        assert isinstance(config, EvalConfig)
        statements = load_spec(config.spec)
        inputs = load_inputs(config.inputs, statements)
        evaluation = Evaluation(statements, inputs)
        known = known_ids(config, inputs)
        if config.human_labels is not None:  # checked before anything is sent
            from .calibration import load_labels

            evaluation.labels = load_labels(config.human_labels, config.scale, known)
        for candidate in config.candidates:  # existing answers: read (and checked) before anything is sent
            if candidate.answers is not None:
                evaluation.answers[candidate.name] = load_answers(candidate.answers, statements, inputs, config.inputs)
        with self.connections():
            for candidate in config.candidates:
                if candidate.answers is None:
                    self._generate(evaluation, candidate)
            for judge in config.judges:
                self._judge(evaluation, judge)
            if config.pairwise is not None and len(config.candidates) > 1:
                names = config.pairwise.judges or [j.name for j in config.judges]
                for judge in (j for j in config.judges if j.name in names):
                    self._compare(evaluation, judge)
        return evaluation

    def _generate(self, evaluation: Evaluation, candidate: ModelSpec) -> None:
        requests = []
        for statement in evaluation.statements:
            for index, text in enumerate(evaluation.inputs.get(statement.id, ())):
                request = generation_request(text, model=candidate.model, params=candidate.params,
                                             system=candidate.system)
                request["id"] = item_id(statement.id, index)
                requests.append(request)
        evaluation.answers[candidate.name] = self.stage("generate", candidate, requests)

    def _judge(self, evaluation: Evaluation, judge: JudgeSpec) -> None:
        """Every successful answer of every candidate, judged against its statement, with each of
        the judge's prompts (each its own stage and column). A failed generation is never judged:
        it is counted as failed, not as non-compliant."""
        for template in self.config.templates(judge, "judge"):
            self._judge_with(evaluation, judge, template)

    def _judge_with(self, evaluation: Evaluation, judge: JudgeSpec, template: PromptTemplate) -> None:
        requests: dict[str, dict] = {}
        for statement in evaluation.statements:
            for index, text in enumerate(evaluation.inputs.get(statement.id, ())):
                for candidate in self.config.candidates:
                    answer = evaluation.answers[candidate.name].get(item_id(statement.id, index))
                    if answer is None or not answer.ok or answer.text is None:
                        continue
                    if template.builtin:
                        request = compliance_request(statement, text, answer.text, model=judge.model,
                                                     params=judge.params, scale=self.config.scale)
                    else:
                        request = template.request(judge_variables(statement, text, answer.text),
                                                   model=judge.model, params=judge.params)
                    request["id"] = f"{candidate.name}|{item_id(statement.id, index)}"
                    requests[request["id"]] = request
        verdicts = self.judged(template.stage("judge"), judge, requests, template.output.parse)
        evaluation.raters[template.rater(judge.name)] = template.name
        evaluation.verdicts[template.rater(judge.name)] = {
            tuple(rid.split("|", 1)): verdict for rid, verdict in verdicts.items()}  # type: ignore[misc]

    def _compare(self, evaluation: Evaluation, judge: JudgeSpec) -> None:
        """Candidates head to head on each input, judged on the statement: each pair in a random
        order, and with the chosen share also in the reversed order (position bias shows there).
        Each of the judge's pairwise prompts sees the same pairs in the same orders."""
        for template in self.config.templates(judge, "compare"):
            self._compare_with(evaluation, judge, template)

    def _compare_with(self, evaluation: Evaluation, judge: JudgeSpec, template: PromptTemplate) -> None:
        pairwise = self.config.pairwise
        assert pairwise is not None
        rng = random.Random(f"{pairwise.seed}:{judge.name}")
        by_name = {s.id: s for s in evaluation.statements}
        requests: dict[str, dict] = {}
        for statement in evaluation.statements:
            for index, text in enumerate(evaluation.inputs.get(statement.id, ())):
                item = item_id(statement.id, index)
                answers = {c.name: evaluation.answers[c.name].get(item) for c in self.config.candidates}
                ready = [name for name, r in answers.items() if r is not None and r.ok and r.text is not None]
                for a, b in combinations(ready, 2):
                    orders = [(a, b) if rng.random() < 0.5 else (b, a)]
                    if rng.random() < pairwise.reversed_share:
                        orders.append(orders[0][::-1])
                    for first, second in orders:
                        a, b = answers[first].text, answers[second].text  # type: ignore[union-attr]
                        if template.builtin:
                            request = pairwise_request(text, a, b, model=judge.model,  # type: ignore[arg-type]
                                                       params=judge.params, statement=by_name[statement.id])
                        else:
                            request = template.request(compare_variables(by_name[statement.id], text, a, b),  # type: ignore[arg-type]
                                                       model=judge.model, params=judge.params)
                        request["id"] = f"{first}|{second}|{item}"
                        requests[request["id"]] = request
        verdicts = self.judged(template.stage("compare"), judge, requests, template.output.parse)
        side = {"A": "first", "B": "second", "tie": "tie"}
        for rid, verdict in verdicts.items():
            first, second, item = rid.split("|", 2)
            evaluation.comparisons.append({"item": item, "first": first, "second": second,
                                           "judge": template.rater(judge.name), "template": template.name,
                                           "winner": side[verdict.winner] if verdict else None,
                                           "confidence": verdict.confidence if verdict else None,
                                           "explanation": verdict.explanation if verdict else None})

    def judged(self, stage: str, judge: ModelSpec, requests: dict[str, dict],
                parse: Callable[[str], Any]) -> dict[str, Any]:
        """Send judge requests and parse the verdicts; what cannot be read is asked once more, and
        what still cannot be read stays None ("unparsed": never counted as a verdict). A judge call
        that failed is JUDGE_FAILED: no reply came, so it is "failed", not "unparsed"."""
        if not requests:
            return {}
        answers = self.stage(stage, judge, list(requests.values()))
        verdicts: dict[str, Any] = {}
        retry: list[dict] = []
        for rid, result in answers.items():
            verdict = parse(result.text) if result.ok else JUDGE_FAILED
            verdicts[rid] = verdict
            if verdict is None and result.ok:
                again = reask_request(requests[rid], result.text or "")
                again["id"] = rid
                retry.append(again)
        if retry:
            for rid, result in self.stage(f"{stage}-reask", judge, retry).items():
                verdicts[rid] = parse(result.text) if result.ok else JUDGE_FAILED
        return verdicts

    # -- one stage = one batchery job -------------------------------------------------------------

    def stage(self, stage: str, who: ModelSpec, requests: list[dict]) -> dict[str, Result]:
        """Run (or read back) one stage's job; its results by request id."""
        digest = hashlib.sha256(orjson.dumps(requests, option=orjson.OPT_SORT_KEYS)).hexdigest()
        job_name = f"{self.config.name}.{stage}.{_slug(who.name)}.{digest[:10]}"
        self.on_stage(f"{stage}: {who.name} ({len(requests):,} requests)")
        existing = self.store.get_job(job_name)
        if existing is not None and self.send:  # a finished stage's answers are read back only at its endpoint
            origin = EMULATOR_ORIGIN if self._emulator is not None else provider_origin(who.provider, who.base_url)
            existing = check_endpoint(self.store, existing, origin)
        if existing is None or existing.state in ("running", "ingesting"):  # ingesting: a crash cut it short
            if not self.send:
                raise JobError(f"stage '{stage}' for {who.name} has not finished; run `batchery eval run` first")
            adapter = self._adapter(who)
            # where the stage's provider is, so `batchery collect` and `cancel` can reach its batches
            options = job_options(Connection(who.provider, who.base_url, None, self._emulator is not None),
                                  self._live_policy(), max_attempts=self.config.max_attempts)
            job, _ = prepare_job(self.store, job_name, adapter, who.model, iter_objects(requests), digest, options)
            progress = drive(self.store, adapter, job, live=self._live_policy(), max_attempts=self.config.max_attempts,
                              on_progress=self.on_progress, poll=self.poll or self._poll, max_cost=self._remaining(job_name),
                              prices=self.prices if self.config.budget_usd is not None else None)
            if progress.stopped:
                raise EvalStopped(f"stage '{stage}' for {who.name}: {progress.stopped}", progress.capped)
            existing = self.store.get_job(job_name)
        assert existing is not None
        return {r.id: r for r in iter_results(self.store, existing.id, existing.provider)}

    def _live_policy(self) -> LivePolicy | None:
        c = self.config
        return LivePolicy(rpm=c.rpm, tpm=c.tpm, concurrency=c.concurrency) if c.mode == "live" else None

    def _remaining(self, job_name: str) -> float | None:
        """The cap for a stage job: the budget less what the evaluation's other jobs spent (the job
        counts its own spend, so a resumed stage is not charged twice)."""
        if self.config.budget_usd is None:
            return None
        spent = sum(row["usd"] or 0.0 for row in self.costs(exclude=job_name))
        return max(0.0, self.config.budget_usd - spent)

    def costs(self, exclude: str | None = None) -> list[dict]:
        """Tokens and cost per stage job of this evaluation, from the usage the providers returned."""
        rows = []
        for job in self.store.list_jobs():
            if not job.name.startswith(self.config.name + ".") or job.name == exclude:
                continue
            stage = job.name[len(self.config.name) + 1:].split(".")[0]
            costs = actual_cost(self.prices, job.provider, self.store.usage_by_model(job.id))
            rows.append({"stage": stage, "provider": job.provider, "model": job.model or "",
                         "requests": sum(self.store.counts(job.id).values()),
                         "input_tokens": sum(c.input_tokens for c in costs),
                         "output_tokens": sum(c.output_tokens for c in costs),
                         "usd": total(costs, batch=None) if costs else 0.0})
        return rows

    # -- connections ------------------------------------------------------------------------------

    @contextmanager
    def connections(self) -> Iterator[None]:
        """With emulate, one in-process emulator (with the config's behaviour knobs) serves every
        provider for the whole evaluation."""
        if not (self.config.emulate and self.send):
            self._poll = None
            if self.send:  # every model's key (and provider) is checked before the first stage sends anything
                for who in [*getattr(self.config, "candidates", []), *self.config.judges]:
                    if getattr(who, "answers", None) is None:  # existing answers need no provider
                        self._adapter(who)
            yield
            return
        from ..emulator import Emulator
        from ..emulator.fake_model import Behaviour

        try:
            behaviour = Behaviour.from_dict(self.config.behaviour)
        except ValueError as exc:
            raise ConfigError(f"behaviour: {exc}") from None
        with Emulator(behaviour=behaviour) as emulator:
            self._emulator, self._poll = emulator, EMULATOR_POLL
            try:
                yield
            finally:
                self._emulator = None

    def _adapter(self, who: ModelSpec):
        if self._emulator is not None:
            service = provider_class(who.provider).emulator_service
            adapter = get_provider(who.provider, base_url=self._emulator.base_url(service), api_key="emulator")
            adapter.origin = EMULATOR_ORIGIN
            return adapter
        return get_provider(who.provider, base_url=who.base_url)


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in name)[:40]


# -- statistics: from stage outputs to the report's data -------------------------------------------

def jury_verdict(verdicts: list[ComplianceVerdict | None], rule: str) -> tuple[bool | str | None, float | None]:
    """(outcome, mean Likert score) of a fixed jury: ``verdicts`` has one entry per judge of the
    jury, None (or JUDGE_FAILED) where that judge's reply could not be read. The outcome is True
    (compliant), False, ``"tie"`` or None (unparsed: the replies that were read cannot decide).

    - majority: the denominator is the WHOLE jury. Compliant when more than half of all judges
      say so, non-compliant when more than half say not; an even split of a fully read even jury
      is a tie; anything else (say 1 yes, 1 no and 1 unread of 3) is unparsed, because the
      unread reply would have decided it.
    - unanimous: compliant only when every judge of the jury was read and said compliant;
      non-compliant as soon as one read judge says not (no unread reply can restore unanimity);
      otherwise (all read ones say yes, some unread) unparsed. So it never grows laxer as replies
      fail.
    - mean: the denominator is the judges that were read (a mean of scores cannot include a score
      that does not exist). Binary: the share of yes votes; above ½ compliant, below non-compliant,
      exactly ½ a tie. Likert: the mean score, compliant from 4 (the scale's own threshold, so a
      mean of exactly 4 is compliant, not a tie).
    The mean Likert score is always over the judges that were read (None when none was).
    """
    read = [v for v in verdicts if v]  # None (unreadable) and JUDGE_FAILED (no reply) are both unread
    scores = [v.score for v in read if v.score is not None]
    likert = sum(scores) / len(scores) if scores else None
    if not read:
        return None, likert
    yes = sum(v.compliant for v in read)
    no = len(read) - yes
    if rule == "unanimous":
        if no:
            return False, likert
        return (True if yes == len(verdicts) else None), likert
    if rule == "mean":
        if likert is not None:
            return likert >= LIKERT_COMPLIANT_FROM, likert
        return (TIE if yes == no else yes > no), likert
    jury = len(verdicts)
    if yes * 2 > jury:
        return True, likert
    if no * 2 > jury:
        return False, likert
    return (TIE if yes == no and yes + no == jury else None), likert


_JURY_RULES = {"majority": "compliant when more than half of the whole jury says so",
               "unanimous": "compliant only when every judge was read and said so",
               "mean": "the mean over the judges that were read"}


def _failure_figures(row: dict, answers: dict[str, Result]) -> dict:
    """Failed generations in view: their share of all generations, and the compliance rate if each
    had counted as a non-compliant answer (both with Wilson intervals). Only generations: an answer
    whose judge calls failed is in ``failed`` too, but the candidate did answer."""
    from .stats import wilson

    generations, failed = len(answers), sum(not answer.ok for answer in answers.values())
    failure = wilson(failed, generations)
    worst = wilson(row["compliant"], row["n"] + failed)
    return {"generations": generations, "failed_generations": failed, "failure_rate": failure.rate,
            "failure_lo": failure.lo, "failure_hi": failure.hi, "rate_failed_as_noncompliant": worst.rate,
            "rate_failed_as_noncompliant_lo": worst.lo, "rate_failed_as_noncompliant_hi": worst.hi}


def summarise(config: EvalConfig, evaluation: Evaluation, costs: list[dict], items: list[dict] | None = None) -> dict:
    """The report's data: leaderboard with CIs (and, with human labels, calibrated rates), per-statement
    and per-section tables, judge agreement, pairwise strengths and biases, costs."""
    from . import stats
    from .calibration import calibrate

    sections = {s.id: s.section for s in evaluation.statements}
    records: list[dict] = []
    failed: dict[str, int] = {c.name: 0 for c in config.candidates}
    likert: dict[str, dict[str, list[float]]] = {c.name: {} for c in config.candidates}  # statement -> scores
    for candidate in config.candidates:
        for item, answer in evaluation.answers[candidate.name].items():
            statement = item.rsplit("#", 1)[0]
            if not answer.ok:
                failed[candidate.name] += 1
                continue
            jury = [judge.get((candidate.name, item)) for judge in evaluation.verdicts.values()]
            if not any(jury) and any(v is JUDGE_FAILED for v in jury):
                failed[candidate.name] += 1  # the judge calls failed: nothing was left unread
                continue
            verdict, score = jury_verdict(jury, config.jury)
            if score is not None:
                likert[candidate.name].setdefault(statement, []).append(score)
            records.append({"candidate": candidate.name, "statement": statement, "section": sections[statement],
                            "spec": config.spec.stem, "verdict": verdict})
    leaderboard = stats.compliance_table(records, "candidate")
    for name in failed.keys() - {row["candidate"] for row in leaderboard}:  # nothing judged: it still ranks, last
        leaderboard.append({"candidate": name, "n": 0, "compliant": 0, "ties": 0, "unparsed": 0, "rate": None,
                            "lo": None, "hi": None, "method": None, "statements": 0})
    if items is None:
        items = build_items(config, evaluation, evaluation.labels)
    calibrated = calibrate(items, evaluation.labels, config.scale) if evaluation.labels is not None else {}
    for row in leaderboard:
        row["failed"] = failed[row["candidate"]]
        by_statement = likert[row["candidate"]].values()
        mean = stats.mean_interval([sum(s) for s in by_statement], [len(s) for s in by_statement],
                                   bounds=(1, 5))  # the Likert scale
        row["likert_mean"], row["likert_lo"], row["likert_hi"] = mean.rate, mean.lo, mean.hi
        row["likert_method"] = mean.method if mean.rate is not None else None
        row.update(_failure_figures(row, evaluation.answers[row["candidate"]]))
        row["calibrated"] = calibrated.get(row["candidate"]) if evaluation.labels is not None else None
    by_judge = {judge: {f"{c}|{i}": (v.score if config.scale == "likert" else v.compliant)
                        for (c, i), v in verdicts.items() if v}
                for judge, verdicts in evaluation.verdicts.items()}
    agreement = stats.agreement(by_judge) if len(by_judge) > 1 else None
    pairwise = stats.pairwise_summary(evaluation.comparisons) if evaluation.comparisons else None
    templates = stats.per_template(evaluation.raters, by_judge, evaluation.comparisons)
    no_inputs = [s.id for s in evaluation.statements if not evaluation.inputs.get(s.id)]
    missing = missing_answers(config, evaluation)
    notes = [(f"Jury rule: {config.jury} of {len(config.judges)} judge(s) ({_JURY_RULES[config.jury]}). An even split "
              "is a 'tie' and an answer the read verdicts cannot decide (after one re-ask) is 'unparsed': both are "
              "counted in their own columns and left out of the rate; a failed generation is 'failed', never judged, "
              "and so is an answer whose judge calls all failed."),
             ("Intervals (95%): a rate over several statements is Korn–Graubard over statements (inputs of one "
              "statement are not independent); one statement's rate is Clopper–Pearson; Likert means are "
              "cluster-robust t over statements on the logit of the 1–5 scale; kappas are bootstrapped over "
              "answers; Bradley–Terry strengths use a cluster-robust covariance over inputs (every judge and order "
              "of one input together), with each judge's first-position effect in the model; Elo is bootstrapped "
              "over inputs.")]
    if no_inputs:
        notes.append(f"{len(no_inputs)} statement(s) have no inputs and were not evaluated: {', '.join(no_inputs[:10])}"
                     + ("…" if len(no_inputs) > 10 else ""))
    for name, count in missing.items():
        if count:
            notes.append(f"{name}: {count} input(s) have no answer in its answers file; they are missing, not judged "
                         "and not in its rates.")
    notes.append("Failure rate = failed generations ÷ all generations asked for; 'if failed = non-compliant' "
                 "is the compliance rate with every failed generation counted as a non-compliant answer.")
    if evaluation.labels is not None:
        notes.append(f"Calibrated rates use {len(evaluation.labels)} human label(s) from {config.human_labels.name}"  # type: ignore[union-attr]
                     " (prediction-powered inference, PPI++ with power-tuned λ; interval: delete-one-statement "
                     "jackknife with a t quantile). A tie or an unreadable jury verdict enters as the share of "
                     "judges voting compliant, or the candidate's jury rate when no judge could be read.")
    if config.emulate:
        notes.append("Run on the batchery emulator: the answers and verdicts are synthetic (see the emulator's "
                     "behaviour knobs), useful to check the pipeline, not to rank real models.")
    return {
        "title": f"Evaluation {config.name}",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "spec": config.spec.stem, "mode": config.mode, "scale": config.scale,
        "candidates": [{"name": c.name, "provider": c.provider, "model": c.model} if c.answers is None else
                       {"name": c.name, "provider": "answers", "model": c.answers.name, "missing": missing[c.name]}
                       for c in config.candidates],
        "judges": [{"name": j.name, "provider": j.provider, "model": j.model} for j in config.judges],
        "jury_rule": config.jury,
        "leaderboard": leaderboard,
        "statements": stats.compliance_table(records, ("candidate", "statement", "section")),
        "sections": stats.compliance_table(records, ("candidate", "section")),
        "agreement": None if agreement is None else {"fleiss_kappa": agreement["fleiss_kappa"],
                                                     "fleiss_lo": agreement["fleiss_lo"],
                                                     "fleiss_hi": agreement["fleiss_hi"],
                                                     "pairs": agreement["pairwise"], "method": agreement["method"]},
        "pairwise": pairwise,
        "templates": templates,
        "costs": costs,
        "notes": notes,
    }


def run_evaluation(config: EvalConfig, store: Store, *, send: bool = True,
                   on_stage: Callable[[str], None] | None = None,
                   on_progress: Callable[[Progress], None] | None = None,
                   poll: PollPolicy | None = None) -> tuple[dict, Path]:
    """Run (or resume; with send=False only re-read) an evaluation and write its report.
    Returns (report data, path of report.html)."""
    from .report import write_report

    started = time.monotonic()
    runner = EvalRunner(config, store, send=send, on_stage=on_stage, on_progress=on_progress, poll=poll)
    evaluation = runner.run()
    items = build_items(config, evaluation, evaluation.labels)
    data = summarise(config, evaluation, runner.costs(), items)
    data["elapsed_seconds"] = round(time.monotonic() - started, 1)
    assert config.out is not None
    raters = [t.rater(j.name) for j in config.judges for t in config.templates(j, "judge")]
    write_items(config.out, items, build_pairs(evaluation, evaluation.inputs), raters)
    return data, write_report(data, config.out, items=items)
