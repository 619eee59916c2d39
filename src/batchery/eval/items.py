"""Every answer and every pairwise judgement of an evaluation, one record each, to read and to label.

``items.jsonl`` / ``items.csv``: one line per answer a candidate was asked for. Its ``id`` is
``<candidate>:<statement_id>:<input index>`` (the index counts the statement's inputs from 0 in
the inputs file's order): readable, stable while the config's candidates and the inputs stay the
same, and what human labels refer to (``human_labels``). Fields: ``candidate``, ``statement_id``,
``section``, ``input_index``, ``input``, ``answer`` (None when the generation failed), ``status``
(the request's outcome: succeeded, failed, expired, ...), ``error``, ``judges`` (per judge:
``status`` judged, unparsed (the reply could not be read) or failed (the call failed),
``verdict`` true/false or None, ``score`` on the Likert scale, ``confidence``, ``explanation``),
``jury`` (``result``: compliant, non-compliant, tie, unparsed, or failed when the generation or
every judge call failed; ``compliant``; the ``yes``/``votes`` count; the mean ``score``) and
``human_label`` when one was given.

``pairs.jsonl``: one line per pairwise judgement: ``id`` (``<first>:<second>:<statement>:<index>:
<judge>``), the two answers' item ids, the judge, ``winner`` (first, second, tie, or None when
unparsed), ``winner_name``, ``confidence`` and ``explanation``.

With ``parquet: true`` in the config, ``items.parquet`` (the columns of items.csv, with booleans,
numbers and nulls typed) and ``pairs.parquet`` (the fields of pairs.jsonl) are written too.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from ..errors import ConfigError
from .config import EvalConfig

JURY_RESULTS = ("compliant", "non-compliant", "tie", "unparsed", "failed")


def answer_id(candidate: str, statement: str, index: int) -> str:
    return f"{candidate}:{statement}:{index}"


def known_ids(config: EvalConfig, inputs: Mapping[str, list[str]]) -> list[str]:
    """Every answer id of the evaluation, from its config and inputs alone (nothing sent yet), so a
    labels file can be checked before anything is sent. Two answers never share an id."""
    ids = [answer_id(c.name, statement, index) for c in config.candidates
           for statement, texts in inputs.items() for index in range(len(texts))]
    if len(set(ids)) != len(ids):
        raise ConfigError("two answers would share an item id (candidate:statement:index): rename a candidate "
                          "so that no candidate name plus statement id reads like another")
    return ids


def build_items(config: EvalConfig, evaluation: Any, labels: Mapping[str, Any] | None = None) -> list[dict]:
    """One record per answer, in candidate order, then statement (spec order), then input."""
    from .pipeline import item_id, jury_verdict
    from .verdicts import TIE

    sections = {s.id: s.section for s in evaluation.statements}
    items: list[dict] = []
    for candidate in config.candidates:
        answers = evaluation.answers.get(candidate.name, {})
        for statement in evaluation.statements:
            for index, text in enumerate(evaluation.inputs.get(statement.id, ())):
                result = answers.get(item_id(statement.id, index))
                ok = result is not None and result.ok
                judges: dict[str, dict] = {}
                parsed = []
                for judge, verdicts in evaluation.verdicts.items():
                    key = (candidate.name, item_id(statement.id, index))
                    if key not in verdicts:
                        continue
                    verdict = verdicts[key]
                    if not verdict:  # None: the reply could not be read; JUDGE_FAILED: no reply came
                        judges[judge] = {"status": "unparsed" if verdict is None else "failed", "verdict": None,
                                         "score": None, "confidence": None, "explanation": None}
                        continue
                    parsed.append(verdict)
                    judges[judge] = {"status": "judged", "verdict": verdict.compliant, "score": verdict.score,
                                     "confidence": verdict.confidence, "explanation": verdict.explanation}
                # the whole jury, unread replies included, as the leaderboard counts it
                jury = [verdicts.get((candidate.name, item_id(statement.id, index)))
                        for verdicts in evaluation.verdicts.values()]
                compliant, score = jury_verdict(jury, config.jury) if ok else (None, None)
                yes = sum(v.compliant for v in parsed)
                judge_calls_failed = not parsed and any(j["status"] == "failed" for j in judges.values())
                if not ok or judge_calls_failed:  # as the leaderboard counts them
                    outcome = "failed"
                elif compliant == TIE:
                    outcome, compliant = "tie", None
                elif compliant is not None:
                    outcome = "compliant" if compliant else "non-compliant"
                else:
                    outcome = "unparsed"
                error = (result.error or {}).get("message") if result is not None and not ok else None
                id_ = answer_id(candidate.name, statement.id, index)
                item = {"id": id_, "candidate": candidate.name, "statement_id": statement.id,
                        "section": sections[statement.id], "input_index": index, "input": text,
                        "answer": result.text if ok and result is not None else None,
                        "status": result.status if result is not None else "missing", "error": error,
                        "judges": judges,
                        "jury": {"result": outcome, "compliant": compliant, "yes": yes, "votes": len(parsed),
                                 "score": score}}
                if labels is not None:
                    item["human_label"] = labels.get(id_)
                items.append(item)
    return items


def build_pairs(evaluation: Any, inputs: Mapping[str, list[str]]) -> list[dict]:
    side = {"first": "first", "second": "second"}
    pairs = []
    for comp in evaluation.comparisons:
        statement, index = comp["item"].rsplit("#", 1)
        winner = comp.get("winner")
        pairs.append({
            "id": f"{comp['first']}:{comp['second']}:{statement}:{index}:{comp['judge']}",
            "statement_id": statement, "input_index": int(index), "input": inputs[statement][int(index)],
            "first": comp["first"], "second": comp["second"],
            "first_item": answer_id(comp["first"], statement, int(index)),
            "second_item": answer_id(comp["second"], statement, int(index)),
            "judge": comp["judge"], "winner": winner,
            "winner_name": comp[side[winner]] if winner in side else winner,
            "confidence": comp.get("confidence"), "explanation": comp.get("explanation"),
        })
    return pairs


def csv_columns(judges: list[str]) -> list[str]:
    columns = ["id", "candidate", "statement_id", "section", "input_index", "input", "answer", "status", "error",
               "jury_result", "jury_yes", "jury_votes", "jury_score", "human_label"]
    for judge in judges:
        columns += [f"{judge}.{field}" for field in ("status", "verdict", "score", "confidence", "explanation")]
    return columns


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"  # as in items.jsonl
    return value


PAIR_COLUMNS = ["id", "statement_id", "input_index", "input", "first", "second", "first_item", "second_item",
                "judge", "winner", "winner_name", "confidence", "explanation"]


def _flat_item(item: dict, columns: list[str]) -> dict[str, Any]:
    """One item as a row of the items table (csv_columns): the jury and each judge spread out."""
    jury = item["jury"]
    row: dict[str, Any] = {k: item.get(k) for k in columns[:9]}
    row.update(jury_result=jury["result"], jury_yes=jury["yes"], jury_votes=jury["votes"],
               jury_score=jury["score"], human_label=item.get("human_label"))
    for judge, verdict in item["judges"].items():
        for field in ("status", "verdict", "score", "confidence", "explanation"):
            row[f"{judge}.{field}"] = verdict[field]
    return row


def write_items(out_dir: Path, items: list[dict], pairs: list[dict], judges: list[str], parquet: bool = False) -> None:
    """items.jsonl, items.csv and (when there were pairwise judgements) pairs.jsonl; with `parquet`
    also items.parquet (the CSV's columns, typed) and pairs.parquet."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "items.jsonl").open("wb") as f:
        for item in items:
            f.write(orjson.dumps(item) + b"\n")
    columns = csv_columns(judges)
    with (out_dir / "items.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for item in items:
            writer.writerow({k: _cell(v) for k, v in _flat_item(item, columns).items()})
    pairs_path = out_dir / "pairs.jsonl"
    if pairs:
        with pairs_path.open("wb") as f:
            for pair in pairs:
                f.write(orjson.dumps(pair) + b"\n")
    elif pairs_path.exists():
        pairs_path.unlink()  # a stale file from an earlier run into the same folder would mislead
    if parquet:
        from ..columnar import write_table

        write_table(out_dir / "items.parquet", columns, (_flat_item(item, columns) for item in items))
        if pairs:
            write_table(out_dir / "pairs.parquet", PAIR_COLUMNS, pairs)
    for name, wanted in (("items.parquet", parquet), ("pairs.parquet", parquet and bool(pairs))):
        if not wanted:
            (out_dir / name).unlink(missing_ok=True)  # stale from an earlier run: it would mislead


def load_answers(path: Path, statements: list[Any], inputs: Mapping[str, list[str]], inputs_path: Path
                 ) -> dict[str, Any]:
    """A candidate's existing answers (``answers: file``) as results by item, as if generated.

    Lines are ``{"statement_id", "input", "answer"}`` (the input's text, as in the inputs file; a
    text given twice for one statement is answered in order) or ``{"id", "answer"}`` (the ``id``
    of a line of the JSONL inputs file). Any bad line (bad JSON, a missing field, an unknown
    statement, input or id, a second answer to one input) is a ConfigError naming the file and
    line, before anything is sent. Inputs without an answer are simply absent (reported missing).
    """
    from ..errors import InputError
    from .pipeline import item_id
    from .specs import jsonl_objects

    known = {s.id for s in statements}
    ids: dict[str, tuple[str, int]] | None = None
    free: dict[tuple[str, str], list[int]] = {}  # (statement, input) -> its indices not answered yet
    seen: dict[str, str] = {}  # item -> the line that answered it
    results: dict[str, Any] = {}
    try:
        for where, obj in jsonl_objects(path):
            answer = obj.get("answer")
            if not isinstance(answer, str):
                raise ConfigError(f"{where}: field 'answer' must be a string (the candidate's answer)")
            if "id" in obj:
                key = obj["id"]
                if not isinstance(key, (str, int)) or isinstance(key, bool):
                    raise ConfigError(f"{where}: field 'id' must be a string or an integer")
                if ids is None:
                    ids = _input_ids(inputs_path)
                if str(key) not in ids:
                    raise ConfigError(f"{where}: no input with id '{key}' in {inputs_path}")
                statement, index = ids[str(key)]
            else:
                named, text = obj.get("statement_id"), obj.get("input")
                if not isinstance(named, str) or not isinstance(text, str):
                    raise ConfigError(f"{where}: give 'statement_id' and 'input' (strings), or the 'id' of an input")
                statement = named
                if statement not in known:
                    raise ConfigError(f"{where}: no statement '{statement}' in the spec")
                texts = inputs.get(statement, [])
                slots = free.setdefault((statement, text), [i for i, t in enumerate(texts) if t == text])
                if not slots:
                    if text in texts:
                        first = seen[item_id(statement, texts.index(text))]
                        raise ConfigError(f"{where}: a second answer to the same input (first at {first})")
                    raise ConfigError(f"{where}: statement '{statement}' has no such input in {inputs_path}")
                index = slots.pop(0)
            item = item_id(statement, index)
            if item in seen:
                raise ConfigError(f"{where}: a second answer to the same input (first at {seen[item]})")
            seen[item] = where
            results[item] = _given(item, answer)
    except InputError as exc:  # bad JSON, not an object: already names the file and line
        raise ConfigError(str(exc)) from None
    return results


def _input_ids(inputs_path: Path) -> dict[str, tuple[str, int]]:
    """(statement, index) by the ``id`` of each line of a JSONL inputs file that has one."""
    from .specs import jsonl_objects

    if inputs_path.is_dir():
        raise ConfigError(f"{inputs_path}: answers given by 'id' need a JSONL inputs file whose lines have an 'id'")
    ids: dict[str, tuple[str, int]] = {}
    count: dict[str, int] = {}
    for where, obj in jsonl_objects(inputs_path):
        statement = str(obj.get("statement_id"))
        index = count.get(statement, 0)
        count[statement] = index + 1
        if "id" in obj:
            key = str(obj["id"])
            if key in ids:
                raise ConfigError(f"{where}: input id '{key}' appears twice, so answers cannot refer to it")
            ids[key] = (statement, index)
    return ids


def _given(item: str, answer: str) -> Any:
    """An existing answer as a succeeded result (no provider, no usage, no cost)."""
    from ..export import Result

    return Result(id=item, custom_id="", status="succeeded", text=answer, response=None,
                  usage={"input_tokens": None, "output_tokens": None, "cached_tokens": None,
                         "reasoning_tokens": None},
                  error=None, attempts=0, provider="answers", model="", batch_id=None)


def missing_answers(config: EvalConfig, evaluation: Any) -> dict[str, int]:
    """Per candidate with an answers file: how many inputs it gave no answer for."""
    asked = sum(len(texts) for texts in evaluation.inputs.values())
    return {c.name: asked - len(evaluation.answers.get(c.name, {})) for c in config.candidates
            if c.answers is not None}
