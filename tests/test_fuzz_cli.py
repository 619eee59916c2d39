"""Generated bad input through the real command, in process: request files (JSONL and CSV), options,
price files and evaluation configs. Whatever comes in, `batchery` ends with exit status 0-3 and,
when it fails, an `error:` line (or the option parser's message) — never a traceback — and input
known to be wrong never passes as a success."""

from __future__ import annotations

import csv
import io
import itertools
from pathlib import Path

import orjson
import pytest
import yaml
from conftest import cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchery.emulator import Emulator

ROOT = Path(__file__).parents[1]
DEMO = ROOT / "examples" / "eval"
SETTINGS = settings(deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
_case = itertools.count()


def assert_clean(code: int, stderr: str) -> None:
    assert code in (0, 1, 2, 3), (code, stderr)
    assert "Traceback" not in stderr, stderr
    if code not in (0, 3):
        assert "error:" in stderr.lower() or "invalid value" in stderr.lower() or "usage:" in stderr.lower(), stderr


@pytest.fixture(scope="module")
def endpoint():
    with Emulator() as emulator:
        yield emulator.base_url("openai")


def fresh(tmp_path: Path) -> Path:
    folder = tmp_path / f"case{next(_case)}"
    folder.mkdir()
    return folder


# -- request files ---------------------------------------------------------------------------------

# JSON fragments, written as text so that integers past 64 bits reach the reader as they would
ID = st.sampled_from(['"a"', '"b"', "1", '"1"', "true", "null", "1.5", "[]", str(2**70), str(2**64 - 1)])
FIELD = {
    "prompt": st.sampled_from(['"hello"', '"hi there"', "3", "null", '""']),
    "model": st.sampled_from(['"m2"', '""', "[]", "{}", "0", "null", "false"]),
    "max_tokens": st.sampled_from(["1", "0", "-1", "10", str(2**63), str(2**70), '"10"', "true", "1e400"]),
    "temperature": st.sampled_from(["0.5", "3", '"hot"', "NaN", "-0.0", "1e308"]),
    "metadata": st.sampled_from(['{"k": 1}', str(2**70), "[1, 2]", '"x"']),
    "stop": st.sampled_from(['"x"', "[1]", '["a", "b"]']),
    "reasoning": st.sampled_from(['{"effort": "low"}', '{"budget_tokens": 99999999999999999999}', "1"]),
    "messages": st.sampled_from(['[{"role": "user", "content": "x"}]', "[]", '[{"role": "robot"}]']),
    "tempreature": st.just("1"),
}
json_line = st.one_of(
    st.fixed_dictionaries({"prompt": FIELD["prompt"]}, optional={"id": ID, **{k: v for k, v in FIELD.items()
                                                                              if k != "prompt"}})
    .map(lambda d: ("{" + ", ".join(f'"{k}": {v}' for k, v in d.items()) + "}").encode()),
    st.binary(max_size=30),
    st.sampled_from([b"", b"[1]", b'{"prompt": "\xff"}', b"[" * 3000 + b"]" * 3000]),
)
CELL = st.sampled_from(["hello", "", "a,b", '"quoted, fine"', '"never closed', 'x"y', "1", "0.5", "-3",
                        str(2**70), "nan", "1e400", '"two\nlines"', "\ufeff"])
COLUMNS = st.lists(st.sampled_from(["id", "prompt", "model", "max_tokens", "temperature", "top_p", "other"]),
                   min_size=1, max_size=4)


@st.composite
def csv_file(draw) -> str:
    header = draw(COLUMNS)
    rows = draw(st.lists(st.lists(CELL, min_size=0, max_size=len(header) + 1), max_size=5))
    return "\n".join([",".join(header), *(",".join(row) for row in rows)]) + "\n"


def known_bad(name: str, content: bytes) -> str | None:
    """Why this input must not pass, where the fuzzer can tell without re-implementing batchery."""
    ids: list[str] = []
    if name.endswith(".csv"):
        try:
            rows = list(csv.reader(io.StringIO(content.decode("utf-8-sig"), newline=""), strict=True))
        except (csv.Error, UnicodeDecodeError):
            return "malformed CSV"
        rows = [r for r in rows if r]
        if any(len(r) > len(rows[0]) for r in rows[1:]):
            return "a row with more fields than the header"
        if "id" in rows[0] and rows[0].count("id") == 1:
            ids = [r[rows[0].index("id")] for r in rows[1:] if len(r) > rows[0].index("id")]
            ids = [i for i in ids if i]
    else:
        for line in content.splitlines():
            try:
                obj = orjson.loads(line) if line.strip() else None
            except orjson.JSONDecodeError:
                return "not JSON"
            if isinstance(obj, dict):
                if obj.get("id") is True or obj.get("id") is False:
                    return "a boolean id"
                if "model" in obj and obj["model"] in ([], {}, ""):
                    return "an empty model"
                if isinstance(obj.get("id"), (str, int)) and not isinstance(obj.get("id"), bool):
                    ids.append(str(obj["id"]))
    if len(set(ids)) != len(ids):
        return "a repeated id"
    return None


OPTIONS = st.fixed_dictionaries({}, optional={
    "--mode": st.sampled_from(["batch", "live", "stream", ""]),
    "--rpm": st.sampled_from(["5", "0", "-1", "x"]),
    "--concurrency": st.sampled_from(["2", "0"]),
    "--max-cost": st.sampled_from(["1", "-1", "0"]),
    "--batch-size": st.sampled_from(["2", "0"]),
    "--no-wait": st.just(None),
    "--raw": st.just(None),
    "--provider": st.sampled_from(["openai", "nope", "openai-compatible"]),
})
PRICES = st.sampled_from([None, "folder", "missing", "input = 1\noutput = 2", "input = -1\noutput = 2",
                          "input = 1\noutput = nan", 'input = "cheap"\noutput = 1', "input = 1", "not toml ["])


@settings(SETTINGS, max_examples=50)
@given(name=st.sampled_from(["reqs.jsonl", "reqs.csv", "reqs.txt", "missing.jsonl", "folder.jsonl"]),
       lines=st.lists(json_line, min_size=1, max_size=5), table=csv_file(), options=OPTIONS, prices=PRICES,
       dry_run=st.booleans())
def test_run_and_estimate_end_cleanly_and_refuse_what_is_wrong(tmp_path, endpoint, monkeypatch, name, lines,
                                                               table, options, prices, dry_run):
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    folder = fresh(tmp_path)
    path = folder / name
    content = table.encode() if name.endswith(".csv") else b"\n".join(lines) + b"\n"
    if name == "folder.jsonl":
        path.mkdir()
    elif name != "missing.jsonl":
        path.write_bytes(content)
    args = ["run", str(path), "--model", "m", "--store", str(folder / "store"), "--out", str(folder / "out.jsonl"),
            "--base-url", endpoint]
    for option, value in options.items():
        args += [option] if value is None else [option, value]
    if prices is not None:
        price_file = folder / "prices.toml"
        if prices == "folder":
            price_file.mkdir()
        elif prices != "missing":
            price_file.write_text(f'[openai."m"]\n{prices}\n')
        args += ["--prices", str(price_file)]
    if dry_run:
        args.append("--dry-run")

    code, _, stderr = cli(*args)
    assert_clean(code, stderr)
    if code == 0:
        why = known_bad(name, content)
        mode = options.get("--mode", "batch")
        assert why is None, f"succeeded on {why}: {stderr}"
        assert mode in ("batch", "live"), stderr
        assert not (mode == "batch" and "--rpm" in options), stderr
        assert not (mode == "live" and "--no-wait" in options), stderr
        if dry_run or "--max-cost" in options:  # the price file is read: a bad one is refused
            assert prices in (None, "input = 1\noutput = 2"), stderr

    if not dry_run:  # estimate reads what the dry run reads
        code, _, stderr = cli("estimate", str(path), "--model", "m", *([] if prices is None else
                                                                     ["--prices", str(folder / "prices.toml")]))
        assert_clean(code, stderr)


# -- evaluation configs ----------------------------------------------------------------------------

PARAMS = st.dictionaries(st.sampled_from(["temperature", "max_tokens", "prompt", "messages", "model", "system",
                                          "seed", "stop"]),
                         st.sampled_from([0, 0.5, 9, -1, 2**70, "x", [], {}, None, True]), max_size=2)
MODEL = st.fixed_dictionaries({"provider": st.sampled_from(["openai", "anthropic", "nope"]),
                               "model": st.sampled_from(["gpt-4o-mini", "", "m"])},
                              optional={"params": PARAMS, "name": st.sampled_from(["a", "a", ""]),
                                        "base_url": st.just("http://127.0.0.1:9/v1")})
PLACE = st.sampled_from(["demo", "folder", "missing", "file", "not-utf8", "under-a-file"])


@settings(SETTINGS, max_examples=60)
@given(config=st.fixed_dictionaries(
    {"name": st.sampled_from(["ev", "bad name/", ""]), "spec": PLACE, "inputs": PLACE,
     "candidates": st.lists(MODEL, max_size=2), "judges": st.lists(MODEL, max_size=2)},
    optional={"out": PLACE, "jury": st.sampled_from(["mean", "most"]), "scale": st.sampled_from(["likert", 5]),
              "mode": st.sampled_from(["live", "stream"]), "budget_usd": st.sampled_from([-1, 1, "x"]),
              "pairwise": st.sampled_from([{"reversed_share": 2}, {"judges": ["ghost"]}, None]),
              "emulate": st.booleans(), "behaviour": st.sampled_from([{"quality": {"m": 2}}, [], "x"])}),
       raw=st.sampled_from([None, b"\xff\xfe not utf-8", b"- a list", b"a: [unclosed", b"[" * 600]),
       command=st.sampled_from(["report", "status", "run"]))
def test_evaluation_configs_end_cleanly_and_refuse_what_is_wrong(tmp_path, config, raw, command):
    folder = fresh(tmp_path)
    (folder / "file").write_text("just a file\n")
    (folder / "folder").mkdir()
    (folder / "not-utf8").write_bytes(b'{"id": "\xff"}\n')
    places = {"demo": None, "folder": "folder", "missing": "missing", "file": "file", "not-utf8": "not-utf8",
              "under-a-file": "file/sub"}
    for field, demo in (("spec", DEMO / "spec.jsonl"), ("inputs", DEMO / "inputs.jsonl"), ("out", folder / "out")):
        if field in config:
            config[field] = str(demo) if config[field] == "demo" else places[config[field]]
    config["store"] = "store"
    if command == "run":  # nothing may be sent: a config that passes every check stops at a key it lacks
        config["emulate"] = False
    path = folder / "eval.yaml"
    path.write_bytes(raw if raw is not None else yaml.safe_dump(config).encode())

    code, _, stderr = cli("eval", command, str(path))
    assert_clean(code, stderr)
    if raw is None and command != "status":
        owned = [k for m in config["candidates"] + config["judges"] for k in m.get("params", {})
                 if k in ("prompt", "messages", "model", "system")]
        assert code != 0 or not owned, f"params that set {owned} passed: {stderr}"
        assert code != 0 or config.get("out") not in ("file", "file/sub"), stderr
    if raw is not None and raw.startswith(b"\xff"):
        assert code == 2 and "not valid UTF-8" in stderr
