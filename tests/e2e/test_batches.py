"""Files and batches through ``aiforge serve --model demo``, with the official ``openai``
client: upload, list, retrieve, download and delete files; create, poll, cancel and list
batches of chat, completions and embeddings requests; bad input files; another project's
files and batches; and a batch that survives a SIGKILL of the gateway mid-run with exactly
one output line and one usage record per request.

Every body is checked against the OpenAI OpenAPI fixture (``OpenAIFile``,
``ListFilesResponse``, ``DeleteFileResponse``, ``Batch``, ``ListBatchesResponse``, and the
answers inside the output files).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from e2e_helpers import auth, error_of

from aiforge.testing.openai_schema import assert_conforms
from aiforge.testing.server import RemoteAiforgeServer

MAX_FILE_BYTES = 256 * 1024
ENV = {"AIFORGE_FILES_MAX_BYTES": str(MAX_FILE_BYTES), "AIFORGE_BATCH_CONCURRENCY": "4"}
DONE = ("completed", "failed", "cancelled", "expired")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteAiforgeServer]:
    root = tmp_path_factory.mktemp("e2e-batches")
    with RemoteAiforgeServer("demo", engine="auto", env=ENV, data_dir=root / "data") as remote:
        yield remote


@pytest.fixture(scope="module")
def client(server: RemoteAiforgeServer) -> openai.OpenAI:
    return server.client()


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


def chat_line(custom_id: str, text: str = "hello", **body: Any) -> dict[str, Any]:
    request = {"model": "demo", "messages": [{"role": "user", "content": text}],
               "max_tokens": 4, **body}  # fmt: skip
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": request}  # fmt: skip


def upload(client: openai.OpenAI, lines: list[dict[str, Any]], name: str = "in.jsonl") -> str:
    return client.files.create(file=(name, jsonl(lines)), purpose="batch").id


def create(client: openai.OpenAI, file_id: str, endpoint: str = "/v1/chat/completions") -> str:
    batch = client.batches.create(
        input_file_id=file_id, endpoint=endpoint, completion_window="24h",  # type: ignore[arg-type]
        metadata={"suite": "e2e"},
    )  # fmt: skip
    return batch.id


def raw_batch(server: RemoteAiforgeServer, batch_id: str) -> dict[str, Any]:
    response = httpx.get(server.url_for("v1/batches", batch_id), headers=auth(server))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert_conforms("Batch", body)
    return body


def wait_done(
    server: RemoteAiforgeServer, batch_id: str, timeout_s: float = 180.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batch = raw_batch(server, batch_id)
        if batch["status"] in DONE:
            return batch
        time.sleep(0.3)
    raise AssertionError(f"batch {batch_id} not done: {batch}\n{server.log_tail()}")


def file_lines(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [orjson.loads(line) for line in client.files.content(file_id).content.splitlines()]


# -- files ------------------------------------------------------------------------------
def test_files_are_uploaded_listed_read_and_deleted(
    server: RemoteAiforgeServer, client: openai.OpenAI
) -> None:
    data = b"some user data\n" * 100
    made = client.files.create(file=("notes.txt", data), purpose="user_data")
    assert (made.bytes, made.filename, made.purpose) == (len(data), "notes.txt", "user_data")
    headers = auth(server)
    raw = httpx.get(server.url_for("v1/files", made.id), headers=headers).json()
    assert_conforms("OpenAIFile", raw)
    assert client.files.content(made.id).content == data
    others = [client.files.create(file=(f"f{i}.txt", b"x"), purpose="user_data") for i in range(3)]
    listed = httpx.get(server.url_for("v1/files"), headers=headers,
                       params={"purpose": "user_data", "limit": 2}).json()  # fmt: skip
    assert_conforms("ListFilesResponse", listed)
    assert [f["id"] for f in listed["data"]] == [others[2].id, others[1].id]
    assert listed["has_more"] is True
    rest = client.files.list(purpose="user_data", after=listed["last_id"], limit=10)
    assert [f.id for f in rest.data] == [others[0].id, made.id]
    oldest_first = client.files.list(purpose="user_data", order="asc")
    assert [f.id for f in oldest_first.data][:2] == [made.id, others[0].id]
    deleted = httpx.delete(server.url_for("v1/files", made.id), headers=headers).json()
    assert_conforms("DeleteFileResponse", deleted)
    assert deleted == {"id": made.id, "object": "file", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        client.files.content(made.id)


def test_a_file_over_the_limit_is_refused_while_it_is_read(
    server: RemoteAiforgeServer, client: openai.OpenAI
) -> None:
    with pytest.raises(openai.APIStatusError) as refused:
        client.files.create(file=("big.jsonl", b"x" * (MAX_FILE_BYTES + 1)), purpose="batch")
    assert refused.value.status_code == 413
    assert error_of(refused.value.response)["code"] == "file_too_large"
    stored = list((server.data_dir / "files").rglob("*"))
    assert not [p for p in stored if p.is_file() and p.stat().st_size > MAX_FILE_BYTES]


def test_bad_uploads_are_400s(server: RemoteAiforgeServer, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad_purpose:
        client.files.create(file=("a.txt", b"x"), purpose="nonsense")  # type: ignore[arg-type]
    assert error_of(bad_purpose.value.response)["param"] == "purpose"
    response = httpx.post(server.url_for("v1/files"), headers=auth(server), json={"a": 1})
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_upload"
    anonymous = httpx.post(server.url_for("v1/files"), files={"file": ("a", b"x")})
    assert anonymous.status_code == 401


def test_stored_files_are_owner_only(server: RemoteAiforgeServer, client: openai.OpenAI) -> None:
    made = client.files.create(file=("secret.txt", b"secret"), purpose="user_data")
    stored = next((server.data_dir / "files").rglob(made.id))
    assert stored.stat().st_mode & 0o777 == 0o600
    assert stored.parent.stat().st_mode & 0o777 == 0o700
    assert (server.data_dir / "files").stat().st_mode & 0o777 == 0o700


# -- batches ----------------------------------------------------------------------------
def test_a_chat_batch_completes_with_one_output_line_per_request(
    server: RemoteAiforgeServer, client: openai.OpenAI
) -> None:
    lines = [chat_line(f"req-{i}", f"say {i}") for i in range(5)]
    lines.append(chat_line("bad-temperature", temperature=-3))
    batch_id = create(client, upload(client, lines))
    batch = wait_done(server, batch_id)
    assert batch["status"] == "completed", batch
    assert batch["request_counts"] == {"total": 6, "completed": 5, "failed": 1}
    assert batch["model"] == "demo"
    assert batch["metadata"] == {"suite": "e2e"}
    assert batch["usage"]["input_tokens"] > 0
    assert batch["usage"]["output_tokens"] > 0
    outputs = file_lines(client, batch["output_file_id"])
    errors = file_lines(client, batch["error_file_id"])
    assert sorted(o["custom_id"] for o in outputs) == [f"req-{i}" for i in range(5)]
    for line in outputs:
        assert line["error"] is None
        assert line["response"]["status_code"] == 200
        assert line["id"].startswith("batch_req_")
        assert line["response"]["request_id"].startswith(batch_id)
        assert_conforms("CreateChatCompletionResponse", line["response"]["body"])
    (error,) = errors
    assert error["custom_id"] == "bad-temperature"
    assert error["response"]["status_code"] == 400
    assert_conforms("ErrorResponse", error["response"]["body"])
    with pytest.raises(openai.ConflictError):  # a finished batch cannot be cancelled
        client.batches.cancel(batch_id)
    output_file = client.files.retrieve(batch["output_file_id"])
    assert output_file.purpose == "batch_output"
    listed = httpx.get(server.url_for("v1/batches"), headers=auth(server),
                       params={"limit": 100}).json()  # fmt: skip
    assert_conforms("ListBatchesResponse", listed)
    assert batch_id in [b["id"] for b in listed["data"]]


def test_a_completions_batch(server: RemoteAiforgeServer, client: openai.OpenAI) -> None:
    lines = [
        {"custom_id": f"c{i}", "method": "POST", "url": "/v1/completions",
         "body": {"model": "demo", "prompt": f"count {i}", "max_tokens": 3}}
        for i in range(3)
    ]  # fmt: skip
    batch = wait_done(server, create(client, upload(client, lines), "/v1/completions"))
    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
    outputs = file_lines(client, batch["output_file_id"])
    assert sorted(o["custom_id"] for o in outputs) == ["c0", "c1", "c2"]
    for line in outputs:
        assert_conforms("CreateCompletionResponse", line["response"]["body"])


def test_an_embeddings_batch(server: RemoteAiforgeServer, client: openai.OpenAI) -> None:
    """``demo-embedding`` is deployed beside ``demo`` through the admin API."""
    headers = auth(server)
    created = httpx.post(server.url_for("admin/v1/deployments"), headers=headers,
                         json={"name": "demo-embedding", "model": "demo-embedding"})  # fmt: skip
    assert created.status_code in (201, 409), created.text
    deadline = time.monotonic() + 180
    while "demo-embedding" not in [m.id for m in client.models.list().data]:
        assert time.monotonic() < deadline, server.log_tail()
        time.sleep(0.5)
    lines = [
        {"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings",
         "body": {"model": "demo-embedding", "input": f"text {i}"}}
        for i in range(3)
    ]  # fmt: skip
    batch = wait_done(server, create(client, upload(client, lines), "/v1/embeddings"))
    assert batch["status"] == "completed", batch
    outputs = file_lines(client, batch["output_file_id"])
    assert sorted(o["custom_id"] for o in outputs) == ["e0", "e1", "e2"]
    for line in outputs:
        assert_conforms("CreateEmbeddingResponse", line["response"]["body"])


def test_a_cancelled_batch_runs_no_more_lines(
    server: RemoteAiforgeServer, client: openai.OpenAI
) -> None:
    lines = [chat_line(f"slow-{i}", max_tokens=48) for i in range(40)]
    batch_id = create(client, upload(client, lines))
    deadline = time.monotonic() + 60
    while raw_batch(server, batch_id)["status"] == "validating":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    cancelling = client.batches.cancel(batch_id)
    assert cancelling.status in ("cancelling", "cancelled")
    batch = wait_done(server, batch_id)
    assert batch["status"] == "cancelled"
    counts = batch["request_counts"]
    assert counts["total"] == 40
    assert counts["completed"] + counts["failed"] < 40
    outputs = file_lines(client, batch.get("output_file_id"))
    errors = file_lines(client, batch.get("error_file_id"))
    seen = Counter(line["custom_id"] for line in outputs + errors)
    assert seen == Counter(f"slow-{i}" for i in range(40))
    not_run = [e for e in errors if e["response"] is None]
    assert len(not_run) == 40 - counts["completed"] - counts["failed"]
    assert {e["error"]["code"] for e in not_run} == {"batch_cancelled"}
    time.sleep(1.0)
    assert raw_batch(server, batch_id)["request_counts"] == counts  # nothing ran after
    assert client.batches.cancel(batch_id).status == "cancelled"  # again: no change


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"not json", "invalid_json_line"),
        (orjson.dumps({**chat_line("a"), "url": "/v1/embeddings"}), "invalid_url"),
        (orjson.dumps({**chat_line("a"), "method": "GET"}), "invalid_method"),
        (orjson.dumps(chat_line("first")), "duplicate_custom_id"),
        (orjson.dumps({**chat_line("a"), "body": {"model": "no-such-model"}}), "mismatched_model"),
        (orjson.dumps(chat_line("s", stream=True)), "invalid_value"),
    ],
)
def test_a_bad_input_file_fails_the_batch_naming_its_line(
    server: RemoteAiforgeServer, client: openai.OpenAI, line: bytes, code: str
) -> None:
    data = orjson.dumps(chat_line("first")) + b"\n\n" + line + b"\n"
    file_id = client.files.create(file=("bad.jsonl", data), purpose="batch").id
    batch = wait_done(server, create(client, file_id))
    assert batch["status"] == "failed"
    errors = batch["errors"]["data"]
    assert {"code": code, "line": 3} == {k: errors[0][k] for k in ("code", "line")}, errors
    assert "output_file_id" not in batch


def test_a_batch_for_a_model_not_served_fails(
    server: RemoteAiforgeServer, client: openai.OpenAI
) -> None:
    file_id = upload(client, [{**chat_line("x"), "body": {"model": "gpt-9"}}])
    batch = wait_done(server, create(client, file_id))
    assert batch["status"] == "failed"
    assert batch["errors"]["data"][0]["code"] == "model_not_found"


def test_bad_batch_requests_are_refused(server: RemoteAiforgeServer, client: openai.OpenAI) -> None:
    file_id = upload(client, [chat_line("x")])
    with pytest.raises(openai.BadRequestError) as endpoint:
        create(client, file_id, "/v1/moderations")
    assert error_of(endpoint.value.response)["param"] == "endpoint"
    with pytest.raises(openai.NotFoundError):
        create(client, "file-doesnotexist")
    notes = client.files.create(file=("n.txt", b"{}"), purpose="user_data").id
    with pytest.raises(openai.BadRequestError):
        create(client, notes)
    response = httpx.post(server.url_for("v1/batches"), headers=auth(server),
                          json={"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                                "completion_window": "1h"})  # fmt: skip
    assert response.status_code == 400
    error_of(response)
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")


def test_an_input_file_cannot_be_deleted_while_its_batch_runs(
    server: RemoteAiforgeServer, client: openai.OpenAI
) -> None:
    file_id = upload(client, [chat_line(f"d{i}", max_tokens=32) for i in range(12)])
    batch_id = create(client, file_id)
    with pytest.raises(openai.ConflictError):
        client.files.delete(file_id)
    wait_done(server, batch_id)
    assert client.files.delete(file_id).deleted


# -- projects ---------------------------------------------------------------------------
def _other_project_key(server: RemoteAiforgeServer) -> str:
    with httpx.Client(base_url=server.url, headers=auth(server), timeout=30) as http:
        org = http.post("/admin/v1/organizations", json={"name": "other-org"}).json()
        body = {"name": "other", "organization_id": org["id"]}
        project = http.post("/admin/v1/projects", json=body).json()
        key = http.post(f"/admin/v1/projects/{project['id']}/keys",
                        json={"name": "other", "role": "member"}).json()  # fmt: skip
    token: str = key["key"]
    deadline = time.monotonic() + 15
    while httpx.get(server.url_for("v1/files"), headers={"authorization": f"Bearer {token}"}
                    ).status_code == 401:  # fmt: skip
        assert time.monotonic() < deadline
        time.sleep(0.2)
    return token


def test_another_projects_files_and_batches_do_not_exist_for_a_key(
    server: RemoteAiforgeServer, client: openai.OpenAI
) -> None:
    file_id = upload(client, [chat_line("mine")])
    batch_id = create(client, file_id)
    other = openai.OpenAI(base_url=server.base_url, api_key=_other_project_key(server),
                          max_retries=0)  # fmt: skip
    for attempt in (
        lambda: other.files.retrieve(file_id),
        lambda: other.files.content(file_id),
        lambda: other.files.delete(file_id),
        lambda: other.batches.retrieve(batch_id),
        lambda: other.batches.cancel(batch_id),
        lambda: other.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                     completion_window="24h"),
    ):  # fmt: skip
        with pytest.raises(openai.NotFoundError):
            attempt()
    assert file_id not in [f.id for f in other.files.list().data]
    assert batch_id not in [b.id for b in other.batches.list().data]
    assert client.files.retrieve(file_id).id == file_id
    other.close()


# -- the crash ----------------------------------------------------------------------------
def ledger_records(data_dir: Path, prefix: str) -> list[tuple[str, int, str | None]]:
    """``(request_id, status_code, error_type)`` of every usage record under ``prefix``."""
    with contextlib.closing(sqlite3.connect(data_dir / "aiforge.db")) as connection:
        rows = connection.execute(
            "SELECT request_id, status_code, error_type FROM usage_records WHERE request_id LIKE ?",
            (prefix + "%",),
        ).fetchall()
    return [(str(r[0]), int(r[1]), r[2]) for r in rows]


def until_completed(server: RemoteAiforgeServer, batch_id: str, at_least: int) -> int:
    deadline = time.monotonic() + 120
    while (done := raw_batch(server, batch_id)["request_counts"]["completed"]) < at_least:
        assert time.monotonic() < deadline, server.log_tail()
        time.sleep(0.1)
    assert done < 40, "the batch finished before the gateway stopped: make it longer"
    return int(done)


def test_a_batch_survives_a_sigkill_and_a_sigterm_of_the_gateway(tmp_path: Path) -> None:
    """Killed mid-run, then stopped mid-run: every line still has one output line and one
    usage record under its request id (a line the SIGTERM ended, if any, has its refused
    attempt's 503 record under its previous id)."""
    total = 40
    env = {**ENV, "AIFORGE_BATCH_CONCURRENCY": "2"}
    gateway = RemoteAiforgeServer("demo", engine="auto", env=env, data_dir=tmp_path / "data")
    gateway.start()
    try:
        client = gateway.client()
        lines = [chat_line(f"line-{i}", f"about {i}", max_tokens=128) for i in range(total)]
        batch_id = create(client, upload(client, lines))
        done = until_completed(gateway, batch_id, 3)
        gateway.kill()
        gateway.start()
        until_completed(gateway, batch_id, done + 3)
        began = time.monotonic()
        gateway.stop()
        assert gateway.process is not None
        assert gateway.process.returncode == 0, gateway.log_tail()
        assert time.monotonic() - began < 15, gateway.log_tail()
        gateway.start()
        batch = wait_done(gateway, batch_id, timeout_s=300)
        outputs = file_lines(gateway.client(), batch.get("output_file_id"))
        errors = file_lines(gateway.client(), batch.get("error_file_id"))
    finally:
        gateway.stop()  # SIGTERM: the ledger flushes its journal
    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": total, "completed": total, "failed": 0}
    assert errors == []
    assert Counter(o["custom_id"] for o in outputs) == Counter(f"line-{i}" for i in range(total))
    request_ids = {o["response"]["request_id"] for o in outputs}
    records = ledger_records(gateway.data_dir, batch_id)
    counts = Counter(request_id for request_id, _, _ in records)
    assert {rid: counts[rid] for rid in request_ids if counts[rid] != 1} == {}
    others = [r for r in records if r[0] not in request_ids]
    assert all(status == 503 and error == "shutting_down" for _, status, error in others), others
