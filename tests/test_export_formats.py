"""Results out as tables: Parquet (`results --format parquet`), pandas (`batchery.to_pandas`) and CSV
keep one row per input line in input order, failed lines with their outcome, usage as columns and
metadata as JSON text; Parquet streams in row groups; a missing optional library is a one-line
error naming the extra that installs it."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import orjson
import pytest
from conftest import cli, start_job

import batchery
from batchery import export as export_module
from batchery.errors import ConfigError
from batchery.store import Store

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pd = pytest.importorskip("pandas")

LINES = [
    {"id": "a", "prompt": "first", "metadata": {"lang": "fr", "difficulty": 3}},
    {"id": "b", "prompt": "rejected", "model": "missing-model", "metadata": {"lang": "en"}},
    {"id": "c", "prompt": "no metadata"},
    {"id": "d", "prompt": "first", "metadata": ["a", "list", 1]},  # a duplicate of "a": sent once, two rows
    {"id": "e", "prompt": "last", "metadata": "plain text"},
]


@pytest.fixture(scope="module")
def job_store(tmp_path_factory):
    """A finished job whose lines succeeded, failed, repeat one another and carry any JSON metadata."""
    from batchery.emulator import Emulator, ManualClock

    folder = tmp_path_factory.mktemp("results-out")
    emulator = Emulator(clock=ManualClock()).start()
    try:
        with Store(folder / "store") as st:
            final = start_job(st, emulator, LINES).run()
        assert final.items == {"succeeded": 3, "failed": 1}  # a and d are one request
    finally:
        emulator.stop()
    return folder / "store"


def _jsonl(job_store, tmp_path) -> list[dict]:
    code, _, err = cli("results", "job", "--store", str(job_store), "--out", str(tmp_path / "r.jsonl"))
    assert code == 0, err
    return [orjson.loads(line) for line in (tmp_path / "r.jsonl").read_bytes().splitlines()]


def test_parquet_has_one_typed_row_per_input_line_in_order_with_failures_usage_and_metadata(job_store, tmp_path):
    code, _, err = cli("results", "job", "--store", str(job_store), "--out", str(tmp_path / "r.parquet"))
    assert code == 0, err  # the format follows --out's suffix
    table = pq.read_table(tmp_path / "r.parquet")
    assert table.schema.field("input_tokens").type == pa.int64() and table.schema.field("attempts").type == pa.int64()
    assert table.schema.field("status").type == pa.string() and table.schema.field("metadata").type == pa.string()
    rows = table.to_pylist()
    expected = _jsonl(job_store, tmp_path)
    assert [r["id"] for r in rows] == ["a", "b", "c", "d", "e"] == [r["id"] for r in expected]
    for row, line in zip(rows, expected):
        assert row["status"] == line["status"] and row["text"] == line["text"] and row["custom_id"] == line["custom_id"]
        assert {k: row[k] for k in line["usage"]} == line["usage"]
        assert (row["error_code"], row["error_message"]) == ((line["error"] or {}).get("code"),
                                                             (line["error"] or {}).get("message"))
        assert (None if row["metadata"] is None else json.loads(row["metadata"])) == line.get("metadata")
        assert (None if row["response"] is None else json.loads(row["response"])) == line["response"]
        assert (row["attempts"], row["provider"], row["model"], row["batch_id"]) == (
            line["attempts"], line["provider"], line["model"], line["batch_id"])
    failed = rows[1]
    assert failed["status"] == "failed" and failed["error_code"] == "model_not_found" and failed["text"] is None
    assert failed["input_tokens"] is None and json.loads(failed["metadata"]) == {"lang": "en"}
    assert rows[0]["custom_id"] == rows[3]["custom_id"] and rows[3]["metadata"] == '["a","list",1]'

    code, _, err = cli("results", "job", "--store", str(job_store), "--format", "parquet",
                       "--out", str(tmp_path / "named.data"))
    assert code == 0, err
    assert pq.read_table(tmp_path / "named.data").equals(table)


def test_to_pandas_gives_one_row_per_line_in_input_order_with_nullable_dtypes(job_store, tmp_path):
    df = batchery.to_pandas("job", store=job_store)
    assert list(df["id"]) == ["a", "b", "c", "d", "e"] and len(df) == len(LINES)
    assert list(df.columns) == list(export_module.TABLE_COLUMNS)
    assert str(df["input_tokens"].dtype) == "Int64" and str(df["attempts"].dtype) == "Int64"
    assert isinstance(df["status"].dtype, pd.StringDtype) and isinstance(df["metadata"].dtype, pd.StringDtype)
    assert list(df["status"]) == ["succeeded", "failed", "succeeded", "succeeded", "succeeded"]
    assert df.loc[1, "error_code"] == "model_not_found" and df.loc[1, "input_tokens"] is pd.NA
    assert df.loc[0, "input_tokens"] > 0 and df.loc[2, "metadata"] is pd.NA
    spread = pd.json_normalize(df["metadata"].iloc[:2].map(json.loads).tolist())  # as the docstring says
    assert list(spread["lang"]) == ["fr", "en"]
    # the same frame as reading the Parquet file with pandas' nullable dtypes
    assert cli("results", "job", "--store", str(job_store), "--out", str(tmp_path / "r.parquet"))[0] == 0
    pd.testing.assert_frame_equal(df, pd.read_parquet(tmp_path / "r.parquet", dtype_backend="numpy_nullable"))


def test_run_and_collect_write_the_format_their_out_file_names(tmp_path):
    requests = tmp_path / "in.jsonl"
    requests.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in LINES[::2]))  # a, c, e: all succeed
    code, _, err = cli("run", str(requests), "--model", "gpt-4o-mini", "--emulate", "--job", "j",
                       "--store", str(tmp_path / "s"), "--out", str(tmp_path / "r.parquet"))
    assert code == 0, err
    assert pq.read_table(tmp_path / "r.parquet").column("id").to_pylist() == ["a", "c", "e"]
    (tmp_path / "r.parquet").unlink()  # collect writes a finished job's missing file again, as its run did
    code, _, err = cli("collect", "j", "--store", str(tmp_path / "s"))
    assert code == 0, err
    assert pq.read_table(tmp_path / "r.parquet").num_rows == 3


def test_csv_keeps_metadata_as_json_text(job_store):
    code, out, err = cli("results", "job", "--store", str(job_store), "--format", "csv")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["id"] for r in rows] == ["a", "b", "c", "d", "e"]
    assert [r["metadata"] for r in rows] == ['{"lang":"fr","difficulty":3}', '{"lang":"en"}', "", '["a","list",1]',
                                             '"plain text"']
    assert rows[1]["status"] == "failed" and rows[1]["error_code"] == "model_not_found"


def test_parquet_is_written_in_row_groups_as_rows_stream_from_the_store(job_store, tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "ROW_GROUP_ROWS", 2)
    assert cli("results", "job", "--store", str(job_store), "--out", str(tmp_path / "r.parquet"))[0] == 0
    groups = pq.ParquetFile(tmp_path / "r.parquet").metadata
    assert [groups.row_group(i).num_rows for i in range(groups.num_row_groups)] == [2, 2, 1]


def test_jsonl_is_written_in_chunks_of_lines_with_the_same_bytes_as_at_once(job_store, monkeypatch):
    with Store(job_store) as st:
        job = st.get_job("job")
        outputs = []
        for rows in (2, 1000):  # 2: chunks of two lines and a last one of one
            monkeypatch.setattr(export_module, "JSONL_ROWS", rows)
            out = io.BytesIO()
            assert export_module.write_jsonl(st, job.id, job.provider, out) == len(LINES)
            outputs.append(out.getvalue())
    assert outputs[0] == outputs[1] and outputs[0].endswith(b"\n") and outputs[0].count(b"\n") == len(LINES)
    assert [orjson.loads(line)["id"] for line in outputs[0].splitlines()] == ["a", "b", "c", "d", "e"]


def test_parquet_goes_to_standard_output_when_it_is_a_pipe_and_is_refused_on_a_terminal(job_store, monkeypatch):
    from batchery.cli import main

    piped = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")  # standard output into a pipe: not a terminal
    monkeypatch.setattr(sys, "stdout", piped)
    monkeypatch.setattr(sys, "argv", ["batchery", "results", "job", "--store", str(job_store), "--format", "parquet"])
    with pytest.raises(SystemExit) as exit_status:
        main()
    assert exit_status.value.code in (0, None)
    assert pq.read_table(pa.BufferReader(piped.buffer.getvalue())).num_rows == len(LINES)
    monkeypatch.undo()

    leader, follower = os.openpty()
    try:
        tty = subprocess.run([sys.executable, "-m", "batchery", "results", "job", "--store", str(job_store),
                              "--format", "parquet"], stdout=follower, stderr=subprocess.PIPE, text=True, timeout=60,
                             check=False)
    finally:
        os.close(follower)
        os.close(leader)
    assert tty.returncode == 2 and tty.stderr.strip() == (
        "error: Parquet is binary: give --out FILE, or send standard output into a pipe or file")


# Makes `import pyarrow` fail as it does where the extra is not installed, then runs the CLI.
_WITHOUT_PYARROW = "import sys; sys.modules['pyarrow'] = None; from batchery.cli import main; sys.argv[0] = 'batchery'; main()"


def test_parquet_without_pyarrow_is_a_one_line_error_naming_the_extra_and_writes_nothing(job_store, tmp_path):
    target = tmp_path / "r.parquet"
    done = subprocess.run([sys.executable, "-c", _WITHOUT_PYARROW, "results", "job", "--store", str(job_store),
                           "--out", str(target)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        "error: Parquet output needs pyarrow, an optional extra: pip install 'batchery[parquet]'")
    assert list(tmp_path.iterdir()) == []  # neither the file nor a half-written one beside it


def test_jsonl_and_csv_results_never_need_pyarrow(job_store, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    for fmt in ("jsonl", "csv"):
        code, out, err = cli("results", "job", "--store", str(job_store), "--format", fmt)
        assert code == 0, err
        assert len(out.splitlines()) == len(LINES) + (fmt == "csv")


def test_to_pandas_without_pandas_is_a_clear_error_naming_the_extra(job_store, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ConfigError, match=r"pip install 'batchery\[pandas\]'"):
        batchery.to_pandas("job", store=job_store)


def test_parquet_and_to_pandas_read_a_postgresql_store_as_they_read_sqlite(job_store, pg_url, emulator, tmp_path):
    with Store(pg_url) as st:
        start_job(st, emulator, LINES).run()
    on_pg = batchery.to_pandas("job", store=pg_url)
    same = [c for c in export_module.TABLE_COLUMNS if c not in ("batch_id", "response")]  # ids the emulator makes
    pd.testing.assert_frame_equal(on_pg[same], batchery.to_pandas("job", store=job_store)[same])
    code, _, err = cli("results", "job", "--store", pg_url, "--out", str(tmp_path / "pg.parquet"))
    assert code == 0, err
    pd.testing.assert_frame_equal(on_pg, pd.read_parquet(tmp_path / "pg.parquet", dtype_backend="numpy_nullable"))
