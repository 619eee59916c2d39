"""Self-hosted models through vLLM's offline batch runner, `vllm run-batch -i IN -o OUT --model M`.

vLLM has no Batch API to create, list or cancel batches, and `run-batch` no resume of its own (its
output file is opened with "w"), so the "remote batch" is a folder beside the store's batch files,
`<store>/batches/<tag>/` (input.jsonl, model, run.log, output-*.jsonl, exit.json), and the engine's
usual steps keep their meaning:

    upload   the engine's chunk file is linked into the folder
    create   records the chunk's model: nothing runs yet (so `find` never has anything to find, and a
             create in doubt is simply made again)
    poll     runs the first chunk that has not run, as a subprocess, to its end (one at a time, so the
             engine collects each chunk before the next starts), and writes exit.json; every chunk
             with an exit.json has ended
    outcomes reads that run's output file (vLLM writes it in input order, one line per request),
             then removes it and the chunk's input (the store holds the answers)

A batchery killed while a chunk runs leaves the chunk `submitted` with no exit.json: the next run
starts that chunk again (into a fresh output file), and chunks already collected are not run again.
The subprocess dies with batchery (its process group is killed on Ctrl-C or SIGTERM; on Linux a
`kill -9` of batchery kills it too, by the parent-death signal). A run that exits non-zero fails its
chunk's lines with `run_batch_failed` and the tail of its log: transient, so they are sent again.

The command is `vllm run-batch` unless BATCHERY_VLLM_COMMAND (or --base-url) gives another, such as
`vllm run-batch --tensor-parallel-size 2` or `python -m vllm.entrypoints.openai.run_batch`; -i, -o
and --model are appended. `--emulate` runs `batchery emulator run-batch`, which answers with the fake
model.
"""

from __future__ import annotations

import os
import secrets
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import orjson

from ..errors import ConfigError
from ..limits import MB, BatchLimits
from ..retry import ErrorCodes
from .base import CANCELLED, FAILED, BatchProvider, LiveResponse, Outcome, RemoteBatch, decode_stream
from .openai import ChatCompletionLines, decode_response, read_line

DEFAULT_COMMAND = "vllm run-batch"
RUN_FAILED = "run_batch_failed"  # a run that exited non-zero: its chunk's lines are sent again
_TAIL_LINES = 5  # lines of a failed run's log quoted in its error


class VllmBatch(ChatCompletionLines, BatchProvider):
    name = "vllm"
    endpoint = "/v1/chat/completions"
    # A chunk is one `vllm run-batch`, which loads the model before it answers anything: chunks are
    # large so that loading stays small beside the work, and small enough that a crash loses little.
    limits = BatchLimits(max_requests=10_000, max_bytes=1024 * MB, discount=0.0, window="local")
    key_optional = "not-needed"  # nothing is sent anywhere: no key
    polls_run_batches = True  # `status --refresh` must not start a chunk beside the job's own run
    url_variable = "BATCHERY_VLLM_COMMAND"  # its "base URL" is the run-batch command
    price_id = ""  # self-hosted: priced by the GPU hour, not the token
    emulator_service = ""  # not an HTTP service: `emulated_url` names the stand-in command
    error_codes = ErrorCodes(transient=frozenset({RUN_FAILED}))
    batch_states: ClassVar[Mapping[str, str]] = {"queued": "submitted", "completed": "done", "failed": "failed",
                                                  "cancelled": "cancelled"}

    @classmethod
    def emulated_url(cls, emulator: Any) -> str:
        return shlex.join([sys.executable, "-m", "batchery", "emulator", "run-batch"])

    @property
    def command(self) -> list[str]:
        return shlex.split(self.base_url or DEFAULT_COMMAND)

    # -- the chunk's life --------------------------------------------------------------------------

    def upload(self, path: Path) -> str:
        chunk = path.parent / path.stem
        chunk.mkdir(mode=0o700, exist_ok=True)
        (chunk / "input.jsonl").unlink(missing_ok=True)
        try:
            os.link(path, chunk / "input.jsonl")  # the engine removes its copy once the chunk is created
        except OSError:
            (chunk / "input.jsonl").write_bytes(path.read_bytes())
        return str(chunk)

    def create(self, input_file: str, model: str, tag: str) -> RemoteBatch:
        (Path(input_file) / "model").write_text(model)
        return RemoteBatch(input_file, "queued", ended=False, tag=tag)

    def find(self, tags: set[str]) -> dict[str, RemoteBatch]:
        return {}  # a create starts nothing: one in doubt is made again

    def poll(self, remote_ids: list[str]) -> dict[str, RemoteBatch]:
        states: dict[str, RemoteBatch] = {}
        ran = False  # one chunk per poll: the engine stores its results before the next one starts
        for remote_id in remote_ids:
            remote = _ended(Path(remote_id))
            if remote is None and not ran:
                self._run(Path(remote_id))
                remote, ran = _ended(Path(remote_id)), True
            states[remote_id] = remote or RemoteBatch(remote_id, "queued", ended=False)
        return states

    def cancel(self, remote_id: str) -> None:
        chunk = Path(remote_id)
        if _ended(chunk) is None:
            _write_exit(chunk, {"cancelled": True})

    async def send(self, body: dict, model: str) -> LiveResponse:
        raise ConfigError("--provider vllm runs `vllm run-batch` (batch mode only); for live calls to vLLM "
                          "servers use --provider openai-compatible --base-url http://HOST:8000/v1")

    def outcomes(self, remote: RemoteBatch) -> Iterator[Outcome]:
        chunk = Path(remote.remote_id)
        output = chunk / (remote.output_file or "")
        if remote.output_file and output.is_file():
            with output.open("rb") as f:
                yield from decode_stream(iter(lambda: f.read(1 << 20), b""), decode_line)
            # The input copy goes (the store holds every line); the output stays beside run.log and
            # exit.json: the engine commits these answers only after this generator ends, and a
            # batchery that dies before that must find them again rather than re-run the chunk.
            (chunk / "input.jsonl").unlink(missing_ok=True)

    def _run(self, chunk: Path) -> None:
        """Run the chunk through the command to its end and record how it ended (exit.json)."""
        for old in chunk.glob("output-*.jsonl"):  # a killed run's: never read, and never written again
            old.unlink()
        output = chunk / f"output-{secrets.token_hex(4)}.jsonl"
        argv = [*self.command, "-i", str(chunk / "input.jsonl"), "-o", str(output),
                "--model", (chunk / "model").read_text()]
        with (chunk / "run.log").open("wb") as log:
            try:
                process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True, preexec_fn=_die_with_parent())
            except OSError as exc:
                raise ConfigError(f"cannot run {argv[0]!r} ({exc.strerror or exc}): install vLLM, or set "
                                  f"{self.url_variable} (or --base-url) to its run-batch command") from None
            try:
                code = process.wait()
            finally:  # interrupted (Ctrl-C, SIGTERM): the run and everything it started stop with us
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        _write_exit(chunk, {"code": code, "output": output.name, "tail": _tail(chunk / "run.log")})


