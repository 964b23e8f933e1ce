"""ReplicaTable choice and the health monitor's state transitions."""

from __future__ import annotations

import httpx

from aiforge.cluster.health import ReplicaHealthMonitor
from aiforge.cluster.replicas import Replica, ReplicaState, ReplicaTable


def _table(*states: ReplicaState) -> ReplicaTable:
    table = ReplicaTable()
    for i, state in enumerate(states):
        table.add(Replica(id=f"r{i}", model="m", url=f"http://r{i}", state=state))
    return table


def test_candidates_are_ready_least_loaded_and_rotate_among_equals() -> None:
    table = _table(ReplicaState.READY, ReplicaState.READY, ReplicaState.DEAD, ReplicaState.READY)
    table.add(Replica(id="other", model="x", url="http://o", state=ReplicaState.READY))
    firsts = {table.candidates("m")[0].id for _ in range(6)}
    assert firsts == {"r0", "r1", "r3"}
    table.get("r0").in_flight = 0
    table.get("r1").in_flight = 2
    table.get("r3").in_flight = 1
    assert [r.id for r in table.candidates("m")] == ["r0", "r3", "r1"]
    assert table.candidates("nope") == []


def test_models_include_down_replicas_but_not_stopped_ones() -> None:
    table = _table(ReplicaState.DEAD)
    table.add(Replica(id="s", model="gone", url="http://s", state=ReplicaState.STOPPED))
    assert table.models() == ["m"]
    assert table.serves("m")
    assert not table.serves("gone")


async def test_monitor_marks_down_revives_and_respects_liveness() -> None:
    table = _table(ReplicaState.STARTING, ReplicaState.READY, ReplicaState.READY)
    up = {"http://r0", "http://r2"}

    def answer(request: httpx.Request) -> httpx.Response:
        base = f"{request.url.scheme}://{request.url.host}"
        if base not in up:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json={"status": "ok"})

    alive = {"r2": True}
    monitor = ReplicaHealthMonitor(table, liveness={"r2": lambda: alive["r2"]})
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        await monitor.check_once(client)
        assert [r.state for r in table] == [ReplicaState.READY, ReplicaState.UNHEALTHY,
                                            ReplicaState.READY]  # fmt: skip
        assert "ConnectError" in table.get("r1").last_error
        up.add("http://r1")
        alive["r2"] = False
        await monitor.check_once(client)
    assert [r.state for r in table] == [ReplicaState.READY, ReplicaState.READY,
                                        ReplicaState.DEAD]  # fmt: skip
