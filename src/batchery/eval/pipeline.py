"""An evaluation as a graph of batchery jobs: generate → judge → re-ask, generate → compare → re-ask,
then statistics → report.

Every stage is an ordinary job in the store, named after the evaluation, the stage and the model,
plus a digest of its requests. A stage starts as soon as the results it is built from are in (not
when the stage before it in a list has ended): every candidate's generation is submitted at once,
each judge's and each pairwise judge's jobs as soon as the answers are in, a re-ask as soon as the
verdicts are in. The open batches of all stages are polled together, one list call per provider
and cycle, with one wait per cycle. Running the evaluation again resumes the stages that were
running and finds the finished ones done (their answers are in the store), so a crash costs nothing
and a re-run sends nothing. The evaluation layer only builds requests and reads results.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from ..api import EMULATOR_POLL, Connection, drive, job_options
from ..engine import (
    Engine,
    PollPolicy,
    Progress,
    check_endpoint,
    poll_together,
    prepare_job,
    reopen_recoverable,
)
from ..errors import AccountError, BatcheryError, ConfigError, JobError
from ..export import Result, iter_results
from ..inputs import iter_objects
from ..live import LivePolicy
from ..pricing import PriceBook, actual_cost, total
from ..providers import EMULATOR_ORIGIN, get_provider, provider_class, provider_origin
from ..store import Store
from .config import EvalConfig, GenerateSpec, JudgeSpec, ModelSpec, RunSettings
from .generated import GENERATED_INPUTS, exposing_inputs, write_generated
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
    inputs_request,
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
    parse_inputs,
)

if TYPE_CHECKING:
    from ..emulator import Emulator


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
    round_of: dict[str, int] = field(default_factory=dict)  # generated inputs: item id -> the round that wrote it


def item_id(statement: str, index: int) -> str:
    return f"{statement}#{index}"


def _no_follow_up(results: dict[str, Result]) -> list[Stage]:
    return []


@dataclass(eq=False)
class Stage:
    """One node of an evaluation's graph: a batchery job called `name`, sent to `who`, whose
    requests `build` makes from the results of the stages it `needs` once those are all in. `then`
    receives its results by request id and returns the stages that follow from them (a re-ask of
    what could not be read). A stage with no requests finishes at once, sending nothing."""

    name: str
    who: ModelSpec
    build: Callable[[], list[dict]]
    needs: tuple[Stage, ...] = ()
    then: Callable[[dict[str, Result]], list[Stage]] = _no_follow_up
    results: dict[str, Result] | None = None  # once it has finished
    job: str | None = None  # its job's name, once its requests are built
    window: int = 0  # batch windows on the longest chain up to its end (0: nothing sent on the way)

    @property
    def ready(self) -> bool:
        return all(need.results is not None for need in self.needs)

    @property
    def label(self) -> str:
        return f"{self.name}: {self.who.name}"


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
        self._emulator: Emulator | None = None
        self._poll: PollPolicy | None = None
        self._default_poll = PollPolicy()
        self._adapters: dict[tuple[str, str | None], Any] = {}
        self.finished: list[Stage] = []  # in the order they ended (windows: how long the graph took)

    # -- the whole evaluation -------------------------------------------------------------------

    def run(self, wait: bool = True) -> Evaluation | None:
        """Run the evaluation's graph to its end. With wait=False, send what can be sent now and
        return None if stages are still open at the providers (the next run, or `batchery
        collect`, moves them on)."""
        config = self.config
        assert isinstance(config, EvalConfig)
        if not wait:
            self.check_can_leave()
        evaluation = self._evaluation()
        with self.connections():
            stages, finish = self.stages(evaluation)
            if not self.run_stages(stages, wait=wait):
                return None
        finish()
        return evaluation

    def check_can_leave(self) -> None:
        """--no-wait (an evaluation's or a ranking's) leaves batches open at the providers: refused
        where nothing would be left to come back to."""
        if not self.send:
            return
        if self.config.emulate:
            raise ConfigError("--no-wait leaves batches at the providers, but an in-process emulator (emulate: "
                              "true) stops with the command; start `batchery emulator` and give each model its "
                              "base_url, or run without --no-wait")
        if self.config.mode == "live":
            raise ConfigError("--no-wait is for batch mode: a live evaluation sends as it goes; run it "
                              "without --no-wait")

    def _evaluation(self) -> Evaluation:
        config = self.config
        assert isinstance(config, EvalConfig)
        statements = load_spec(config.spec)
        inputs = {} if config.input_writer is not None else load_inputs(config.inputs, statements)  # type: ignore[arg-type]
        evaluation = Evaluation(statements, inputs)
        known = known_ids(config, inputs)
        if config.human_labels is not None:  # checked before anything is sent
            from .calibration import load_labels

            evaluation.labels = load_labels(config.human_labels, config.scale, known)
        for candidate in config.candidates:  # existing answers: read (and checked) before anything is sent
            evaluation.answers[candidate.name] = ({} if candidate.answers is None else
                                                  load_answers(candidate.answers, statements, inputs,
                                                               config.inputs))  # type: ignore[arg-type]
        return evaluation

    def stages(self, evaluation: Evaluation) -> tuple[list[Stage], Callable[[], None]]:
        """The evaluation's graph, and what to do once it has run (put the comparisons in a fixed
        order: judge by judge and template by template, whatever order their stages ended in).
        A candidate given as existing answers has no generation stage: its answers are in already.
        With generated inputs the graph starts with the first round's input writer, and each round
        adds the next (see :meth:`_inputs_stage`)."""
        config = self.config
        assert isinstance(config, EvalConfig)
        compared: dict[str, list[dict]] = {}
        writer = config.input_writer
        stages = (self._round(evaluation, compared) if writer is None else
                  [self._inputs_stage(evaluation, compared, writer, 1)])

        def finish() -> None:
            evaluation.comparisons = [c for rows in compared.values() for c in rows]

        return stages, finish

    def _round(self, evaluation: Evaluation, compared: dict[str, list[dict]], round: int | None = None,
               after: Callable[[], list[Stage]] | None = None) -> list[Stage]:
        """Generation and judging of the inputs (of one round of generated inputs: their stages are
        named `<stage>-r<round>`), then `after` (the next round) once every judge's verdicts are in.
        The comparisons come with the last round, over every input: the same requests as for the
        inputs given as a file, so reusing generated_inputs.jsonl sends nothing again."""
        config = self.config
        assert isinstance(config, EvalConfig)
        suffix = "" if round is None else f"-r{round}"
        generated = tuple(self._generation(evaluation, candidate, round)
                          for candidate in config.candidates if candidate.answers is None)
        stages: list[Stage] = list(generated)
        judging = [(judge, template) for judge in config.judges for template in config.templates(judge, "judge")]
        left = [len(judging)]  # judge stages of this round whose verdicts are not in yet
        for judge, template in judging:  # each prompt its own stage and column
            rater = template.rater(judge.name)
            evaluation.raters[rater] = template.name
            evaluation.verdicts.setdefault(rater, {})  # the report lists the columns in the config's order

            def judged(verdicts: dict[str, Any], rater: str = rater) -> list[Stage] | None:
                evaluation.verdicts[rater].update({
                    tuple(rid.split("|", 1)): verdict for rid, verdict in verdicts.items()})  # type: ignore[misc]
                left[0] -= 1
                return after() if after is not None and not left[0] else None

            stages.append(self.judged_stage(template.stage("judge") + suffix, judge,
                                            partial(self._judge_requests, evaluation, judge, template, round),
                                            template.output.parse, judged, needs=generated))
        if after is None and config.pairwise is not None and len(config.candidates) > 1:
            names = config.pairwise.judges or [j.name for j in config.judges]
            for judge in (j for j in config.judges if j.name in names):
                for template in config.templates(judge, "compare"):
                    rater = template.rater(judge.name)
                    compared[rater] = []

                    def record(verdicts: dict[str, Any], rater: str = rater,
                               template: PromptTemplate = template) -> None:
                        compared[rater] = self._comparisons(rater, template, verdicts)

                    stages.append(self.judged_stage(
                        template.stage("compare"), judge, partial(self._compare_requests, evaluation, judge, template),
                        template.output.parse, record, needs=generated))
        return stages

    def _inputs_stage(self, evaluation: Evaluation, compared: dict[str, list[dict]], writer: GenerateSpec,
                      round: int) -> Stage:
        """Round `round` of generated inputs: the writer is asked for `per_statement` inputs per
        statement, shown (from the second round) the previous round's inputs that exposed
        non-compliance or judge disagreement. A reply that cannot be read is asked again once, then
        counts as no inputs. Once the inputs are in they are written to generated_inputs.jsonl and
        the round's candidates and judges start; the next round starts when their verdicts are in."""
        def build() -> dict[str, dict]:
            exposing, tried = exposing_inputs(evaluation, round - 1)
            requests = {}
            for statement in evaluation.statements:
                request = inputs_request(statement, writer.per_statement, model=writer.model, params=writer.params,
                                         failing=exposing.get(statement.id, ()), tried=tried.get(statement.id, ()))
                request["id"] = statement.id
                requests[statement.id] = request
            return requests

        def written(replies: dict[str, Any]) -> list[Stage]:
            for statement in evaluation.statements:
                texts = evaluation.inputs.get(statement.id, [])
                for text in replies.get(statement.id) or ():  # unreadable or failed: no inputs this round
                    if text not in texts:
                        evaluation.round_of[item_id(statement.id, len(texts))] = round
                        texts.append(text)
                if texts:
                    evaluation.inputs[statement.id] = texts
            if self.send:
                assert self.config.out is not None
                write_generated(self.config.out / GENERATED_INPUTS, evaluation)
            following = (partial(self._inputs_stage, evaluation, compared, writer, round + 1)
                         if round < writer.rounds else None)
            return self._round(evaluation, compared, round,
                               after=None if following is None else lambda: [following()])

        return self.judged_stage(f"inputs-r{round}", writer, build,
                                 partial(parse_inputs, limit=writer.per_statement), written)

    def _generation(self, evaluation: Evaluation, candidate: ModelSpec, round: int | None = None) -> Stage:
        def build() -> list[dict]:
            requests = []
            for statement in evaluation.statements:
                for index, text in enumerate(evaluation.inputs.get(statement.id, ())):
                    if round is not None and evaluation.round_of.get(item_id(statement.id, index)) != round:
                        continue
                    request = generation_request(text, model=candidate.model, params=candidate.params,
                                                 system=candidate.system)
                    request["id"] = item_id(statement.id, index)
                    requests.append(request)
            return requests

        def then(results: dict[str, Result]) -> list[Stage]:
            evaluation.answers[candidate.name].update(results)
            return []

        return Stage("generate" + ("" if round is None else f"-r{round}"), candidate, build, then=then)

    def _judge_requests(self, evaluation: Evaluation, judge: JudgeSpec, template: PromptTemplate,
                        round: int | None = None) -> dict[str, dict]:
        """Every successful answer of every candidate (to the inputs of `round`, when given), judged
        against its statement with one of the judge's prompts. A failed generation is never judged:
        it is counted as failed, not as non-compliant."""
        requests: dict[str, dict] = {}
        for statement in evaluation.statements:
            for index, text in enumerate(evaluation.inputs.get(statement.id, ())):
                if round is not None and evaluation.round_of.get(item_id(statement.id, index)) != round:
                    continue
                for candidate in self.config.candidates:  # type: ignore[attr-defined]
                    answer = evaluation.answers[candidate.name].get(item_id(statement.id, index))
                    if answer is None or not answer.ok or answer.text is None:
                        continue
                    if template.builtin:
                        request = compliance_request(statement, text, answer.text, model=judge.model,
                                                     params=judge.params, scale=self.config.scale)  # type: ignore[attr-defined]
                    else:
                        request = template.request(judge_variables(statement, text, answer.text),
                                                   model=judge.model, params=judge.params)
                    request["id"] = f"{candidate.name}|{item_id(statement.id, index)}"
                    requests[request["id"]] = request
        return requests

    def _compare_requests(self, evaluation: Evaluation, judge: JudgeSpec, template: PromptTemplate) -> dict[str, dict]:
        """Candidates head to head on each input, judged on the statement: each pair in a random
        order, and with the chosen share also in the reversed order (position bias shows there).
        Each of the judge's pairwise prompts sees the same pairs in the same orders."""
        pairwise = self.config.pairwise  # type: ignore[attr-defined]
        assert pairwise is not None
        rng = random.Random(f"{pairwise.seed}:{judge.name}")
        by_name = {s.id: s for s in evaluation.statements}
        requests: dict[str, dict] = {}
        for statement in evaluation.statements:
            for index, text in enumerate(evaluation.inputs.get(statement.id, ())):
                item = item_id(statement.id, index)
                answers = {c.name: evaluation.answers[c.name].get(item) for c in self.config.candidates}  # type: ignore[attr-defined]
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
        return requests

    @staticmethod
    def _comparisons(rater: str, template: PromptTemplate, verdicts: dict[str, Any]) -> list[dict]:
        side = {"A": "first", "B": "second", "tie": "tie"}
        rows = []
        for rid, verdict in verdicts.items():
            first, second, item = rid.split("|", 2)
            rows.append({"item": item, "first": first, "second": second, "judge": rater, "template": template.name,
                         "winner": side[verdict.winner] if verdict else None,
                         "confidence": verdict.confidence if verdict else None,
                         "explanation": verdict.explanation if verdict else None})
        return rows

    def judged_stage(self, stage: str, judge: ModelSpec, build: Callable[[], dict[str, dict]],
                     parse: Callable[[Any], Any], done: Callable[[dict[str, Any]], list[Stage] | None],
                     needs: tuple[Stage, ...] = ()) -> Stage:
        """A stage of judge requests whose verdicts are parsed; what cannot be read is asked once
        more (the `<stage>-reask` stage, started as soon as these verdicts are in), and what still
        cannot be read stays None ("unparsed": never counted as a verdict). A judge call that
        failed is JUDGE_FAILED: no reply came, so it is "failed", not "unparsed". `done` gets the
        verdicts by request id once they are final, and may return the stages that follow from them."""
        requests: dict[str, dict] = {}

        def build_all() -> list[dict]:
            requests.update(build())
            return list(requests.values())

        def then(answers: dict[str, Result]) -> list[Stage]:
            verdicts: dict[str, Any] = {}
            retry: list[dict] = []
            for rid, result in answers.items():
                verdict = parse(result.text) if result.ok else JUDGE_FAILED
                verdicts[rid] = verdict
                if verdict is None and result.ok:
                    again = reask_request(requests[rid], result.text or "")
                    again["id"] = rid
                    retry.append(again)
            if not retry:
                return done(verdicts) or []

            def reasked(results: dict[str, Result]) -> list[Stage]:
                for rid, result in results.items():
                    verdicts[rid] = parse(result.text) if result.ok else JUDGE_FAILED
                return done(verdicts) or []

            return [Stage(f"{stage}-reask", judge, lambda: retry, then=reasked)]

        return Stage(stage, judge, build_all, needs=needs, then=then)

    def judged(self, stage: str, judge: ModelSpec, requests: dict[str, dict],
               parse: Callable[[Any], Any]) -> dict[str, Any]:
        """One judge's requests sent (with their re-ask) on their own; the verdicts by request id."""
        verdicts: dict[str, Any] = {}
        self.run_stages([self.judged_stage(stage, judge, lambda: requests, parse, verdicts.update)])
        return verdicts

    def stage(self, stage: str, who: ModelSpec, requests: list[dict]) -> dict[str, Result]:
        """Run (or read back) one stage's job on its own; its results by request id."""
        node = Stage(stage, who, lambda: requests)
        self.run_stages([node])
        assert node.results is not None
        return node.results

    # -- the graph ----------------------------------------------------------------------------------

    def run_stages(self, stages: list[Stage], wait: bool = True) -> bool:
        """Drive a graph of stages: start every stage whose needs are in, then cycle: each open
        stage's engine submits what it has (within the evaluation's budget), ONE poll per provider
        connection covers the open batches of every stage on it, each collects what ended, and a
        stage that ended starts the ones that need it in the same cycle. One sleep per cycle, and
        only when nothing changed. Each open stage's job lock is held while it runs.

        Returns True when every stage has finished; with wait=False, False as soon as nothing more
        can be sent without waiting (the stages left are open at the providers). Raises
        EvalStopped when a stage stopped early (budget, key, failures a later run can fix), after
        the stages already open have collected what they sent."""
        waiting = list(stages)
        running: dict[Engine, tuple[Stage, ExitStack]] = {}  # open stages' engines, with their job locks
        policy = self._policy()
        stop: EvalStopped | None = None
        delay = policy.initial
        try:
            while True:
                while stop is None and (ready := [s for s in waiting if s.ready]):
                    for node in ready:
                        waiting.remove(node)
                        engine = self._start(node, running)
                        if engine is None:  # read back from the store (or run live): what it starts, starts now
                            waiting += self._ended(node, sent=False)
                if not running:
                    break
                changed = self._cycle(list(running))
                for engine in list(running):
                    engine._report()
                    if engine._has_work():
                        continue
                    node, lock = running.pop(engine)
                    if engine.stopped is None:
                        engine._finish()  # stopped (not done) when lines failed for a reason a later run can fix
                    lock.close()
                    if self.on_progress:
                        final = engine.progress(done=engine.stopped is None)
                        final.stopped = engine.stopped
                        self.on_progress(final)
                    if engine.stopped is not None:
                        stop = stop or EvalStopped(f"stage '{node.name}' for {node.who.name}: {engine.stopped}",
                                                   engine.stopped.startswith("--max-cost"))
                        continue
                    waiting += self._ended(node, sent=True)
                    changed = True
                if not wait and not changed:
                    break
                if changed:
                    delay = policy.initial
                else:
                    policy.sleep(delay)
                    delay = min(delay * policy.factor, policy.maximum)
        finally:
            for _, lock in running.values():
                lock.close()
        if stop is not None:
            raise stop
        return not running and not waiting

    def _start(self, node: Stage, running: dict[Engine, tuple[Stage, ExitStack]]) -> Engine | None:
        """Open a stage whose needs are in: its job is created (or resumed) and an engine is made
        for it, holding the job's lock; None when it has finished here (nothing to send, read back
        from the store, or run live, which stays one stage at a time)."""
        requests = node.build()
        if not requests:
            node.results = {}
            return None
        digest = hashlib.sha256(orjson.dumps(requests, option=orjson.OPT_SORT_KEYS)).hexdigest()
        node.job = job_name = f"{self.config.name}.{node.name}.{_slug(node.who.name)}.{digest[:10]}"
        self.on_stage(f"{node.label} ({len(requests):,} requests)")
        existing = self.store.get_job(job_name)
        if existing is not None and self.send:  # a finished stage's answers are read back only at its endpoint
            existing = check_endpoint(self.store, existing, self._origin(node.who))
        if existing is not None and existing.state not in ("running", "ingesting"):  # ingesting: a crash cut it short
            node.results = self._results(job_name)
            return None
        if not self.send:
            raise JobError(f"stage '{node.name}' for {node.who.name} has not finished; run `batchery eval run` first")
        adapter = self._adapter(node.who)
        live = self._live_policy()
        # where the stage's provider is, so `batchery collect` and `cancel` can reach its batches
        options = job_options(Connection(node.who.provider, node.who.base_url, None, self._emulator is not None),
                              live, max_attempts=self.config.max_attempts)
        job, _ = prepare_job(self.store, job_name, adapter, node.who.model, iter_objects(requests), digest, options)
        budget = self.prices if self.config.budget_usd is not None else None
        if live is not None:
            progress = drive(self.store, adapter, job, live=live, max_attempts=self.config.max_attempts,
                             on_progress=self.on_progress, max_cost=self._remaining(job_name, []), prices=budget)
            if progress.stopped:
                raise EvalStopped(f"stage '{node.name}' for {node.who.name}: {progress.stopped}", progress.capped)
            node.results = self._results(job_name)
            return None
        lock = ExitStack()
        lock.enter_context(self.store.job_lock(job))  # another process running this stage stops us here
        try:
            current = self.store.get_job(job_name)  # as it is now that we hold it
            assert current is not None
            reopen_recoverable(self.store, current)
            engine = Engine(self.store, adapter, current, max_attempts=self.config.max_attempts,
                            poll=self._policy(), on_progress=self.on_progress,
                            max_cost=0.0 if budget is not None else None, prices=budget)  # the cap: set each cycle
        except BaseException:
            lock.close()
            raise
        running[engine] = (node, lock)
        engine._report()  # its progress line, under the label just announced
        return engine

    def _cycle(self, engines: list[Engine]) -> bool:
        """One cycle of every open stage, grouped by provider connection: one poll per group."""
        groups: dict[int, list[Engine]] = {}
        for engine in engines:
            groups.setdefault(id(engine.provider), []).append(engine)
        changed = False
        for group in groups.values():
            try:
                changed |= poll_together(group, lambda engine: self._cap(engine, engines))
            except AccountError as exc:  # every call would fail the same way: stop now, lose nothing
                with self.store.transaction():
                    for engine in group:
                        self.store.log(engine.job.id, "account_error", message=str(exc))
                raise EvalStopped(f"{group[0].provider.name}: {exc}. Nothing more was sent; the evaluation is saved: "
                                  "fix it and run `batchery eval run` again", capped=False) from None
        return changed

    def _ended(self, node: Stage, sent: bool) -> list[Stage]:
        """A stage's results are in: read them, and return the stages that follow from them."""
        if node.results is None:
            assert node.job is not None
            node.results = self._results(node.job)
        node.window = max((need.window for need in node.needs), default=0) + (1 if sent else 0)
        self.finished.append(node)
        follow = node.then(node.results)
        for stage in follow:  # a follow-up (a re-ask) comes after this stage
            stage.needs = (*stage.needs, node)
        return follow

    def _results(self, job_name: str) -> dict[str, Result]:
        job = self.store.get_job(job_name)
        assert job is not None
        return {r.id: r for r in iter_results(self.store, job.id, job.provider) if r.id is not None}  # each has its id

    def windows(self) -> tuple[int, list[list[str]]]:
        """Batch windows the last run took: the longest chain of stages that sent batches, and the
        stage names that ended in each window (1-based)."""
        count = max((s.window for s in self.finished), default=0)
        by_window: list[list[str]] = [[] for _ in range(count)]
        for s in self.finished:
            if s.window and s.name not in by_window[s.window - 1]:
                by_window[s.window - 1].append(s.name)
        return count, by_window

    def plan(self) -> list[dict]:
        """Every stage as far as the store can tell, sending nothing: a stage whose needs are in is
        named by its job (its state, or `not started`), finished ones are read back so the stages
        after them can be named too, and one whose needs are not in is `waiting` on them."""
        evaluation = self._evaluation()
        waiting, _ = self.stages(evaluation)
        rows: list[dict] = []
        while ready := [s for s in waiting if s.ready]:
            for node in ready:
                waiting.remove(node)
                requests = node.build()
                if not requests:
                    node.results = {}
                    waiting += node.then({})
                    continue
                digest = hashlib.sha256(orjson.dumps(requests, option=orjson.OPT_SORT_KEYS)).hexdigest()
                node.job = f"{self.config.name}.{node.name}.{_slug(node.who.name)}.{digest[:10]}"
                job = self.store.get_job(node.job)
                rows.append({"stage": node.name, "who": node.who.name, "job": node.job,
                             "state": job.state if job is not None else "not started", "waiting_for": []})
                if job is not None and job.state not in ("running", "ingesting"):
                    waiting += self._ended(node, sent=False)
        for node in waiting:
            rows.append({"stage": node.name, "who": node.who.name, "job": None, "state": "waiting",
                         "waiting_for": [need.label for need in node.needs if need.results is None]})
        return rows

    def _policy(self) -> PollPolicy:
        return self.poll or self._poll or self._default_poll

    def _origin(self, who: ModelSpec) -> str:
        return EMULATOR_ORIGIN if self._emulator is not None else provider_origin(who.provider, who.base_url)

    def _live_policy(self) -> LivePolicy | None:
        c = self.config
        return LivePolicy(rpm=c.rpm, tpm=c.tpm, concurrency=c.concurrency) if c.mode == "live" else None

    def _cap(self, engine: Engine, engines: list[Engine]) -> None:
        """Just before a stage submits: its cap is the budget less what the evaluation's other jobs
        spent and what the other open stages have committed (sent, not yet back)."""
        if self.config.budget_usd is not None:
            engine.max_cost = self._remaining(engine.job.name, [e for e in engines if e is not engine])

    def _remaining(self, job_name: str, others: list[Engine]) -> float | None:
        """The cap for a stage job: the budget less what the evaluation's other jobs spent (the job
        counts its own spend, so a resumed stage is not charged twice) and committed."""
        if self.config.budget_usd is None:
            return None
        spent = sum(row["usd"] or 0.0 for row in self.costs(exclude=job_name))
        return max(0.0, self.config.budget_usd - spent - sum(other.committed() for other in others))

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
                self._adapters.clear()

    def _adapter(self, who: ModelSpec):
        """One adapter per provider connection, shared by every stage on it: their batches are
        polled together."""
        key = (who.provider, None if self._emulator is not None else who.base_url)
        if key not in self._adapters:
            if self._emulator is not None:
                adapter = get_provider(who.provider, base_url=provider_class(who.provider).emulated_url(self._emulator),
                                       api_key="emulator")
                adapter.origin = EMULATOR_ORIGIN
            else:
                adapter = get_provider(who.provider, base_url=who.base_url)
            self._adapters[key] = adapter
        return self._adapters[key]


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
    writer = config.input_writer
    if writer is not None:
        notes.append(f"Inputs written by {writer.name}: up to {writer.per_statement} per statement in each of "
                     f"{writer.rounds} round(s), each round after the first shown the inputs of the round before "
                     f"that exposed a failure; they are in {GENERATED_INPUTS}, which can be edited and given as "
                     "inputs.")
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
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
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
                   poll: PollPolicy | None = None, wait: bool = True) -> tuple[dict, Path] | None:
    """Run (or resume; with send=False only re-read) an evaluation and write its report.
    Returns (report data, path of report.html); with wait=False, None when stages are still open
    at the providers (everything that could be sent was)."""
    from .report import write_report

    started = time.monotonic()
    runner = EvalRunner(config, store, send=send, on_stage=on_stage, on_progress=on_progress, poll=poll)
    evaluation = runner.run(wait=wait)
    if evaluation is None:
        return None
    items = build_items(config, evaluation, evaluation.labels)
    data = summarise(config, evaluation, runner.costs(), items)
    data["elapsed_seconds"] = round(time.monotonic() - started, 1)
    data["batch_windows"], data["window_stages"] = runner.windows()
    assert config.out is not None
    raters = [t.rater(j.name) for j in config.judges for t in config.templates(j, "judge")]
    write_items(config.out, items, build_pairs(evaluation, evaluation.inputs), raters, parquet=config.parquet)
    return data, write_report(data, config.out, items=items, parquet=config.parquet)