def _ended(chunk: Path) -> RemoteBatch | None:
    """The chunk as a batch that has ended, from its exit.json; None while it has not run."""
    try:
        ended = orjson.loads((chunk / "exit.json").read_bytes())
    except FileNotFoundError:
        return None
    remote_id = str(chunk)
    if ended.get("cancelled"):
        return RemoteBatch(remote_id, "cancelled", ended=True, leftover=CANCELLED)
    if ended["code"] != 0:
        return RemoteBatch(remote_id, "failed", ended=True, leftover=FAILED, error_code=RUN_FAILED,
                           error=f"run-batch exited with status {ended['code']} (log: {chunk / 'run.log'}): "
                                 f"{ended['tail']}")
    return RemoteBatch(remote_id, "completed", ended=True, output_file=ended["output"])


def _write_exit(chunk: Path, ended: dict) -> None:
    """exit.json, whole or not at all: it is what says the chunk has ended."""
    partial = chunk / "exit.json.tmp"
    partial.write_bytes(orjson.dumps(ended))
    os.replace(partial, chunk / "exit.json")


def _tail(log: Path) -> str:
    """The last lines of a run's log, on one line (an error message's)."""
    with log.open("rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
        lines = [line.strip() for line in f.read().decode(errors="replace").splitlines() if line.strip()]
    return " | ".join(lines[-_TAIL_LINES:]) or "(no output)"


def _die_with_parent() -> Callable[[], None] | None:
    """On Linux: the child gets SIGKILL when batchery dies, however it dies (kill -9 included)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork: the child only calls it
    parent = os.getpid()

    def arm() -> None:
        prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # batchery died before the signal was armed
            os._exit(1)

    return arm


def decode_line(line: bytes) -> Outcome | None:
    """One line of vLLM's output -> Outcome: its completion, or its error (a string, or an
    ErrorResponse `{"error": {"message", "type", "code"}}`, the flat older shape too) under the
    line's HTTP status, so a 5xx is sent again and a 4xx is final."""
    if (read := read_line(line)) is None:
        return None
    custom_id, obj = read
    response = got if isinstance(got := obj.get("response"), dict) else {}
    status = response.get("status_code") if isinstance(response.get("status_code"), int) else None
    error = obj.get("error")
    if error is None and isinstance(response.get("body"), dict):
        return decode_response(custom_id, status or 200, response["body"])
    inner = error.get("error", error) if isinstance(error, dict) else {"message": error}
    message = str(inner.get("message") or "no answer") if isinstance(inner, dict) else str(inner)
    return Outcome.failed(custom_id, f"http_{status or 500}", message, line)
