"""Behaviour specifications and the inputs to test them with."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..errors import InputError
from ..inputs import open_file, read_jsonl


@dataclass(frozen=True)
class Example:
    """A worked example attached to a statement (what a good and a bad answer look like)."""

    description: str
    user_query: str
    good_response: str
    bad_response: str = ""


@dataclass(frozen=True)
class Statement:
    """One rule of a behaviour spec (fields as in the OpenAI Model Spec JSONL)."""

    id: str
    text: str
    type: str = "GUIDELINE"  # REQUIREMENT, PROHIBITION or GUIDELINE
    authority_level: str = "GUIDELINE"  # PLATFORM, DEVELOPER, USER or GUIDELINE
    section: str = ""
    subsection: str = ""
    related_statements: tuple[str, ...] = ()
    examples: tuple[Example, ...] = field(default=())


_TYPES = ("REQUIREMENT", "PROHIBITION", "GUIDELINE")
_AUTHORITIES = ("PLATFORM", "DEVELOPER", "USER", "GUIDELINE")


def _text(obj: dict, name: str, where: str, required: bool = True) -> str:
    value = obj.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise InputError(f"{where}: field '{name}' must be a non-empty string")
    return value


def _example(raw: Any, where: str) -> Example:
    if not isinstance(raw, dict):
        raise InputError(f"{where}: each of metadata.examples must be an object")
    return Example(*(_text(raw, f, where, required=f in ("user_query", "good_response"))
                     for f in ("description", "user_query", "good_response", "bad_response")))


def load_spec(path: Path) -> list[Statement]:
    """A behaviour spec: one JSON statement per line (id, text, type, authority_level, section,
    subsection, related_statements, metadata.examples). Errors name the file, line and field."""
    statements: list[Statement] = []
    seen: dict[str, str] = {}
    for where, obj in jsonl_objects(path):
        sid = _text(obj, "id", where)
        if sid in seen:
            raise InputError(f"{where}: statement id '{sid}' repeats {seen[sid]}")
        seen[sid] = where
        kind = obj.get("type", "GUIDELINE")
        if kind not in _TYPES:
            raise InputError(f"{where}: field 'type' must be one of {list(_TYPES)}, got {kind!r}")
        authority = obj.get("authority_level", "GUIDELINE")
        if authority not in _AUTHORITIES:
            raise InputError(f"{where}: field 'authority_level' must be one of {list(_AUTHORITIES)}, got {authority!r}")
        related = obj.get("related_statements") or []
        if not isinstance(related, list) or not all(isinstance(r, str) for r in related):
            raise InputError(f"{where}: field 'related_statements' must be a list of statement ids")
        metadata = obj.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise InputError(f"{where}: field 'metadata' must be an object")
        examples = metadata.get("examples") or []
        if not isinstance(examples, list):
            raise InputError(f"{where}: field 'metadata.examples' must be a list")
        statements.append(Statement(sid, _text(obj, "text", where), kind, authority,
                                    _text(obj, "section", where, False), _text(obj, "subsection", where, False),
                                    tuple(related), tuple(_example(e, where) for e in examples)))
    if not statements:
        raise InputError(f"{path}: the spec has no statements")
    return statements


def load_inputs(path: Path, statements: list[Statement]) -> dict[str, list[str]]:
    """Inputs per statement, from a folder of ``{statement_id}.json`` files (``{"inputs": [...]}``)
    or a JSONL file of ``{"statement_id", "input"}`` lines. Every input must name a statement of
    the spec; statements without inputs are reported by the caller, not guessed."""
    known = {s.id for s in statements}
    inputs: dict[str, list[str]] = {}
    if path.is_dir():
        files = sorted(path.glob("*.json"))
        if not files:
            raise InputError(f"{path}: no {{statement_id}}.json files in this folder")
        for file in files:
            try:
                with open_file(file) as f:
                    obj = orjson.loads(f.read())
            except orjson.JSONDecodeError as exc:
                raise InputError(f"{file}: not valid JSON ({exc})") from None
            values = obj.get("inputs") if isinstance(obj, dict) else None
            if not isinstance(values, list) or not all(isinstance(v, str) and v.strip() for v in values):
                raise InputError(f"{file}: expected {{\"inputs\": [\"...\", ...]}} with non-empty strings")
            if file.stem not in known:
                raise InputError(f"{file}: no statement '{file.stem}' in the spec")
            inputs[file.stem] = list(values)
        return inputs
    for where, obj in jsonl_objects(path):
        sid, text = _text(obj, "statement_id", where), _text(obj, "input", where)
        if sid not in known:
            raise InputError(f"{where}: no statement '{sid}' in the spec")
        inputs.setdefault(sid, []).append(text)
    return inputs


def jsonl_objects(path: Path) -> Iterator[tuple[str, dict]]:
    """("file:line", object) for each line of a JSONL file of objects."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    for where, obj in read_jsonl(path):
        if not isinstance(obj, dict):
            raise InputError(f"{where}: expected a JSON object")
        yield where, obj
