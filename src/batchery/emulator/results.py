"""Turn a finished batch's input file into its output and error JSONL files.

Runs once per batch, when it becomes terminal. The first ``done`` requests were executed (by the
fake model, or rejected with a 400 like the real endpoint would); the rest never ran and are
reported with ``error.code`` = ``batch_expired`` / ``batch_cancelled``. Lines are written in a
deterministic but scrambled order (sorted by a hash of ``custom_id``) because the real service
does not keep input order and clients must join on ``custom_id``. A ``corrupt`` hook (the fault
injector's, see :mod:`.faults`) may then drop, duplicate, mangle or shuffle lines.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from .fake_model import Behaviour, complete_chat, request_seed
from .validation import check_chat_body

UNEXECUTED_MESSAGES = {
    "batch_expired": "This request could not be executed before the completion window expired.",
    "batch_cancelled": "This request was not executed because the batch was cancelled.",
}


@dataclass
class Results:
    output: bytes = b""
    errors: bytes = b""
    processed: int = 0  # requests the model answered or rejected
    usage: dict = field(default_factory=lambda: {"input_tokens": 0, "output_tokens": 0})


def _order(lines: list[tuple[int, bytes]]) -> list[bytes]:
    lines.sort(key=lambda pair: pair[0])
    return [line for _, line in lines]


def build_results(input_path: Path, batch_key: str, done: int, unexecuted_code: str | None, created: int,
                  invalid: bytearray | None = None,
                  corrupt: Callable[[list[list[bytes]]], list[list[bytes]]] | None = None, *,
                  behaviour: Behaviour | None = None, provider: str = "openai") -> Results:
    """Execute the first ``done`` requests of ``input_path`` and render both result files.

    ``invalid`` (from validation) marks the requests known to fail ``check_chat_body``, which saves
    re-checking every good one; without it every request is checked. ``corrupt`` receives the
    lines of ``[output, errors]`` (without newlines) and returns what to write instead.
    ``behaviour`` sets the fake model's knobs (:class:`~.fake_model.Behaviour`); ``provider`` (openai
    or groq) words the answers' service tier.
    """
    ok: list[tuple[int, bytes]] = []
    bad: list[tuple[int, bytes]] = []
    res = Results()
    input_tokens = output_tokens = 0
    index = 0
    with open(input_path, "rb") as f:
        for raw in f:
            if not raw.strip():
                continue
            line = orjson.loads(raw)
            custom_id = line["custom_id"]
            suffix = f"{batch_key}{index:06x}"
            order_key = zlib.crc32(custom_id.encode())
            record: dict
            if index >= done:
                record = {
                    "id": "batch_req_" + suffix,
                    "custom_id": custom_id,
                    "response": None,
                    "error": {"code": unexecuted_code, "message": UNEXECUTED_MESSAGES.get(unexecuted_code or "", "")},
                }
                bad.append((order_key, orjson.dumps(record)))
            else:
                body = line["body"]
                problem = check_chat_body(body) if invalid is None or invalid[index] else None
                if problem is None:
                    seed = request_seed(body)
                    completion = complete_chat(body, created=created, seed=seed, behaviour=behaviour,
                                               provider=provider)
                    usage = completion["usage"]
                    input_tokens += usage["prompt_tokens"]
                    output_tokens += usage["completion_tokens"]
                    record = {
                        "id": "batch_req_" + suffix,
                        "custom_id": custom_id,
                        "response": {"status_code": 200, "request_id": "req_" + suffix, "body": completion},
                        "error": None,
                    }
                    ok.append((order_key, orjson.dumps(record)))
                else:
                    record = {
                        "id": "batch_req_" + suffix,
                        "custom_id": custom_id,
                        "response": {"status_code": 404 if problem["code"] == "model_not_found" else 400, "request_id": "req_" + suffix, "body": {"error": problem}},
                        "error": None,
                    }
                    bad.append((order_key, orjson.dumps(record)))
            index += 1
    files = [_order(ok), _order(bad)]
    if corrupt is not None:
        files = corrupt(files)
    res.output, res.errors = (b"".join(line + b"\n" for line in lines) for lines in files)
    res.processed = min(done, index)
    res.usage = {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }
    return res
