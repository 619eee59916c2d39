"""Reading a judge's reply: lenient about where the JSON is, strict about what it says.

Lenient: the verdict object may be the whole reply, sit in a ```json fence, or have prose around
it; when a reply holds several objects, the last one carrying the verdict field wins (judges tend
to think first and conclude last). ``"true"`` / ``"false"`` strings count as booleans, numeric
strings as numbers, and ``winner`` is read case-insensitively.

Strict: nothing is guessed or clamped. A missing verdict field, a value of the wrong type, a score
outside 1..5 or a confidence outside 0..1 make the reply unparsed (``None``), so the caller can
re-ask instead of counting noise as a verdict. ``confidence`` and ``explanation`` may be absent
(they become ``None`` and ``""``), but when present they must be valid.

Likert replies map to a binary verdict as ``compliant = score >= 4`` (4 and 5 are the "complies"
anchors of :data:`batchery.eval.prompts.LIKERT_ANCHORS`; 3 is borderline and counts as not
compliant).

The parsers never raise, whatever the input.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

LIKERT_COMPLIANT_FROM = 4
TIE = "tie"  # a jury that split evenly: its own outcome, never "unparsed"
MAX_REPLY_CHARS = 200_000  # longer replies are read from their first and last parts only
_MAX_OBJECT_ATTEMPTS = 1000  # '{' or '[' positions tried per reply; bounds the work on hostile text
_DECODER = json.JSONDecoder()
_MISSING = object()
_INVALID = object()


class _JudgeFailed:
    """A judge call that ended failed: there is no reply to read, so it is neither a verdict nor
    'unparsed'. Falsy, so code that skips missing verdicts skips it too."""

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "JUDGE_FAILED"


JUDGE_FAILED = _JudgeFailed()


@dataclass(frozen=True)
class ComplianceVerdict:
    compliant: bool
    score: int | None  # 1..5 on the Likert scale, None on the binary one
    confidence: float | None
    explanation: str


@dataclass(frozen=True)
class PairwiseVerdict:
    winner: str  # "A", "B" or "tie"
    confidence: float | None
    explanation: str


def parse_compliance(text: Any, scale: str = "binary") -> ComplianceVerdict | None:
    """The verdict in a compliance judge's reply, or None when the reply does not hold a valid one."""
    try:
        if scale == "likert":
            obj = _last_object_with(text, "score")
            if obj is None:
                return None
            score = _score(obj["score"])
            if score is None:
                return None
            compliant = score >= LIKERT_COMPLIANT_FROM
        elif scale == "binary":
            obj = _last_object_with(text, "compliant")
            if obj is None:
                return None
            score = None
            flag = _bool(obj["compliant"])
            if flag is None:
                return None
            compliant = flag
        else:
            return None
        confidence, explanation = _confidence(obj), _explanation(obj)
        if confidence is _INVALID or explanation is None:
            return None
        return ComplianceVerdict(compliant, score, confidence, explanation)
    except Exception:
        return None


def parse_pairwise(text: Any) -> PairwiseVerdict | None:
    """The verdict in a pairwise judge's reply, or None when the reply does not hold a valid one."""
    try:
        obj = _last_object_with(text, "winner")
        if obj is None:
            return None
        winner = _winner(obj["winner"])
        confidence, explanation = _confidence(obj), _explanation(obj)
        if winner is None or confidence is _INVALID or explanation is None:
            return None
        return PairwiseVerdict(winner, confidence, explanation)
    except Exception:
        return None


