"""The recipes in examples/ (one per workflow batchery serves), each run as its README says: a copy
of the recipe's folder, the real CLI, the emulator. Each test checks that the outputs the recipe
promises are there and say what the recipe's data and knobs make true."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest
from conftest import cli

from batchery.store import Store

EXAMPLES = Path(__file__).parents[1] / "examples"


def copy_recipe(tmp_path: Path, name: str) -> Path:
    """The recipe's folder at tmp/examples/<name>, so its `../../recipes-out` lands in tmp."""
    folder = tmp_path / "examples" / name
    shutil.copytree(EXAMPLES / name, folder)
    return folder


def summary(tmp_path: Path, name: str) -> dict:
    return orjson.loads((tmp_path / "recipes-out" / name / "summary.json").read_bytes())


def test_the_speceval_recipe_judges_candidates_on_three_providers_with_a_jury_and_ranks_them_head_to_head(
        tmp_path):
    folder = copy_recipe(tmp_path, "speceval")
    code, _, err = cli("eval", "run", str(folder / "speceval.yaml"))
    assert code == 0, err
    assert "done in 2 batch windows (generate → judge, compare)" in err

    data = summary(tmp_path, "speceval")
    assert len(data["judges"]) == 3 and len({j["provider"] for j in data["judges"]}) == 3
    board = {row["candidate"]: row for row in data["leaderboard"]}
    assert set(board) == {"gpt-4.1-mini", "claude-haiku", "llama-3.3-70b"}
    for row in board.values():  # 4 statements x 2 inputs each, every answer judged
        assert row["n"] == 8 and row["failed"] == 0
        assert row["lo"] <= row["rate"] <= row["hi"]
    assert board["claude-haiku"]["rate"] > board["llama-3.3-70b"]["rate"]  # quality 0.95 against 0.6
    strengths = [row["item"] for row in data["pairwise"]["bradley_terry"]]
    assert sorted(strengths) == sorted(board) and strengths[-1] == "llama-3.3-70b"
    assert data["pairwise"]["reverse_consistency"]["n"] > 0  # both orders were judged
    flagged = [row["judge"] for row in data["pairwise"]["judges"] if row.get("flagged")]
    assert flagged == ["gemini-judge"]  # the one judge told to favour the first answer
    assert (tmp_path / "recipes-out" / "speceval" / "report.html").stat().st_size > 0


def test_the_layton_recipe_grades_predictions_made_elsewhere_with_a_jury_of_three_providers_and_an_interval(
        tmp_path):
    folder = copy_recipe(tmp_path, "layton")
    code, _, err = cli("eval", "run", str(folder / "layton.yaml"))
    assert code == 0, err
    assert "calibrated with 6 human label(s): model-a" in err

    data = summary(tmp_path, "layton")
    assert len({j["provider"] for j in data["judges"]}) == 3 and data["jury_rule"] == "mean"
    board = {row["candidate"]: row for row in data["leaderboard"]}
    truth = {"model-a": 10 / 12, "model-b": 7 / 12}  # the predictions' right answers (the unmarked ones)
    for name, rate in truth.items():
        row = board[name]
        assert row["n"] == 12 and row["failed"] == 0
        assert row["lo"] < rate < row["hi"] and 0.0 < row["lo"] < row["rate"] < row["hi"] <= 1.0
        calibrated = row["calibrated"]
        assert calibrated["labels"] == 6 and calibrated["low"] <= calibrated["estimate"] <= calibrated["high"]
    assert board["model-a"]["rate"] > board["model-b"]["rate"]
    with Store(tmp_path / "recipes-out" / "store") as store:  # predictions: nothing was generated
        stages = {job.name.split(".")[1] for job in store.list_jobs() if job.name.startswith("layton.")}
    assert stages == {"judge"}


@pytest.fixture
def keys(monkeypatch) -> None:
    for provider in ("OPENAI", "ANTHROPIC", "GEMINI"):
        monkeypatch.setenv(f"{provider}_API_KEY", "test-key")


def test_the_pairwise_recipe_is_left_with_no_wait_collected_later_and_ranks_through_its_template_grid(
        tmp_path, make_emulator, keys, monkeypatch):
    """run.sh's steps against a real emulator server (its clock the test's): `eval rank --no-wait`
    submits every judge x template's comparisons and returns; `batchery collect --all` collects them
    once the batches are done; `eval rank` ranks from the store, sending nothing again."""
    window = 60.0
    emulator = make_emulator(processing_seconds=window)
    folder = copy_recipe(tmp_path, "pairwise")
    config = folder / "rank.yaml"
    config.write_text(config.read_text().replace("http://127.0.0.1:8787", emulator.url))
    script = (folder / "run.sh").read_text()
    assert "eval rank examples/pairwise/rank.yaml --no-wait" in script and "collect --all" in script
    monkeypatch.chdir(tmp_path)  # collect writes the finished jobs' results files here

    code, _, err = cli("eval", "rank", str(config), "--no-wait")
    assert code == 0, err
    assert "submitted; the ranking goes on when" in err and "rank@clarity: gemini-judge | running |" in err
    created = emulator.stats()["batches_created"]
    assert {p: n for p, n in created.items() if n} == {"openai": 2, "anthropic": 2, "gemini": 2}  # 3 judges x 2

    emulator.clock.advance(window)
    code, _, err = cli("collect", "--all", "--store", str(tmp_path / "recipes-out" / "store"))
    assert code == 0, err
    code, _, err = cli("eval", "rank", str(config))
    assert code == 0, err
    assert "template clarity: first shown won" in err
    assert sum(emulator.stats()["batches_created"].values()) == 6  # nothing sent twice
    with Store(tmp_path / "recipes-out" / "store") as store:
        jobs = [job for job in store.list_jobs() if job.name.startswith("pairwise.")]
        assert len(jobs) == 6 and all(job.state == "done" for job in jobs)
        assert emulator.stats()["requests_processed"] == sum(sum(store.counts(j.id).values()) for j in jobs)

    data = summary(tmp_path, "pairwise")
    strengths = data["pairwise"]["bradley_terry"]
    assert len(strengths) == 8 and all(row["lo"] <= row["strength"] <= row["hi"] for row in strengths)
    assert {row["item"] for row in strengths[-3:]} == {"s3", "s5", "s7"}  # the three weak samples
    assert all(isinstance(row["elo"], float) for row in strengths)
    assert strengths[0]["elo"] > strengths[-1]["elo"]
    templates = {row["template"]: row for row in data["templates"]}
    assert set(templates) == {"builtin", "clarity"}
    assert templates["builtin"]["reversed_pairs"] == templates["clarity"]["reversed_pairs"] > 0  # both directions
    assert all(row["p_value"] is not None and row["share_first"] is not None for row in templates.values())
    assert (tmp_path / "recipes-out" / "pairwise" / "template_bias.csv").exists()


def test_a_ranking_on_the_in_process_emulator_is_not_left_with_no_wait(tmp_path):
    """--no-wait leaves batches at the providers; an in-process emulator stops with the command,
    so a ranking that asks for both is refused before anything is sent, in one line."""
    folder = copy_recipe(tmp_path, "pairwise")
    config = folder / "rank.yaml"
    config.write_text(config.read_text() + "emulate: true\n")
    code, _, err = cli("eval", "rank", str(config), "--no-wait")
    assert code == 2
    assert err.startswith("error: --no-wait leaves batches at the providers") and err.count("\n") == 1
    assert not (tmp_path / "recipes-out" / "pairwise").exists()
