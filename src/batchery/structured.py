"""Structured output, checked once for every runner: an answer to a request with `response_format`
must parse as JSON and validate against the schema (jsonschema, Draft 2020-12 unless the schema's
`$schema` names another draft).

An answer that does not fit is stored first, as an `invalid` outcome carrying the answer and the
validation error. While the line has sends left (`--max-attempts`), it is then asked again: the
re-ask is the request continued by the bad answer (an assistant turn) and a user turn naming the
error. The re-ask is a request of its own, with its own content key, so a key never names an
answer to a different question: the line's current request becomes the re-ask, and the attempt
that failed stays in the store under its own key (a history row, see `Store.reask`), its tokens
still counted in the job's cost. A line that never fits ends `invalid` with its last answer.

The batch engine calls `checked` on each line as a batch's results stream in and `reask_batch` in
the transaction that closes the batch; the live runner `checked` + `reask` as each answer arrives, and both call `reask_job` when a run starts (a live run
killed between storing an invalid answer and re-asking it picks the re-ask up there).

jsonschema is imported on first use: runs without a schema never pay for it.
"""

from __future__ import annotations

import functools
import warnings
from typing import TYPE_CHECKING, Any

import orjson

from .requests import canonical_bytes, request_key
from .states import JobState, OutcomeStatus

if TYPE_CHECKING:
    from .providers.base import BatchProvider, Outcome
    from .store import Job, Store

INVALID = OutcomeStatus.INVALID  # the outcome of a line whose answer never fit its schema
NOT_JSON = "invalid_json"  # error code: the answer does not parse as JSON
SCHEMA_MISMATCH = "schema_mismatch"  # error code: it parses but does not validate against the schema
# The re-ask's user turn starts with this; the emulator's fake model counts these turns to tell a
# re-ask from a first ask (its `invalid_structured` knob).
CORRECTION = "Your previous answer does not fit the required JSON schema"
_MAX_ERROR_CHARS = 400  # jsonschema's messages quote the instance, which may be long


def schema_text(schema: dict) -> str:
    """The schema as stored and cached: canonical JSON (sorted keys)."""
    return orjson.dumps(schema, option=orjson.OPT_SORT_KEYS).decode()


@functools.lru_cache(maxsize=256)
def _validator(text: str) -> Any:
    """A compiled validator per distinct schema: most jobs repeat one schema on every line."""
    from jsonschema import Draft202012Validator
    from jsonschema.validators import validator_for

    schema = orjson.loads(text)
    with warnings.catch_warnings():  # an unknown $schema dialect: checked as Draft 2020-12, quietly
        warnings.simplefilter("ignore")
        return validator_for(schema, default=Draft202012Validator)(schema)


@functools.lru_cache(maxsize=256)
def schema_problem(text: str) -> str | None:
    """Why `text` (a stored schema) is not a JSON Schema that answers could be checked against."""
    from jsonschema.exceptions import SchemaError

    try:
        type(_validator(text)).check_schema(orjson.loads(text))
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        return f"not a valid JSON Schema{' at ' + where if where else ''}: {_clip(exc.message)}"
    except Exception as exc:
        return f"not a JSON Schema batchery can check answers against ({type(exc).__name__}: {_clip(str(exc))})"
    return None


def verdict(schema: str, text: str | None) -> tuple[str, str] | None:
    """None when `text` is JSON valid against `schema`; else (error code, one-line message)."""
    if text is None or not text.strip():
        return NOT_JSON, "the answer is empty, not JSON"
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return NOT_JSON, f"the answer is not valid JSON ({exc})"
    from jsonschema.exceptions import best_match

    validator = _validator(schema)
    try:
        if validator.is_valid(value):  # the common case, several times faster than collecting errors
            return None
        error = best_match(validator.iter_errors(value))
    except Exception:
        return None
    if error is None:  # pragma: no cover - is_valid said otherwise
        return None
    return SCHEMA_MISMATCH, f"at {error.json_path}: {_clip(error.message)}"


def checked(outcome: Outcome, schema: str | None) -> Outcome:
    """The outcome to store for an answer: a succeeded answer that does not fit becomes `invalid`,
    keeping its text, body and usage, with the error."""
    if schema is None or outcome.status != "succeeded":
        return outcome
    problem = verdict(schema, outcome.text)
    if problem is None:
        return outcome
    return outcome._replace(status=INVALID, error_code=problem[0], error_message=problem[1])


def reask_request(request: dict, bad_text: str | None, error: str) -> dict:
    """`request` continued by the answer that did not fit and a user turn naming the error."""
    messages = [*request["messages"],
                {"role": "assistant", "content": bad_text if bad_text and bad_text.strip() else "(empty answer)"},
                {"role": "user", "content": f"{CORRECTION}: {error}. Answer again with only the JSON the schema "
                                            "asks for."}]
    return {**request, "messages": messages}


# -- the runners' steps: each runs inside the caller's transaction ---------------------------------


def batch_schemas(store: Store, batch_id: int) -> dict[int, str]:
    """item -> schema for a batch's structured lines, each distinct schema held once in memory."""
    distinct: dict[str, str] = {}
    return {item: distinct.setdefault(schema, schema) for item, schema in store.structured_schemas(batch_id)}


def reask(store: Store, provider: BatchProvider, job_id: int, items: list[tuple]) -> list[tuple[int, str, bytes]]:
    """Ask these invalid lines again, given as store.reaskable rows (item, request, bad answer,
    error): each line's request becomes its re-ask, pending. Returns (item, new key, new line).
    A re-ask too large for the provider's batch file stays invalid: it would be refused."""
    out = []
    for item, request, text, error in items:
        again = reask_request(orjson.loads(request), text, error)
        body = canonical_bytes(again)
        key = request_key(provider.name, body)
        line = provider.encode(key, again)
        if len(line) >= provider.limits.max_bytes:
            continue
        store.reask(job_id, item, key, line, body)
        out.append((item, key, line))
    if out:
        store.log(job_id, "reasked", requests=len(out))
    return out


def reask_batch(store: Store, provider: BatchProvider, job_id: int, batch_id: int, max_attempts: int) -> int:
    """Re-ask the batch's invalid lines that have sends left. Returns how many."""
    return len(reask(store, provider, job_id, store.reaskable(job_id, max_attempts, batch_id=batch_id)))


def reask_job(store: Store, provider: BatchProvider, job: Job, max_attempts: int | None) -> int:
    """At the start of a run: invalid lines with sends left that were not re-asked yet (a live run
    stopped in between, or a finished job run again with a higher --max-attempts) are re-asked now;
    a finished job with such lines runs again. max_attempts=None (`batchery retry`): every invalid
    line, whatever it has used."""
    if job.state not in ("running", "done") or not store.has_structured(job.id):
        return 0
    with store.transaction():
        n = len(reask(store, provider, job.id, store.reaskable(job.id, 1 << 62 if max_attempts is None
                                                                else max_attempts)))
        if n and job.state == "done":
            store.set_job_state(job.id, "running")
            job.state = JobState.RUNNING
    return n


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_ERROR_CHARS else text[:_MAX_ERROR_CHARS - 1] + "…"
