"""The job store on PostgreSQL: a team's shared store. Two machines (processes with their own
working folder and environment) share jobs and cached answers through it; the job lock dies with its
holder; a busy store says so within the bound; the URL's password never reaches any output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from conftest import cli
from test_cli import write_jsonl

from batchery.errors import JobError, StoreBusyError, StoreError
from batchery.store import Store

SECRET = "pw-Zq7SECRETx"  # trust authentication ignores it; it must still never be shown


def with_password(url: str) -> str:
    return url.replace("://batchery@", f"://batchery:{SECRET}@")


def machine(tmp_path, name: str) -> tuple:
    """A working folder and an environment of its own (its own per-user data folder, no store set)."""
    home = tmp_path / name
    (home / "xdg").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in ("BATCHERY_HOME",) and not k.endswith("_API_KEY")}
    return home, {**env, "XDG_DATA_HOME": str(home / "xdg"), "OPENAI_API_KEY": "test-key"}


def run(args: list[str], home, env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "batchery", *args], cwd=home, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def test_two_machines_share_jobs_and_answers_and_two_collectors_never_fetch_a_line_twice(
        tmp_path, pg_url, make_emulator):
    url = with_password(pg_url)
    emulator = make_emulator(processing_seconds=60)
    laptop, laptop_env = machine(tmp_path, "laptop")
    server, server_env = machine(tmp_path, "server")
    prompts = [{"id": f"r{i}", "prompt": f"question {i}"} for i in range(30)]
    write_jsonl(laptop / "grid.jsonl", prompts)

    # The laptop submits through BATCHERY_HOME and leaves; 3 batches are out.
    submitted = run(["run", "grid.jsonl", "--model", "gpt-4o-mini", "--base-url", emulator.base_url("openai"),
                     "--batch-size", "10", "--no-wait"], laptop, {**laptop_env, "BATCHERY_HOME": url})
    assert submitted.returncode == 0, submitted.stderr
    emulator.clock.advance(61)  # the provider finished overnight

    # The server, elsewhere, collects with two collectors at once.
    collectors = [subprocess.Popen([sys.executable, "-m", "batchery", "collect", "--all", "--store", url],
                                   cwd=server, env=server_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True) for _ in range(2)]
    outputs = [(c.wait(timeout=120), *c.communicate()) for c in collectors]
    for code, _, err in outputs:
        assert code == 0 or "being run by another batchery process" in err, err
    assert any(code == 0 and "done (30 succeeded)" in err for code, _, err in outputs), outputs
    stats = emulator.stats()
    assert stats["files_downloaded"] == 3 and stats["requests_processed"] == 30  # each batch's answers fetched once
    with Store(url) as st:
        job = st.get_job("grid")
        assert st.db.execute("SELECT COUNT(*), COUNT(DISTINCT item) FROM outcomes").fetchone() == (30, 30)
        assert [kind for _, kind, _ in st.events(job.id, 100)].count("batch_collected") == 3
    rows = [orjson.loads(line) for line in (laptop / "grid.results.jsonl").read_bytes().splitlines()]
    assert [r["id"] for r in rows] == [p["id"] for p in prompts] and {r["status"] for r in rows} == {"succeeded"}

    # The server's own job at the same endpoint reuses the laptop's 30 answers and sends only 5.
    write_jsonl(server / "more.jsonl", prompts + [{"id": f"n{i}", "prompt": f"new {i}"} for i in range(5)])
    more = run(["run", "more.jsonl", "--model", "gpt-4o-mini", "--base-url", emulator.base_url("openai"),
                "--no-wait", "--store", url], server, server_env)
    assert more.returncode == 0, more.stderr
    assert "30" in more.stderr and "grid" in more.stderr  # the reuse is announced
    with Store(url) as st:
        assert [(b.n_requests, b.state) for b in st.batches(st.get_job("more").id)] == [(5, "submitted")]

    shown = [p.stdout + p.stderr for p in (submitted, more)] + [out + err for _, out, err in outputs]
    assert all(SECRET not in text for text in shown) and "batchery:***@" in submitted.stderr
    assert SECRET not in (laptop / "grid.results.jsonl").read_text()


def test_a_password_the_server_echoes_in_its_error_is_never_shown(pg_url):
    # The password is also the (missing) database's name: the server's refusal quotes it.
    url = with_password(pg_url.rsplit("/", 1)[0] + "/" + SECRET)
    with pytest.raises(StoreError) as caught:
        Store(url)
    assert SECRET not in str(caught.value) and "batchery:***@" in str(caught.value)
    assert "does not exist" in str(caught.value)
    for args in (["status"], ["status", "--json"], ["results", "x"], ["collect", "--all"], ["info"]):
        code, out, err = cli(*args, "--store", url)
        assert SECRET not in out + err and "Traceback" not in err, err
        assert args == ["info"] or (code == 2 and err.startswith("error: ")), err
    code, out, _ = cli("info", "--store", url)
    assert code == 0 and "batchery:***@" in out


def test_the_job_lock_is_held_across_machines_and_released_when_its_holder_is_killed(tmp_path, pg_url):
    with Store(pg_url) as st:
        job_id = st.insert_job("j", "openai", "m", "/v1/chat/completions", "fp", {})
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys; from batchery.store import Store\n"
        f"st = Store({pg_url!r}); job = st.get_job('j')\n"
        "with st.job_lock(job):\n"
        "    print('locked', flush=True); sys.stdin.read()\n")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with Store(pg_url) as st:
            busy = pytest.raises(JobError, match=rf"being run by another batchery process \(pid {holder.pid} on ")
            with busy, st.job_lock(st.get_job("j")):
                pass
            holder.kill()  # kill -9: no clean-up runs; the server ends the session and its lock
            holder.wait()
            for _ in range(500):  # the server notices the closed connection within milliseconds
                try:
                    with st.job_lock(st.get_job("j")):
                        break
                except JobError:
                    st.db.execute("SELECT pg_sleep(0.01)")
            else:
                pytest.fail("the job lock outlived its killed holder")
    finally:
        holder.kill()
    assert job_id == 1


def test_a_writer_waits_for_another_within_the_bound_then_gets_the_store_busy_message(pg_url):
    with Store(pg_url) as st, Store(pg_url) as other:
        busy = pytest.raises(StoreBusyError, match=r"the store postgresql://batchery@.* is busy")
        with other.transaction(), busy, st.transaction(wait=0.2):
            pass
        with st.transaction(wait=0.2):  # free again
            st.set_job_rows(0, 0)


def test_schema_versions_live_in_a_table_and_a_newer_store_is_refused(pg_url):
    with Store(pg_url) as st:
        version = st.db.execute("SELECT version FROM batchery_schema").fetchone()[0]
        assert version == st.db.execute("PRAGMA user_version").fetchone()[0] >= 2
        st.db.execute("UPDATE batchery_schema SET version = 99")
    with pytest.raises(StoreError, match="schema version 99, newer than this batchery understands"):
        Store(pg_url)


def test_an_eval_configs_store_may_be_a_postgresql_url(tmp_path, pg_url):
    import yaml

    from batchery.eval.config import load_config

    demo = Path(__file__).parent.parent / "examples" / "eval" / "demo.yaml"
    config = yaml.safe_load(demo.read_text())
    config.update(store=pg_url, spec=str(demo.parent / config["spec"]), inputs=str(demo.parent / config["inputs"]),
                  out=str(tmp_path / "out"))
    path = tmp_path / "team.yaml"
    path.write_text(yaml.safe_dump(config))
    with Store(load_config(path).store) as st:  # not made relative to the config's folder
        assert st.location == pg_url and st.list_jobs() == []
