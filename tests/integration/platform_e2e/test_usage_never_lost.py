"""Issue 3, done when: after 2,000 mixed requests with the gateway killed with SIGKILL once
mid-load and restarted, the usage ledger holds exactly one record per request that reached
a replica, and token totals equal what the clients received.

Real processes: a tiny chat replica and a tiny embedding replica (transformers engine), one
``aiforge serve --replica-url ... --replica-url ...`` gateway on a fresh PostgreSQL database.
Sixteen sequential workers (one key each) send the mix of :mod:`mixed_load`: chat and
completions, streamed with and without ``include_usage``, streams the client hangs up on,
embeddings, errors the replica answers (400) and errors the gateway answers (404). After
about a third of the load the gateway is SIGKILLed and restarted on the same data dir; the
workers retry while it is down. A clean stop then flushes the journal, and
:mod:`reconcile` compares the ledger with the clients' log.

A request in flight at the moment of the kill is "cut" and retried as a new request. The
gateway journaled an opened entry before sending it to the replica, so the restart's
replay gives it exactly one record (``gateway_crashed``, status 502, the prompt estimate);
a try cut after its response headers (a stream) is checked by its ``x-request-id``. Every
request the client saw answered has exactly one record, matched by ``x-request-id``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import httpx
import pytest
from mixed_load import PROMPTS, LoadLog, kill_and_restart_when, run_worker
from platform_e2e_support import (
    CHAT_MODEL,
    ProjectKeys,
    RunningReplica,
    gateway,
    ledger_rows,
    new_admin_key,
    provision,
    wait_until_key_works,
)
from reconcile import reconcile

from aiforge.testing.server import RemoteAiforgeServer

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

REQUESTS = 2_000
WORKERS = 16
KILL_AFTER = 700


def _prompt_tokens(base_url: str, key: str) -> dict[str, int]:
    """Each prompt's size as the replica counts it (a non-streamed call per prompt)."""
    sizes = {}
    with httpx.Client(base_url=base_url, timeout=60.0) as http:
        for prompt in PROMPTS:
            body = {
                "model": CHAT_MODEL,
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": 1,
            }
            response = http.post(
                "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
            )
            assert response.status_code == 200, response.text
            sizes[prompt] = response.json()["usage"]["prompt_tokens"]
    return sizes


async def _load(
    server: RemoteAiforgeServer, project: ProjectKeys, database_url: str
) -> tuple[LoadLog, int, int]:
    """Run the load with one SIGKILL + restart; also returns how many requests had finished
    at the kill and how many of the workers' records were in the database at that moment."""
    log = LoadLog(milestone=KILL_AFTER)
    worker_keys = [str(k["id"]) for k in project.keys[:WORKERS]]
    workers = [
        run_worker(server.url, project.keys[w], list(range(w, REQUESTS, WORKERS)), log)
        for w in range(WORKERS)
    ]
    chaos = asyncio.create_task(
        kill_and_restart_when(
            log, server.kill, server.start, lambda: len(ledger_rows(database_url, worker_keys))
        )
    )
    await asyncio.gather(*workers)
    finished_at_kill, flushed_at_kill = await chaos
    return log, finished_at_kill, flushed_at_kill


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_no_usage_record_is_lost_or_doubled_across_a_sigkill(
    chat_replica: RunningReplica,
    embedding_replica: RunningReplica,
    database_url: str,
    tmp_path: Path,
) -> None:
    admin_key = new_admin_key()
    server = gateway(
        tmp_path / "gateway",
        [chat_replica, embedding_replica],
        admin_key=admin_key,
        env={"AIFORGE_DATABASE_URL": database_url},
    )
    with server:
        # keys[0..15]: the workers; keys[16]: calibration; keys[17]: the sentinel.
        project = provision(server.url, admin_key, name="ledger", key_count=WORKERS + 1)
        wait_until_key_works([server.url], project.keys[-1]["key"])
        prompt_tokens = _prompt_tokens(server.url, project.keys[WORKERS]["key"])
        log, finished_at_kill, flushed_at_kill = asyncio.run(_load(server, project, database_url))
    # Leaving the block stopped the gateway with SIGTERM: it flushed its journal.

    worker_keys = [str(k["id"]) for k in project.keys[:WORKERS]]
    rows = ledger_rows(database_url, worker_keys)
    result = reconcile(log.attempts, rows, prompt_tokens)

    outcomes = Counter(a.outcome for a in log.attempts)
    summary = (
        f"{REQUESTS} requests, tries {dict(outcomes)}, {len(rows)} rows, killed after "
        f"{finished_at_kill} ({flushed_at_kill} rows in the database then; the journal "
        f"replay at restart added the rest), hung-up streams {result.hung_up} "
        f"({result.hung_up_exact} metered exactly what the client read), "
        f"{result.crashed} cut tries with a crash record"
    )
    print(summary)
    assert log.finished_requests == REQUESTS
    assert finished_at_kill < REQUESTS, "the kill came after the load: " + summary
    assert flushed_at_kill <= finished_at_kill + WORKERS, summary
    assert outcomes["unreached"] + outcomes["cut"] > 0, "no client saw the gateway down"
    assert result.crashed > 0, "requests in flight at the SIGKILL have their record: " + summary
    assert not result.problems, summary + "\n" + "\n".join(result.problems[:40])
    assert result.ledger_tokens == result.client_tokens, summary
    assert result.hung_up > 0
    kinds = Counter(a.request.kind for a in log.attempts if a.outcome == "answered")
    assert len(kinds) == 9, f"every kind of request was answered: {kinds}"
