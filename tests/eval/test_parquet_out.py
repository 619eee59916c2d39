"""An evaluation's items, pairs and tables as Parquet too (`parquet: true`), end to end on the emulator."""

from __future__ import annotations

import csv
import io
import json
import sys

import pytest
from test_pipeline import DEMO, evaluate, write_config

from batchery.errors import ConfigError
from batchery.eval.config import load_config

DEMO_INPUTS = DEMO / "inputs.jsonl"


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_parquet_true_writes_items_pairs_and_every_table_as_parquet_beside_the_jsonl_and_csv(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    inputs = tmp_path / "inputs.jsonl"  # two inputs of one statement: a small evaluation
    inputs.write_text("".join((DEMO_INPUTS.read_text().splitlines(keepends=True))[:2]))
    path = write_config(tmp_path, inputs=str(inputs), parquet=True,
                        judges=[{"provider": "anthropic", "model": "claude-haiku-4-5"}],
                        candidates=[{"name": "strong", "provider": "openai", "model": "gpt-4o"},
                                    {"name": "weak", "provider": "openai", "model": "gpt-4o-mini"},
                                    {"name": "broken", "provider": "openai", "model": "missing-model"}])
    _, report = evaluate(path)
    out = report.parent
    items = pq.read_table(out / "items.parquet")
    with (out / "items.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert items.column_names == list(rows[0]) and items.column("id").to_pylist() == [r["id"] for r in rows]
    judge = "anthropic/claude-haiku-4-5"
    typed = items.to_pylist()
    assert typed[0]["input_index"] == 0 and typed[1]["input_index"] == 1 and typed[0][f"{judge}.verdict"] in (True, False)
    assert typed[0]["answer"] == rows[0]["answer"] and isinstance(typed[0][f"{judge}.confidence"], float)
    assert [r["status"] for r in typed[4:]] == ["failed", "failed"] and typed[4]["answer"] is None
    assert typed[4][f"{judge}.verdict"] is None and typed[4]["error"]
    pairs = pq.read_table(out / "pairs.parquet").to_pylist()
    assert [p["id"] for p in pairs] == [p["id"] for p in read_jsonl(out / "pairs.jsonl")]
    for table in ("leaderboard", "statements", "sections", "agreement", "pairwise", "judge_bias", "costs"):
        with (out / f"{table}.csv").open(newline="") as f:
            csv_rows = list(csv.DictReader(f))
        parquet = pq.read_table(out / f"{table}.parquet")
        assert parquet.column_names == list(csv.DictReader(io.StringIO((out / f"{table}.csv").read_text())).fieldnames)
        assert parquet.num_rows == len(csv_rows), table
    board = pq.read_table(out / "leaderboard.parquet").to_pylist()
    assert {r["candidate"]: r["failure_rate"] for r in board} == {"strong": 0.0, "weak": 0.0, "broken": 1.0}

    # the same evaluation without parquet: no stale Parquet file is left to mislead
    path.write_text(path.read_text().replace("parquet: true", "parquet: false"))
    evaluate(path, send=False)
    assert not list(out.glob("*.parquet"))


def test_parquet_true_without_pyarrow_stops_the_evaluation_before_anything_is_sent(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ConfigError, match=r"parquet: Parquet output needs pyarrow, an optional extra: "
                                          r"pip install 'batchery\[parquet\]'"):
        load_config(write_config(tmp_path, parquet=True))
