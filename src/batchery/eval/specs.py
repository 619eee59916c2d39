"""Behaviour specifications and the inputs to test them with."""

from __future__ import annotations

from dataclasses import dataclass, field


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