def parse_declared(text: Any, kind: str, field: str, values: Mapping[str, Any] | None = None
                   ) -> ComplianceVerdict | PairwiseVerdict | None:
    """The verdict in a reply to your own prompt template, read from the ``field`` its output
    declares. ``kind`` says what the verdict is: ``binary`` (true = compliant), ``likert`` (an
    integer 1..5, compliant from 4) or ``pairwise`` ("A", "B" or "tie"). ``values``, when given,
    maps the field's values (compared as lower-cased text: ``true``, ``3``, ``pass``) to those,
    so a template may ask for ``"verdict": "pass"`` or ``"better": "Response 1"``. Strict as the
    parsers above: a value outside the declared ones is unparsed. Never raises."""
    try:
        obj = _last_object_with(text, field)
        if obj is None:
            return None
        value = obj[field]
        if values is not None:
            value = values.get(_value_key(value) or "", _INVALID)
            if value is _INVALID:
                return None
        confidence, explanation = _confidence(obj), _explanation(obj)
        if confidence is _INVALID or explanation is None:
            return None
        if kind == "pairwise":
            winner = _winner(value)
            return None if winner is None else PairwiseVerdict(winner, confidence, explanation)
        if kind == "likert":
            score = _score(value)
            return None if score is None else ComplianceVerdict(score >= LIKERT_COMPLIANT_FROM, score, confidence,
                                                                explanation)
        if kind == "binary":
            compliant = _bool(value)
            return None if compliant is None else ComplianceVerdict(compliant, None, confidence, explanation)
        return None
    except Exception:
        return None


def parse_inputs(text: Any, limit: int) -> list[str] | None:
    """The test inputs in an input writer's reply: the ``inputs`` list of the last object that has
    one, else the last JSON list in the reply (a writer that forgot the object). Items are strings
    (or ``{"input": "..."}``), stripped; empty ones and repeats are dropped, and at most ``limit``
    are kept. None when no list with at least one input is found, so the caller can re-ask.
    Never raises."""
    try:
        if not isinstance(text, str):
            return None
        obj = _last_object_with(text, "inputs")
        values = obj["inputs"] if obj is not None else _last_list(text)
        if not isinstance(values, list):
            return None
        inputs: list[str] = []
        for value in values:
            if isinstance(value, dict):
                value = value.get("input")
            if isinstance(value, str) and value.strip() and value.strip() not in inputs:
                inputs.append(value.strip())
        return inputs[:limit] or None
    except Exception:  # a parser of untrusted text must never raise
        return None


def _last_list(text: str) -> list | None:
    """The last top-level JSON list in ``text``."""
    found = None
    for value in _top_level(text, "["):
        found = value
    return found


def _value_key(value: Any) -> str | None:
    """A verdict value as the keys of a ``values`` map are written: lower-cased text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(int(value)) if float(value).is_integer() else str(value)
    return value.strip().lower() if isinstance(value, str) else None


# -- finding the object --------------------------------------------------------------------------


def _top_level(text: str, opener: str) -> Iterator[Any]:
    """The top-level JSON values in ``text`` that open with ``opener`` ("{" objects, "[" lists), in
    order (values nested in another are not repeated). Bounded for hostile text: a long reply is
    read from its first and last parts, and at most _MAX_OBJECT_ATTEMPTS positions are tried."""
    if len(text) > MAX_REPLY_CHARS:
        half = MAX_REPLY_CHARS // 2
        text = text[:half] + "\n" + text[-half:]
    pos, attempts = text.find(opener), 0
    while pos != -1 and attempts < _MAX_OBJECT_ATTEMPTS:
        attempts += 1
        try:
            value, end = _DECODER.raw_decode(text, pos)
        except (ValueError, RecursionError):
            pos = text.find(opener, pos + 1)
            continue
        yield value
        pos = text.find(opener, end)


def _last_object_with(text: Any, key: str) -> dict | None:
    if not isinstance(text, str):
        return None
    found = None
    for obj in _top_level(text, "{"):
        if key in obj:
            found = obj
    return found


# -- fields --------------------------------------------------------------------------------------


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return {"true": True, "false": False}.get(value.strip().lower())
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def _score(value: Any) -> int | None:
    number = _number(value)
    if number is None or not number.is_integer() or not 1 <= number <= 5:
        return None
    return int(number)


def _winner(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    return {"a": "A", "b": "B", "tie": "tie"}.get(value.strip().lower())


def _confidence(obj: dict) -> Any:
    """A float in [0, 1], None when absent, or _INVALID."""
    value = obj.get("confidence", _MISSING)
    if value is _MISSING or value is None:
        return None
    number = _number(value)
    if number is None or not 0.0 <= number <= 1.0:
        return _INVALID
    return number


def _explanation(obj: dict) -> str | None:
    """The explanation ("" when absent), or None when it is not a string."""
    value = obj.get("explanation", "")
    if value is None:
        return ""
    return value if isinstance(value, str) else None
