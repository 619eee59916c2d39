"""What each index on items costs an ingested line: N lines stored through Store.add_requests (in
transactions of 25,000, as ingest stores them), with every index, then with one index dropped at a
time, and with 16-byte binary keys instead of the text keys. CPU µs per line (user + system time),
medians of the repeats, variants alternating; keys are hashes, as real ones are.

    PYTHONPATH=src python benchmarks/item_indexes.py 100000
"""

from __future__ import annotations

import gc
import hashlib
import resource
import statistics
import sys
import tempfile

from batchery.store import Store

CHUNK = 25_000
REPEATS = 3
VARIANTS = {"every index": None, "without items_key": "items_key", "without items_job": "items_job",
            "without items_new": "items_new", "16-byte binary keys": None}


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def insert(n: int, keys: list, dropped: str | None) -> float:
    line = (b'{"custom_id":"k","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini",'
            b'"messages":[{"role":"user","content":"Question 1: what is 1 + 7?"}],"max_completion_tokens":64}}')
    with tempfile.TemporaryDirectory() as tmp, Store(tmp) as store:
        if dropped:
            store.db.execute(f"DROP INDEX {dropped}")
        with store.transaction():
            job = store.insert_job("j", "openai", "m", "/v1/chat/completions", "f", {})
        start = cpu()
        for first in range(0, n, CHUNK):
            with store.transaction():
                store.add_requests(job, [(i, str(i), None, keys[i], "gpt-4o-mini", line)
                                         for i in range(first, min(n, first + CHUNK))])
        return (cpu() - start) / n * 1e6


def main(n: int) -> None:
    gc.disable()  # as ingest runs
    digests = [hashlib.blake2b(b"%d" % i, digest_size=16) for i in range(n)]
    text_keys = ["k" + d.hexdigest() for d in digests]
    binary_keys = [bytearray(d.digest()) for d in digests]
    figures: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(REPEATS):
        for name, dropped in VARIANTS.items():
            figures[name].append(insert(n, binary_keys if name.startswith("16-byte") else text_keys, dropped))
    for name, runs in figures.items():
        print(f"{name:<22} {statistics.median(runs):6.2f} µs a line  ({' / '.join(f'{r:.2f}' for r in runs)})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
