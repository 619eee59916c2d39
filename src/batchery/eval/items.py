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


def write_items(out_dir: Path, items: list[dict], pairs: list[dict], judges: list[str]) -> None:
    """items.jsonl, items.csv and (when there were pairwise judgements) pairs.jsonl."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "items.jsonl").open("wb") as f:
        for item in items:
            f.write(orjson.dumps(item) + b"\n")
    columns = csv_columns(judges)
    with (out_dir / "items.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for item in items:
            jury = item["jury"]
            row: dict[str, Any] = {k: item.get(k) for k in columns[:9]}
            row.update(jury_result=jury["result"], jury_yes=jury["yes"], jury_votes=jury["votes"],
                       jury_score=jury["score"], human_label=item.get("human_label"))
            for judge, verdict in item["judges"].items():
                for field in ("status", "verdict", "score", "confidence", "explanation"):
                    row[f"{judge}.{field}"] = verdict[field]
            writer.writerow({k: _cell(v) for k, v in row.items()})
    pairs_path = out_dir / "pairs.jsonl"
    if pairs:
        with pairs_path.open("wb") as f:
            for pair in pairs:
                f.write(orjson.dumps(pair) + b"\n")
    elif pairs_path.exists():
        pairs_path.unlink()  # a stale file from an earlier run into the same folder would mislead
