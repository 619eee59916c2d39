"""Generated inputs (SpecEval's autobencher): which inputs a round shows the next one, and the file
the generated inputs are written to.

The file has one ``{"statement_id", "input", "round"}`` line per input, statement by statement in
spec order and each statement's inputs in the order they were written (round by round), so that
given back as ``inputs:`` it numbers the inputs exactly as the run that wrote it did: the same
item ids, the same requests, and everything already answered and judged is reused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

GENERATED_INPUTS = "generated_inputs.jsonl"


def exposing_inputs(evaluation: Any, round: int) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """The inputs of ``round``, by statement, that exposed a failure: an answer of some candidate
    that some judge (with some prompt) found non-compliant, which includes every answer the judges
    disagreed on; and, for the statements where none did, the inputs that were tried."""
    from .pipeline import item_id

    failed = {item for verdicts in evaluation.verdicts.values()
              for (_, item), verdict in verdicts.items() if verdict and not verdict.compliant}
    exposing: dict[str, list[str]] = {}
    tried: dict[str, list[str]] = {}
    for statement in evaluation.statements:
        for index, text in enumerate(evaluation.inputs.get(statement.id, ())):
            item = item_id(statement.id, index)
            if evaluation.round_of.get(item) == round:
                (exposing if item in failed else tried).setdefault(statement.id, []).append(text)
    return exposing, {sid: texts for sid, texts in tried.items() if sid not in exposing}


def write_generated(path: Path, evaluation: Any) -> None:
    """Every generated input so far, replacing the file whole (a reader never sees half of it)."""
    from .pipeline import item_id

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as f:
        for statement in evaluation.statements:
            for index, text in enumerate(evaluation.inputs.get(statement.id, ())):
                f.write(orjson.dumps({"statement_id": statement.id, "input": text,
                                      "round": evaluation.round_of.get(item_id(statement.id, index))}) + b"\n")
    os.replace(partial, path)
