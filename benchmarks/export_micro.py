"""The export stage alone, this tree against another (default /work/main/src), alternately in one
process: store.export_rows consumed, and write_jsonl / write_csv into a file, over one store of
N done items (real-size provider bodies, two batches of 50,000 with per-batch ranges). CPU µs per
row (process_time), medians (and minimums) of the repetitions; the outputs are checked
byte-identical first.

    PYTHONPATH=src python benchmarks/export_micro.py 100000 5 /work/main/src
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from io import BytesIO
from types import ModuleType

import orjson

from batchery import export as new_export
from batchery.store import Store

BATCH = 50_000


def load(src: str) -> ModuleType:
    """The other tree's batchery package under another name, so both run in this process."""
    spec = importlib.util.spec_from_file_location("batchery_other", f"{src}/batchery/__init__.py",
                                                  submodule_search_locations=[f"{src}/batchery"])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["batchery_other"] = module
    spec.loader.exec_module(module)
    return module


def body(i: int) -> bytes:
    return orjson.dumps({
        "id": f"chatcmpl-{i:016x}", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": f"Emulated answer to: Question {i}",
                                             "refusal": None, "annotations": []},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 14, "total_tokens": 23,
                  "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}},
        "service_tier": "default", "system_fingerprint": "fp_batchery_emulator"})


def line(i: int) -> bytes:  # the size of a real provider line
    return (b'{"custom_id":"k%d","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini",'
            b'"messages":[{"role":"user","content":"Question %d: what is %d + 3?"}],"max_completion_tokens":64}}'
            % (i, i, i) + b" " * 60)


def build(store: Store, n: int) -> int:
    with store.transaction():
        job = store.insert_job("j", "openai", "m", "/v1/chat/completions", "f", {})
    assert job is not None
    with store.transaction():
        store.add_requests(job, [(i, str(i), None, f"k{i:08d}", "m", line(i)) for i in range(n)])
    after = 0
    while rows := store.pending_requests(job, "m", BATCH, after):
        with store.transaction():
            b = store.insert_batch(job, f"t{after}", "m", rows[-1][0], len(rows), 1)
            store.update_batch(b, remote_id=f"batch_{after}")
            store.record_outcomes([("succeeded", f"Emulated answer to: Question {i}", body(i), 9, 14, 0, 0,
                                    None, None, None, item) for i, (item, _, _) in enumerate(rows)])
            store.finish_batch_items(b)
            store.update_batch(b, state="collected")
        after = rows[-1][0]
    return job


def main(n: int, reps: int, other_src: str) -> None:
    old = load(other_src)
    old_store_mod = importlib.import_module("batchery_other.store")
    old_export = importlib.import_module("batchery_other.export")
    with tempfile.TemporaryDirectory() as tmp:
        with Store(tmp) as store:
            job = build(store, n)
        new_s, old_s = Store(tmp), old_store_mod.Store(tmp)
        out = f"{tmp}/out"

        def to_file(write: Callable, store: Store) -> int:
            with open(out, "wb") as f:
                return write(store, job, "openai", f)

        cases = {
            "export_rows": (lambda s: sum(1 for _ in s.export_rows(job)), None),
            "write_jsonl": (lambda s, m: to_file(m.write_jsonl, s), "jsonl"),
            "write_csv": (lambda s, m: to_file(m.write_csv, s), "csv"),
        }
        for name in ("jsonl", "csv"):  # identical bytes first
            a, b = BytesIO(), BytesIO()
            getattr(new_export, f"write_{name}")(new_s, job, "openai", a)
            getattr(old_export, f"write_{name}")(old_s, job, "openai", b)
            assert a.getvalue() == b.getvalue(), f"{name} output differs"
        assert list(new_s.export_rows(job)) == list(old_s.export_rows(job)), "export_rows differs"
        for name, (fn, kind) in cases.items():
            times: dict[str, list[float]] = {"other": [], "this": []}
            for _ in range(reps):
                for tree, s, m in (("other", old_s, old_export), ("this", new_s, new_export)):
                    t = time.process_time()
                    fn(s) if kind is None else fn(s, m)  # type: ignore[call-arg]
                    times[tree].append(time.process_time() - t)
            (o, t_), (o_min, t_min) = ((f(times["other"]) / n * 1e6, f(times["this"]) / n * 1e6)
                                       for f in (statistics.median, min))
            print(f"{name:12} other {o:6.2f} µs/row (min {o_min:5.2f})  this {t_:6.2f} (min {t_min:5.2f})"
                  f"  saved {o - t_:5.2f} (min {o_min - t_min:5.2f})")
        new_s.close()
        old_s.close()
    assert old is not None


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000, int(sys.argv[2]) if len(sys.argv) > 2 else 5,
         sys.argv[3] if len(sys.argv) > 3 else "/work/main/src")
