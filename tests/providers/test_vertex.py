"""Gemini on Vertex AI through the real google-genai SDK (vertexai=True) and google-cloud-storage,
the adapter and the engine, against the emulator: the batch file in the bucket, the job's
predictions read back by key (a failed row by its status), the configuration read the Google way,
credentials refused, and the CLI. The lifecycle every provider shares (lost create, expiry with
partial results, cancel, faults) is in test_contract.py and tests/emulator/test_faults.py."""

from __future__ import annotations

import orjson
import pytest
from conftest import cli, clock_poll, results
from google.cloud import storage

from batchery.emulator import Emulator, ManualClock
from batchery.engine import Engine, prepare_job
from batchery.errors import AccountError, ConfigError
from batchery.inputs import iter_objects
from batchery.providers.vertex import VertexBatch

MODEL = "gemini-2.5-flash"


def line(key: str, text: str, role: str = "user") -> dict:
    return {"key": key, "request": {"contents": [{"role": role, "parts": [{"text": text}]}]}}


def test_a_job_goes_through_the_bucket_and_failed_rows_fail_alone_with_their_status(store, emulator, monkeypatch):
    monkeypatch.setenv("BATCHERY_GCS_BUCKET", "gs://team-bucket/evals/")
    adapter = VertexBatch(api_key="test-key", base_url=emulator.base_url("vertex"))
    lines = [line("a", "First question"), line("b", "Odd one", role="robot"), line("c", "Third question")]
    job, _ = prepare_job(store, "job", adapter, MODEL, iter_objects(lines), "job", raw=True)
    final = Engine(store, adapter, job, poll=clock_poll(emulator)).run()

    assert final.remote == {"JOB_STATE_PARTIALLY_SUCCEEDED": 1}
    rows = {r.id: r for r in results(store)}
    assert (rows["a"].status, rows["a"].text) == ("succeeded", "Emulated answer to: First question")
    assert rows["b"].status == "failed" and rows["b"].error["code"] == "INVALID_ARGUMENT"
    assert "robot" in rows["b"].error["message"] and rows["b"].attempts == 1  # the provider's refusal: final
    # What crossed GCS, read with the official client: the input under the bucket's folder, with our
    # content keys next to each request, and the job's predictions below its own folder.
    client = storage.Client(project="p", credentials=adapter._credentials,
                            client_options={"api_endpoint": emulator.base_url("vertex")})
    names = sorted(b.name for b in client.list_blobs("team-bucket", prefix="evals/batchery/"))
    [batch] = store.batches(job.id)
    assert names[0] == f"evals/batchery/{batch.tag}.jsonl" and batch.input_file == f"gs://team-bucket/{names[0]}"
    assert names[1].startswith(f"evals/batchery/{batch.tag}/prediction-model-") and names[1].endswith(
        "/predictions.jsonl") and len(names) == 2
    sent = [orjson.loads(x) for x in client.bucket("team-bucket").blob(names[0]).download_as_bytes().splitlines()]
    assert [sorted(x) for x in sent] == [["key", "request"]] * 3 and all(x["key"].startswith("bq-") for x in sent)


def test_the_project_location_and_credentials_come_the_google_way_and_a_bucket_is_required(tmp_path, monkeypatch):
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "my-project")
    monkeypatch.setenv("GOOGLE_CLOUD_LOCATION", "europe-west4")
    monkeypatch.setenv("GOOGLE_API_KEY", "an-api-key-that-must-not-switch-to-express-mode")
    monkeypatch.delenv("BATCHERY_GCS_BUCKET", raising=False)
    api = VertexBatch(api_key="application-default-credentials").client._api_client  # nothing is sent
    assert (api.vertexai, api.project, api.location, api.api_key) == (True, "my-project", "europe-west4", None)
    assert api._http_options.base_url == "https://europe-west4-aiplatform.googleapis.com/"
    (tmp_path / "bb-1.jsonl").write_bytes(orjson.dumps(line("a", "hi")) + b"\n")
    with pytest.raises(ConfigError, match=r"--bucket gs://BUCKET\[/FOLDER\] or set BATCHERY_GCS_BUCKET"):
        VertexBatch(api_key="application-default-credentials").upload(tmp_path / "bb-1.jsonl")

    # Credentials the server refuses are an account error naming where they come from, for GCS and Vertex alike.
    with Emulator(clock=ManualClock(), api_key="right-token") as emulator:
        refused = VertexBatch(api_key="wrong-token", base_url=emulator.base_url("vertex"))
        with pytest.raises(AccountError, match="GOOGLE_APPLICATION_CREDENTIALS"):
            refused.upload(tmp_path / "bb-1.jsonl")
        with pytest.raises(AccountError, match="GOOGLE_APPLICATION_CREDENTIALS"):
            refused.find({"bb-1"})
        assert emulator.stats()["files_uploaded"] == 0


def test_provider_vertex_with_emulate_runs_like_the_others(tmp_path, monkeypatch):
    monkeypatch.delenv("BATCHERY_GCS_BUCKET", raising=False)  # --bucket sets it for the process: undone after
    requests = tmp_path / "reqs.jsonl"
    requests.write_text("".join(f'{{"id": "q{i}", "prompt": "Question {i}"}}\n' for i in range(3)))
    code, _, err = cli("run", str(requests), "--provider", "vertex", "--emulate", "--model", MODEL,
                       "--bucket", "gs://any-bucket", "--store", str(tmp_path / "s"), "--out", str(tmp_path / "o.jsonl"))
    assert code == 0, err
    rows = [orjson.loads(x) for x in (tmp_path / "o.jsonl").read_bytes().splitlines()]
    assert [(r["id"], r["status"], r["provider"]) for r in rows] == [(f"q{i}", "succeeded", "vertex") for i in range(3)]
