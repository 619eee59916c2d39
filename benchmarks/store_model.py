"""The store's own work on the batch path, step by step, without engine, SDK or emulator: N items
ingested, planned in batches of 50,000, their lines read, members looked up, outcomes recorded in
chunks of 10,000, batches finished and collected, then export_rows and counts. CPU µs per request by
step (user + system time). Rows are the size of real ones (a 300-byte provider line, a 600-byte
response), since page writes are most of the cost, and keys are hashes, as real ones are.

    PYTHONPATH=src python benchmarks/store_model.py 100000
    for i in 1 2 3; do for t in src /work/main/src; do PYTHONPATH=$t python benchmarks/store_model.py; done; done
"""

from __future__ import annotations

import hashlib
import resource
import sys
import tempfile

from batchery.store import Store

BATCH = 50_000
CHUNK = 10_000


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def line(i: int) -> bytes:
    body = (b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Question %d: what is %d + 3?"}],'
            b'"max_completion_tokens":64}' % (i, i))
    return b'{"custom_id":"k%d","method":"POST","url":"/v1/chat/completions","body":%s}' % (i, body) + b" " * 60


def main(n: int) -> dict[str, float]:
    t: dict[str, float] = {}

    def step(name: str, start: float) -> float:
        now = cpu()
        t[name] = t.get(name, 0.0) + now - start
        return now

    with tempfile.TemporaryDirectory() as tmp, Store(tmp) as store:
        with store.transaction():
            job = store.insert_job("j", "openai", "m", "/v1/chat/completions", "f", {})
        assert job is not None
        # request keys are hashes, so each lands at a random place in the key index, as real ones do
        keys = ["k" + hashlib.blake2b(b"%d" % i, digest_size=16).hexdigest() for i in range(n)]
        c = cpu()
        for start in range(0, n, CHUNK):
            with store.transaction():
                store.add_requests(job, [(i, str(i), None, keys[i], "m", line(i))
                                         for i in range(start, min(n, start + CHUNK))])
        c = step("ingest", c)
        batches, after = [], 0
        while rows := store.pending_requests(job, "m", BATCH, after):
            with store.transaction():
                batches.append(store.insert_batch(job, f"t{len(batches)}", "m", rows[-1][0], len(rows), 1))
            after = rows[-1][0]
        c = step("plan", c)
        for b in batches:
            sum(len(x) for x in store.batch_lines(b))
        c = step("lines", c)
        for b in batches:
            members = store.batch_members(b)
            c = step("members", c)
            outcomes = sorted((("succeeded", "An answer of a few words " * 3, b"x" * 600, 12, 30, 0, 0, None, None, None,
                                item) for item in members.values()), key=lambda r: r[-1])
            c = cpu()
            for k in range(0, len(outcomes), CHUNK):
                with store.transaction():
                    store.record_outcomes(outcomes[k:k + CHUNK])
            c = step("record", c)
            with store.transaction():
                store.finish_batch_items(b)
                store.update_batch(b, state="collected")
            c = step("finish", c)
        rows_out = sum(1 for _ in store.export_rows(job))
        c = step("export_rows", c)
        counts = store.counts(job)
        step("counts", c)
        assert rows_out == n and counts == {"succeeded": n}, counts
    return {k: v / n * 1e6 for k, v in t.items()}


if __name__ == "__main__":
    figures = main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
    print(" ".join(f"{k} {v:.2f}" for k, v in figures.items()), f"sum {sum(figures.values()):.2f}")
