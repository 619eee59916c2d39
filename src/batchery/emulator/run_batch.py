"""A stand-in for vLLM's offline batch runner, `batchery emulator run-batch -i IN -o OUT --model M`:
the file contract of `vllm run-batch`, answered by the fake model, so `--provider vllm` runs (and is
tested) without vLLM or a GPU.

IN holds OpenAI batch lines for /v1/chat/completions; OUT gets one line per input line, in input
order, shaped as vLLM writes them (`{"id", "custom_id", "response": {"status_code", "request_id",
"body"}, "error"}`), and is started over by every run, as vLLM's is. vLLM's engine arguments
(--tensor-parallel-size 2, ...) are accepted and ignored.

Test knobs act on the lines containing WORD that no earlier run named in --journal has seen (without
a journal: every time). --drop WORD leaves them out of OUT (exit 0); --fail WORD stops at the first
one with an error on stderr and exit status 1; --hold WORD stops there and waits until killed. The
journal gets one JSON line per run (its pid and the custom_ids of IN) before any answer is written.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path

import orjson

from .fake_model import complete_chat, model_exists


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="batchery emulator run-batch")
    parser.add_argument("-i", "--input-file", required=True)
    parser.add_argument("-o", "--output-file", required=True)
    parser.add_argument("--model", required=True)
    for knob in ("--drop", "--fail", "--hold"):
        parser.add_argument(knob, metavar="WORD")
    parser.add_argument("--journal", type=Path)
    args, _engine_args = parser.parse_known_args(argv)
    lines = [line for line in Path(args.input_file).read_bytes().splitlines() if line.strip()]
    requests = [orjson.loads(line) for line in lines]
    seen: set[str] = set()
    if args.journal:
        if args.journal.exists():
            for run in args.journal.read_bytes().splitlines():
                seen.update(orjson.loads(run)["ids"])
        with args.journal.open("ab") as journal:
            journal.write(orjson.dumps({"pid": os.getpid(), "ids": [r["custom_id"] for r in requests]}) + b"\n")

    def hit(word: str | None, line: bytes, request: dict) -> bool:
        return word is not None and word.encode() in line and request["custom_id"] not in seen

    with open(args.output_file, "wb") as out:
        for line, request in zip(lines, requests, strict=True):
            if hit(args.hold, line, request):
                out.flush()
                threading.Event().wait()  # until killed (by batchery, or with it)
            if hit(args.fail, line, request):
                print("RuntimeError: CUDA error: out of memory (emulated by --fail)", file=sys.stderr)
                return 1
            if not hit(args.drop, line, request):
                out.write(orjson.dumps(_answer(request, args.model)) + b"\n")
    return 0


def _answer(request: dict, served: str) -> dict:
    """vLLM's output line for one request: the completion, or the error it gives for a model it does
    not serve (404, with no body)."""
    body, line = request["body"], {"id": f"vllm-{request['custom_id']}", "custom_id": request["custom_id"]}
    model = body.get("model", served)
    if model != served or not model_exists(model):
        error = {"message": f"The model `{model}` does not exist.", "type": "NotFoundError", "param": None,
                 "code": 404}
        return {**line, "response": {"status_code": 404, "request_id": "vllm-batch-0", "body": None},
                "error": {"error": error}}
    return {**line, "response": {"status_code": 200, "request_id": "vllm-batch-0", "body": complete_chat(body)},
            "error": None}
