"""What a run ends with (exit codes, summaries, --json) and everyday commands (--version, info,
delete), as users run them: a real `batchery` process, the real SDK, the emulator on loopback."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path

import orjson
import pytest
from conftest import start_job
from test_cli import batchery as cli
from test_cli import write_jsonl

import batchery
from batchery.cli import EXIT_CODES
from batchery.control import job_status
from batchery.pricing import PriceBook
from batchery.store import Store

ROOT = Path(__file__).resolve().parents[1]
KEY = {"OPENAI_API_KEY": "test-key"}


def mixed(path: Path, good: int = 5, bad: int = 3, extra: list[dict] | None = None) -> Path:
    """Lines that succeed, and lines for a model the provider does not have (they fail)."""
    rows = [{"id": f"g{i}", "prompt": f"good {i}"} for i in range(good)]
    rows += [{"id": f"b{i}", "prompt": f"bad {i}", "model": "missing-model"} for i in range(bad)]
    return write_jsonl(path, rows + (extra or []))


def submitted(tmp_path: Path, emulator, n: int = 25, batch_size: int | None = None) -> str:
    """A job 'reqs' submitted (not waited for) through the real engine, in this process; its store."""
    store = tmp_path / "s"
    with Store(store) as st:
        start_job(st, emulator, [{"prompt": f"question {i}"} for i in range(n)], name="reqs",
                  batch_size=batch_size).run(wait=False)
    return str(store)


# -- exit codes and summaries ------------------------------------------------------------------------

def test_a_run_whose_lines_fail_exits_1_names_the_commonest_reasons_and_still_writes_results(tmp_path, emulator):
    out = tmp_path / "out.jsonl"
    reqs = mixed(tmp_path / "mixed.jsonl", extra=[{"id": "again", "prompt": "good 0"}, {"prompt": "good 1"}])
    done = cli("run", str(reqs), "--model", "gpt-test", "--base-url", emulator.base_url("openai"),
               "--store", str(tmp_path / "s"), "--out", str(out), "--json", env=KEY)
    assert done.returncode == 1, done.stderr
    assert "3 requests did not succeed; most common reasons:" in done.stderr
    assert re.search(r"3 failed \(\w+\), e\.g\. .*missing-model", done.stderr), done.stderr
    assert "(10 requests, 8 distinct)" in done.stderr  # identical lines merged into one request are said so
    assert len(out.read_text().splitlines()) == 10  # the results are written all the same
    summary = orjson.loads(done.stdout)  # --json: the summary alone on standard output
    assert summary["exit_code"] == 1 and summary["not_answered"] == 3 and summary["state"] == "done"
    assert (summary["lines"], summary["distinct_requests"], summary["result_lines"]) == (10, 8, 10)
    assert summary["requests"] == {"failed": 3, "succeeded": 5} and summary["results"] == str(out)
    assert summary["failures"][0]["count"] == 3 and "missing-model" in summary["failures"][0]["example"]


def test_a_provider_that_refuses_the_call_exits_4(tmp_path, emulator):
    wrong = emulator.base_url("openai").replace("/v1", "/nowhere/v1")  # a path the server does not serve
    done = cli("run", str(mixed(tmp_path / "r.jsonl")), "--model", "gpt-test", "--base-url", wrong, "--store", str(tmp_path / "s"),
               "--out", str(tmp_path / "o.jsonl"), env=KEY)
    assert done.returncode == 4, done.stderr
    assert "error: openai upload refused (404)" in done.stderr and "Traceback" not in done.stderr


def test_every_exit_code_is_documented_in_help_and_in_the_readme():
    help_text = cli("--help", env={"COLUMNS": "200"}).stdout
    readme = (ROOT / "README.md").read_text()
    for code, meaning in EXIT_CODES.items():
        assert re.search(rf"^\W*{code}\s+{re.escape(meaning[:30])}", help_text, re.MULTILINE), (code, help_text)
        assert re.search(rf"^\| `{code}` \|", readme, re.MULTILINE), code


def test_cancel_takes_json(tmp_path, make_emulator):
    emulator = make_emulator(processing_seconds=3600)
    store = submitted(tmp_path, emulator)
    done = cli("cancel", "reqs", "--no-wait", "--json", "--base-url", emulator.base_url("openai"), "--store", store,
               env=KEY)
    assert done.returncode == 0, done.stderr
    data = orjson.loads(done.stdout)
    assert data["job"] == "reqs" and data["state"] in ("cancelling", "cancelled") and sum(data["requests"].values()) == 25


# -- one vocabulary ------------------------------------------------------------------------------------

def test_status_speaks_batcherys_words_and_prints_event_details_as_text(tmp_path, make_emulator):
    store = submitted(tmp_path, make_emulator(processing_seconds=3600), batch_size=10)  # batches stay open
    text = cli("status", "reqs", "--store", store).stdout
    batch_lines = [line for line in text.splitlines() if line.strip().startswith("batch ")]
    assert len(batch_lines) == 3 and all(re.search(r" (submitted|running) ", line) for line in batch_lines)
    assert all("(validating)" in line or "(in_progress)" in line for line in batch_lines)  # the detail view
    assert re.search(r"batch_planned batch=1 requests=10 bytes=\d+$", text, re.MULTILINE), text
    assert "{" not in text  # no Python dict reprs
    with Store(store) as st:  # --json keeps the provider's words, beside batchery's
        report = job_status(st, st.get_job("reqs"), PriceBook(), detailed=True).report()
    assert {b["remote_status"] for b in report["batches"]} <= {"validating", "in_progress"}
    assert set(report["batch_states"]) <= {"submitted", "running"}


def test_every_adapter_maps_its_batch_statuses_to_batcherys_words():
    from batchery.providers import PROVIDERS, provider_class
    from batchery.providers.base import BATCH_STATES

    for name in PROVIDERS:
        cls = provider_class(name)
        assert set(cls.batch_states.values()) <= set(BATCH_STATES), name
        if not cls.polls_run_batches:  # vllm: a chunk runs inside the poll, so none is ever seen running
            assert set(cls.batch_states.values()) >= {"running", "done"}, name
    gemini = provider_class("gemini")
    assert gemini.state_word("submitted", "JOB_STATE_SUCCEEDED") == "done"
    assert provider_class("anthropic").state_word("collected", "ended") == "done"
    assert provider_class("mistral").state_word("collected", "TIMEOUT_EXCEEDED") == "expired"
    assert gemini.state_word("planned", None) == "planned"
    assert gemini.state_word("collected", "rejected") == "failed"


def test_cancelled_lines_are_not_counted_as_failed():
    from batchery.engine import Progress

    progress = Progress("j", {"succeeded": 2, "cancelled": 5, "expired": 1}, {}, {}, 0.0)
    assert progress.failed == 1


# -- everyday parity -----------------------------------------------------------------------------------

def test_version_from_the_command_line_and_the_package():
    done = cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"batchery {batchery.__version__}"
    assert re.fullmatch(r"\d+\.\d+.*", batchery.__version__)


def test_info_names_the_store_and_which_key_variables_are_set_never_their_values(tmp_path):
    secret = "sk-test-secret-value-123"
    done = cli("info", "--store", str(tmp_path / "s"), env={"ANTHROPIC_API_KEY": secret})
    assert done.returncode == 0, done.stderr
    assert str(tmp_path / "s") in done.stdout and "ANTHROPIC_API_KEY set" in done.stdout
    assert "OPENAI_API_KEY not set" in done.stdout and secret not in done.stdout
    data = orjson.loads(cli("info", "--json", "--store", str(tmp_path / "s"),
                            env={"ANTHROPIC_API_KEY": secret}).stdout)
    by_name = {p["provider"]: p for p in data["providers"]}
    assert by_name["anthropic"]["key_set"] == ["ANTHROPIC_API_KEY"] and by_name["openai"]["key_set"] == []
    assert data["version"] == batchery.__version__ and secret not in orjson.dumps(data).decode()


def test_the_package_lists_its_public_names_and_ships_py_typed():
    assert set(batchery.__all__) <= set(dir(batchery))
    assert {"run", "arun", "results", "Result", "__version__"} <= set(dir(batchery))
    assert resources.files("batchery").joinpath("py.typed").is_file()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in pyproject["tool"]["setuptools"]["package-data"]["batchery"]


def test_run_in_live_mode_works_inside_a_running_event_loop(tmp_path):
    async def notebook_cell():  # a notebook cell calling the blocking API
        return batchery.run([{"prompt": f"loop {i}"} for i in range(3)], model="gpt-test", mode="live",
                            emulate=True, store=tmp_path / "s")

    results = asyncio.run(notebook_cell())
    assert [r.status for r in results] == ["succeeded"] * 3


def test_the_python_api_reads_keys_from_a_dotenv_file_like_the_cli(tmp_path, emulator, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "placeholder")
    monkeypatch.delenv("OPENAI_API_KEY")  # restored to "unset" afterwards, whatever .env sets
    (tmp_path / ".env").write_text("OPENAI_API_KEY=key-from-dotenv\n")
    monkeypatch.chdir(tmp_path)
    results = batchery.run([{"prompt": "dotenv"}], model="gpt-test", base_url=emulator.base_url("openai"),
                           store=tmp_path / "s", poll_interval=0.01)
    assert results[0].ok and os.environ["OPENAI_API_KEY"] == "key-from-dotenv"


def test_delete_removes_a_job_so_its_name_can_take_other_requests(tmp_path):
    store = tmp_path / "s"
    batchery.run([{"prompt": f"question {i}"} for i in range(3)], job="reqs", model="gpt-test", emulate=True,
                 store=store)
    other = [orjson.loads(line) for line in mixed(tmp_path / "other.jsonl").read_bytes().splitlines()]
    batchery.run(other, job="other", model="gpt-test", emulate=True, store=store)
    with pytest.raises(batchery.JobError, match="`batchery delete reqs`"):  # the name is taken
        batchery.run([{"prompt": "something else"}], job="reqs", model="gpt-test", emulate=True, store=store)
    done = cli("delete", "reqs", "--store", str(store))  # no key needed
    assert done.returncode == 0, done.stderr
    with Store(store) as st:
        assert [j.name for j in st.list_jobs()] == ["other"]
        counts = {t: st.db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                  for t in ("items", "outcomes", "batches", "duplicates")}
    assert counts == {"items": 8, "outcomes": 8, "batches": 2, "duplicates": 0}  # the other job's (a batch per model)
    again = batchery.run([{"prompt": "something else"}], job="reqs", model="gpt-test", emulate=True, store=store)
    assert again[0].text.endswith("something else")


def test_delete_refuses_a_job_with_open_batches_unless_forced(tmp_path, make_emulator):
    store = submitted(tmp_path, make_emulator(processing_seconds=3600))
    refused = cli("delete", "reqs", "--store", store)
    assert refused.returncode == 2 and "still open at openai" in refused.stderr and "--force" in refused.stderr
    forced = cli("delete", "reqs", "--force", "--store", store)
    assert forced.returncode == 0 and "left running" in forced.stderr
    with Store(store) as st:
        assert st.list_jobs() == []


def test_delete_refuses_while_another_process_runs_the_job(tmp_path):
    store = tmp_path / "s"
    batchery.run([{"prompt": "held"}], job="reqs", model="gpt-test", emulate=True, store=store)
    holder = subprocess.Popen(  # another process holding the job's lock, as a runner does
        [sys.executable, "-c", ("import sys, time; from batchery.store import Store\n"
                                f"st = Store({str(store)!r})\nwith st.job_lock(st.get_job('reqs')):\n"
                                "    print('locked', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        done = cli("delete", "reqs", "--store", str(store))
        assert done.returncode == 2 and "being run by another batchery process" in done.stderr
    finally:
        holder.kill()
        holder.wait()
    assert cli("delete", "reqs", "--store", str(store)).returncode == 0


def test_the_watch_view_shows_whole_job_names_on_a_normal_terminal():
    from rich.console import Console

    from batchery.cli.watch import job_table

    name = "support-v2.generate.openai-gpt-4o-mini.0123456789"  # an evaluation stage's job name
    report = {"job": name, "state": "running", "provider": "openai", "model": "gpt-4o-mini",
              "requests": {"succeeded": 10, "pending": 5}, "batch_states": {"running": 2}, "batches_by_state": {},
              "cost": {"input_tokens": 1000, "output_tokens": 2000, "usd": 0.12}, "oldest_open_batch_seconds": 30}
    console = Console(record=True, width=120)
    console.print(job_table([report], 120))
    text = console.export_text()
    rows = [line for line in text.split("─")[-1].splitlines() if line.strip()]
    assert "".join(line.strip().split("  ")[0] for line in rows) == name  # whole, if folded
    assert "…" not in text and "2 running" in text and "30s" in text


def test_status_is_library_data_the_cli_and_the_python_api_share(tmp_path, make_emulator):
    """`status --json` prints JobStatus.report(), and batchery.status returns the same JobStatus."""

    store = submitted(tmp_path, make_emulator(processing_seconds=3600), batch_size=10)
    printed = orjson.loads(cli("status", "reqs", "--json", "--store", store).stdout)
    status = batchery.status("reqs", store=store)
    assert isinstance(status, batchery.JobStatus)
    assert printed["requests"] == status.requests and printed["batch_states"] == status.batch_states
    assert printed["cost"]["models"] == status.costs and printed["rows"] == status.lines


def test_no_cli_module_imports_another_commands_module_or_private_helper():
    """Each command module stands alone: shared pieces live in the package (control.find_job,
    JobStatus) or in cli/options.py, so there is no import cycle between command modules."""
    import ast

    from batchery import cli as cli_package

    folder = Path(cli_package.__file__).parent
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and path.name not in ("__init__.py", "__main__.py"):
                assert all(not alias.name.startswith("_") for alias in node.names), (path.name, node.module)
                assert node.module in ("options", "progress", "collect", "watch", "estimate"), (path.name, node.module)
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module in ("jobs", "evaluate"):
                raise AssertionError(f"{path.name} imports cli/{node.module}.py")
