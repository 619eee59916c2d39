"""Generate a deterministic JSON value that is valid against a (structured-outputs style) JSON Schema.

The fake model uses this to answer ``response_format: json_schema`` requests, so clients that parse
structured output get realistic, schema-valid payloads. Values come from a seeded PRNG: the same seed
always yields the same value, different seeds (different requests) yield different values.

Covered: object (every property), string (enum, minLength/maxLength, a few formats), number/integer
(minimum/maximum, exclusive bounds, multipleOf), boolean, null, array (items, prefixItems,
minItems/maxItems), enum/const, anyOf/oneOf (first branch), allOf (merged), type lists such as
``["string", "null"]``, and ``$ref`` into ``$defs``/``definitions`` (recursion is cut off by depth).
Not covered: ``pattern``, ``uniqueItems``, ``if/then/else``, ``not``.
"""

from __future__ import annotations

import math
from typing import Any

_MASK = (1 << 64) - 1
_MAX_DEPTH = 8
_WORDS = (
    "amber", "basil", "cobalt", "delta", "ember", "fjord", "garnet", "harbor", "indigo", "juniper",
    "kelp", "lumen", "maple", "nimbus", "onyx", "pepper", "quartz", "raven", "sable", "tundra",
)


class Rng:
    """splitmix64: tiny, fast and stable across Python versions (unlike ``random`` seeding details)."""

    __slots__ = ("state",)

    def __init__(self, seed: int) -> None:
        self.state = seed & _MASK

    def next(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & _MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        return z ^ (z >> 31)

    def below(self, n: int) -> int:
        return self.next() % n

    def unit(self) -> float:
        """A float strictly inside (0, 1), so exclusive bounds are never hit."""
        return ((self.next() >> 11) + 0.5) / (1 << 53)


def generate(schema: Any, seed: int) -> Any:
    """Return a value valid against ``schema`` (the schema is also the root for ``$ref``)."""
    return _gen(schema, schema, Rng(seed), 0)


def _resolve(root: Any, ref: str) -> Any:
    if not ref.startswith("#"):
        return {}  # remote refs are out of scope; an empty schema accepts anything
    node = root
    for part in ref[1:].split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node.get(part, {})
    return node


def _gen(node: Any, root: Any, rng: Rng, depth: int) -> Any:
    if not isinstance(node, dict):
        return "value"  # `true` / missing schema: anything goes
    ref = node.get("$ref")
    if ref is not None:
        target = _resolve(root, ref)
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        node = {**target, **siblings} if siblings and isinstance(target, dict) else target
        if not isinstance(node, dict):
            return "value"
    if "const" in node:
        return node["const"]
    enum = node.get("enum")
    if enum:
        return enum[rng.below(len(enum))]
    for key in ("anyOf", "oneOf"):
        options = node.get(key)
        if options:
            if depth >= _MAX_DEPTH:  # prefer a null branch to end recursion
                for opt in options:
                    if isinstance(opt, dict) and opt.get("type") == "null":
                        return None
            return _gen(options[0], root, rng, depth + 1)
    all_of = node.get("allOf")
    if all_of:
        merged: dict[str, Any] = {k: v for k, v in node.items() if k != "allOf"}
        for part in all_of:
            part = _resolve(root, part["$ref"]) if isinstance(part, dict) and "$ref" in part else part
            if isinstance(part, dict):
                props = {**merged.get("properties", {}), **part.get("properties", {})}
                merged = {**merged, **part, "properties": props}
        return _gen(merged, root, rng, depth + 1)

    kind = node.get("type")
    if isinstance(kind, list):
        if "null" in kind and (depth >= _MAX_DEPTH or len(kind) == 1):
            return None
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in node else "array" if "items" in node else "string"
    maker = _MAKERS.get(kind)
    return maker(node, root, rng, depth) if maker else None


def _object(node: dict, root: Any, rng: Rng, depth: int) -> dict:
    props = node.get("properties") or {}
    return {name: _gen(sub, root, rng, depth + 1) for name, sub in props.items()}


def _array(node: dict, root: Any, rng: Rng, depth: int) -> list:
    lo = int(node.get("minItems", 0))
    hi = int(node.get("maxItems", lo + 3))
    count = lo if depth >= _MAX_DEPTH else min(max(1 + rng.below(3), lo), hi)
    prefix = node.get("prefixItems") or (node["items"] if isinstance(node.get("items"), list) else [])
    items = got if isinstance(got := node.get("items"), dict) else {}
    out = []
    for i in range(count):
        sub = prefix[i] if i < len(prefix) else items
        out.append(_gen(sub, root, rng, depth + 1))
    return out


def _string(node: dict, root: Any, rng: Rng, depth: int) -> str:
    fmt = node.get("format")
    n = rng.next()
    if fmt == "date-time":
        text = f"2026-{1 + n % 12:02d}-{1 + (n >> 8) % 28:02d}T{(n >> 16) % 24:02d}:{(n >> 24) % 60:02d}:00Z"
    elif fmt == "date":
        text = f"2026-{1 + n % 12:02d}-{1 + (n >> 8) % 28:02d}"
    elif fmt == "time":
        text = f"{n % 24:02d}:{(n >> 8) % 60:02d}:00"
    elif fmt == "email":
        text = f"{_WORDS[n % 20]}{(n >> 8) % 1000}@example.com"
    elif fmt in ("uri", "url"):
        text = f"https://example.com/{_WORDS[n % 20]}/{(n >> 8) % 100000}"
    elif fmt == "uuid":
        h = f"{n:016x}{rng.next():016x}"
        text = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"
    else:
        text = f"{_WORDS[n % 20]} {_WORDS[(n >> 8) % 20]} {(n >> 16) % 1000}"
    lo = int(node.get("minLength", 0))
    if len(text) < lo:
        text += "x" * (lo - len(text))
    hi = node.get("maxLength")
    return text[: int(hi)] if hi is not None else text


def _bounds(node: dict) -> tuple[float | None, bool, float | None, bool]:
    """(low, low_exclusive, high, high_exclusive) across draft-4 and draft-2020 spellings."""
    lo, lo_ex, hi, hi_ex = node.get("minimum"), False, node.get("maximum"), False
    ex_lo, ex_hi = node.get("exclusiveMinimum"), node.get("exclusiveMaximum")
    if ex_lo is True:
        lo_ex = True
    elif isinstance(ex_lo, (int, float)) and (lo is None or ex_lo >= lo):
        lo, lo_ex = ex_lo, True
    if ex_hi is True:
        hi_ex = True
    elif isinstance(ex_hi, (int, float)) and (hi is None or ex_hi <= hi):
        hi, hi_ex = ex_hi, True
    return lo, lo_ex, hi, hi_ex


def _number(node: dict, root: Any, rng: Rng, depth: int) -> float:
    lo, _, hi, _ = _bounds(node)
    lo = float(lo) if lo is not None else (float(hi) - 100.0 if hi is not None else 0.0)
    hi = float(hi) if hi is not None else lo + 100.0
    step = node.get("multipleOf")
    if step:
        first, last = math.ceil(lo / step), math.floor(hi / step)
        if last >= first:
            return (first + rng.below(last - first + 1)) * step
    value = lo + (hi - lo) * rng.unit()  # unit() is in (0,1): safe for exclusive bounds
    rounded = round(value, 2)
    return rounded if lo < rounded < hi else value


def _integer(node: dict, root: Any, rng: Rng, depth: int) -> int:
    lo, lo_ex, hi, hi_ex = _bounds(node)
    low = None if lo is None else (math.floor(lo) + 1 if lo_ex else math.ceil(lo))
    high = None if hi is None else (math.ceil(hi) - 1 if hi_ex else math.floor(hi))
    low = low if low is not None else (high - 100 if high is not None else 0)
    high = high if high is not None else low + 100
    step = int(node.get("multipleOf") or 1)
    first, last = -(-low // step), high // step
    if last < first:
        return low
    return (first + rng.below(last - first + 1)) * step


_MAKERS = {
    "object": _object,
    "array": _array,
    "string": _string,
    "number": _number,
    "integer": _integer,
    "boolean": lambda node, root, rng, depth: bool(rng.next() & 1),
    "null": lambda node, root, rng, depth: None,
}
