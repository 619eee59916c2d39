"""The store's backends side by side: ingest, collect and export of N requests on SQLite and on
PostgreSQL, in one run, through the real engine and OpenAI SDK against an emulator in its own process.

    eval "$(scripts/pg-test-server start)"      # or BATCHERY_TEST_PG=postgresql://… of your server
    .venv/bin/python benchmarks/store_backends.py            # 100,000 requests
    scripts/pg-test-server stop

Stages are wall seconds: ingest (read, parse, store every line, plan the batches), collect (download
and store every answer), export (write the results file). Target (issue 14): PostgreSQL within 3x.
Each backend gets a fresh store (a new database on the server).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from overhead import start_emulator, write_requests

from batchery.engine import Engine, PollPolicy, file_fingerprint, prepare_job
from batchery.export import export
from batchery.inputs import read_requests
from batchery.providers import get_provider
from batchery.store import Store


def one_run(location, path: Path, n: int, base_url: str, workdir: Path) -> dict[str, float]:
    times: dict[str, float] = {}
    store = Store(location)
    provider = get_provider("openai", base_url=base_url, api_key="bench")
    t = time.perf_counter()
    job, _ = prepare_job(store, "bench", provider, "gpt-4o-mini", read_requests(path),
                         file_fingerprint(path, "openai", "gpt-4o-mini"))
    engine = Engine(store, provider, job, poll=PollPolicy(initial=0.05, maximum=0.5))
    engine._plan()
    times["ingest"] = time.perf_counter() - t
    for batch in store.batches(job.id, ["planned"]):
        engine._submit(batch)
    in_flight = store.batches(job.id, ["submitted"])
    while True:
        states = provider.poll([b.remote_id for b in in_flight])
        if all(s.ended for s in states.values()):
            break
        time.sleep(0.05)
    t = time.perf_counter()
    for batch in in_flight:
        engine._collect(batch, states[batch.remote_id])
    times["collect"] = time.perf_counter() - t
    t = time.perf_counter()
    lines = export(store, job.id, "openai", workdir / "results.jsonl")
    times["export"] = time.perf_counter() - t
    assert lines == n and store.counts(job.id) == {"succeeded": n}
    store.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=100_000, help="requests")
    parser.add_argument("--pg", default=os.environ.get("BATCHERY_TEST_PG"),
                        help="admin URL of a PostgreSQL server (default: $BATCHERY_TEST_PG)")
    args = parser.parse_args()
    if not args.pg:
        raise SystemExit("give --pg postgresql://… or set BATCHERY_TEST_PG (scripts/pg-test-server start)")
    import psycopg

    proc, url = start_emulator()
    database = f"bench_{secrets.token_hex(4)}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            path = work / "requests.jsonl"
            write_requests(path, args.n)
            with psycopg.connect(args.pg, autocommit=True) as admin:
                admin.execute(f"CREATE DATABASE {database}")
            pg = args.pg.rsplit("/", 1)[0] + "/" + database
            results = {"sqlite": one_run(work / "store", path, args.n, url + "/v1", work),
                       "postgresql": one_run(pg, path, args.n, url + "/v1", work)}
    finally:
        proc.kill()
        with psycopg.connect(args.pg, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    print(f"{args.n:,} requests, wall seconds")
    print(f"{'stage':<10}{'SQLite':>10}{'PostgreSQL':>12}{'ratio':>8}")
    for stage in ("ingest", "collect", "export"):
        a, b = results["sqlite"][stage], results["postgresql"][stage]
        print(f"{stage:<10}{a:>10.2f}{b:>12.2f}{b / a:>7.1f}x")


if __name__ == "__main__":
    main()
