"""The controller's decisions: pure functions of desired state, replica records and time.

Nothing here does I/O, sleeps or awaits; :mod:`aiforge.cluster.controller` is the loop
around it (it probes, calls the runtime, and feeds the results back in). Two kinds of
function:

* **observations** turn what the controller saw (a probe, a start that returned or
  failed) into the replica's next record, plus the progress line to show, if any:
  :func:`observe_started`, :func:`observe_probe`, :func:`observe_crash`;
* **planning**, :func:`plan_actions`, compares desired deployments with the records and
  returns the :data:`Action` s that move one towards the other.

Planning is level-triggered and idempotent: it looks only at the current records, so
calling it twice on the same state gives the same actions, and once they are applied the
next plan asks for nothing more. The rules it follows:

* **scale up**: start the missing replicas of the current revision. A ``failed`` replica
  keeps its slot (it is not restarted, nor replaced) until the revision changes or the
  deployment scales it away, so a model that cannot start is not retried forever.
* **scale down**: take out the extras, cheapest first: failed, pending, starting,
  unhealthy, then the ready ones with the fewest requests in flight, newest first. Ready
  and unhealthy replicas *drain* (no new requests; stopped when their in-flight requests
  end or after ``drain_timeout_s``); the others stop at once.
* **rolling update** (the revision changed): surge of ``max_surge`` — start new-revision
  replicas while at most ``target + max_surge`` run, and drain an old ready replica only
  when the ready count stays at or above the target without it. New replicas that fail
  therefore never drain old ready ones; old replicas that serve nothing go at once.
* **undeploy**: every replica of a deployment no longer desired is taken out.
* **external endpoints** (``spec.endpoints``): one record per URL, attached and probed,
  never started or stopped through the runtime.
* stopped records are forgotten after ``forget_stopped_after_s``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from aiforge.cluster.deployments import DeploymentSpec
from aiforge.cluster.replicas import Replica, ReplicaState
from aiforge.cluster.runtimes.base import ReplicaProbe, RunningReplica

__all__ = [
    "Action",
    "AttachEndpoint",
    "DrainReplica",
    "ReconcileConfig",
    "RemoveReplica",
    "RestartReplica",
    "StartReplica",
    "StopReplica",
    "Transition",
    "draining",
    "launching",
    "observe_crash",
    "observe_probe",
    "observe_started",
    "plan_actions",
    "replica_age",
    "stopped",
]

S = ReplicaState


@dataclass(frozen=True, slots=True)
class ReconcileConfig:
    """The knobs of the replica lifecycle (times in seconds of the controller's clock)."""

    restart_backoff_base_s: float = 1.0
    restart_backoff_cap_s: float = 60.0
    max_consecutive_failures: int = 5
    """Crashes in a row after which a replica is ``failed`` and no longer restarted."""
    stable_after_s: float = 60.0
    """A replica ready this long has its crash count reset."""
    startup_timeout_s: float = 300.0
    """For replicas whose runtime gave no timeout of its own."""
    unhealthy_after: int = 3
    """Consecutive failed health checks that take a ready replica out of routing."""
    restart_unhealthy_after_s: float = 30.0
    """An unhealthy replica still down after this long is restarted (a crash)."""
    drain_timeout_s: float = 30.0
    forget_stopped_after_s: float = 300.0
    max_surge: int = 1
    """Extra replicas a rolling update may run above the target."""

    def backoff_s(self, crashes: int) -> float:
        """The wait before restarting after the ``crashes``-th crash in a row (1-based)."""
        exponent = max(0, crashes - 1)
        return min(self.restart_backoff_base_s * 2.0**exponent, self.restart_backoff_cap_s)


# -- actions -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartReplica:
    """Create a replica record of ``revision`` and start its process."""

    deployment: str
    revision: str


@dataclass(frozen=True, slots=True)
class RestartReplica:
    """Start the process of a pending replica whose restart backoff has elapsed."""

    replica_id: str


@dataclass(frozen=True, slots=True)
class AttachEndpoint:
    """Create the record of an external replica at ``url`` (probed, never started)."""

    deployment: str
    revision: str
    url: str


@dataclass(frozen=True, slots=True)
class DrainReplica:
    """Stop routing to the replica; it is stopped once its in-flight requests end."""

    replica_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class StopReplica:
    """Stop the replica's process now (a no-op for external and never-started ones)."""

    replica_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class RemoveReplica:
    """Forget a stopped replica's record."""

    replica_id: str


Action = StartReplica | RestartReplica | AttachEndpoint | DrainReplica | StopReplica | RemoveReplica


# -- observations --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transition:
    """A replica's next record after an observation."""

    replica: Replica
    event: str = ""
    """A progress line for the user when something worth saying happened; else empty."""
    release: bool = False
    """The runtime must release the replica's process: it crashed, hung or exited."""


def launching(replica: Replica) -> Replica:
    """The record once the controller has asked the runtime to start it: ``starting``
    with no process yet (the runtime may first download the model for minutes)."""
    return replace(
        replica, state=S.STARTING, url="" if not replica.external else replica.url, pid=None,
        started_at=None, ready_at=None, health_failures=0, unhealthy_since=None,
    )  # fmt: skip


def observe_started(replica: Replica, running: RunningReplica, *, now: float) -> Transition:
    """The runtime spawned the process: it is ``starting`` until its health check passes."""
    updated = replace(
        replica, state=S.STARTING, url=running.url, pid=running.pid, node=running.node,
        engine=running.engine, dialect=running.dialect, started_at=now,
        startup_timeout_s=running.startup_timeout_s,
    )  # fmt: skip
    pid = f"pid {running.pid}" if running.pid is not None else running.node
    return Transition(updated, f"replica {replica.id}: process started ({pid}), {running.url}")


def observe_crash(
    replica: Replica, *, now: float, config: ReconcileConfig, reason: str, log_tail: str = ""
) -> Transition:
    """The replica's process died, hung at start-up, stayed unhealthy, or could not start.

    It goes back to ``pending`` with an exponential backoff, or to ``failed`` (not restarted
    again) after ``max_consecutive_failures`` crashes in a row, keeping its log tail.
    """
    crashes = replica.consecutive_failures + 1
    error = f"{reason}\n{log_tail}" if log_tail.strip() else reason
    if crashes >= config.max_consecutive_failures:
        updated = replace(
            replica, state=S.FAILED, consecutive_failures=crashes, last_error=error,
            health_failures=0, unhealthy_since=None, ready_at=None,
        )  # fmt: skip
        detail = _last_line(log_tail) or _first_line(reason)
        return Transition(
            updated, f"replica {replica.id} failed after {crashes} crashes: {detail}", True
        )
    wait = config.backoff_s(crashes)
    updated = replace(
        replica, state=S.PENDING, consecutive_failures=crashes, restarts=replica.restarts + 1,
        next_start_at=now + wait, last_error=error, health_failures=0, unhealthy_since=None,
        ready_at=None,
    )  # fmt: skip
    event = (
        f"replica {replica.id} crashed ({_first_line(reason)}); restarting in {wait:.3g}s "
        f"(restart {updated.restarts})"
    )
    return Transition(updated, event, release=True)


def observe_probe(
    replica: Replica,
    probe: ReplicaProbe,
    *,
    now: float,
    config: ReconcileConfig,
    log_tail: Callable[[], str] = lambda: "",
) -> Transition:
    """Fold one probe into the record. ``log_tail`` is read only if the replica crashed."""
    if replica.external:
        return _observe_endpoint(replica, probe, now=now, config=config)
    if replica.state == S.DRAINING and not probe.alive:
        event = f"replica {replica.id}: exited while draining ({_exit(probe)})"
        return Transition(replace(replica, state=S.STOPPED, stopped_at=now), event, True)
    if replica.state not in (S.STARTING, S.READY, S.UNHEALTHY) or replica.started_at is None:
        return Transition(replica)  # nothing runs yet, or nothing to learn from a probe
    if not probe.alive:
        crash_reason = _exit(probe)
        return observe_crash(
            replica, now=now, config=config, reason=crash_reason, log_tail=log_tail()
        )
    if replica.state == S.STARTING:
        return _observe_starting(replica, probe, now=now, config=config, log_tail=log_tail)
    return _observe_serving(replica, probe, now=now, config=config, log_tail=log_tail)


def _observe_starting(
    replica: Replica,
    probe: ReplicaProbe,
    *,
    now: float,
    config: ReconcileConfig,
    log_tail: Callable[[], str],
) -> Transition:
    assert replica.started_at is not None
    elapsed = now - replica.started_at
    if probe.healthy:
        updated = replace(replica, state=S.READY, ready_at=now, health_failures=0)
        return Transition(updated, f"replica {replica.id}: ready after {elapsed:.1f}s")
    timeout = replica.startup_timeout_s or config.startup_timeout_s
    if elapsed > timeout:
        reason = f"not healthy after {timeout:.0f}s"
        return observe_crash(replica, now=now, config=config, reason=reason, log_tail=log_tail())
    return Transition(replica)


def _observe_serving(
    replica: Replica,
    probe: ReplicaProbe,
    *,
    now: float,
    config: ReconcileConfig,
    log_tail: Callable[[], str],
) -> Transition:
    """A ready or unhealthy replica whose process is alive."""
    if probe.healthy:
        stable = replica.ready_at is not None and now - replica.ready_at >= config.stable_after_s
        failures = 0 if stable else replica.consecutive_failures
        if replica.state == S.UNHEALTHY:
            updated = replace(
                replica, state=S.READY, health_failures=0, unhealthy_since=None,
                consecutive_failures=failures,
            )  # fmt: skip
            return Transition(updated, f"replica {replica.id}: healthy again")
        if failures == replica.consecutive_failures and replica.health_failures == 0:
            return Transition(replica)
        return Transition(replace(replica, health_failures=0, consecutive_failures=failures))
    failures = replica.health_failures + 1
    if replica.state == S.READY:
        if failures < config.unhealthy_after:
            return Transition(replace(replica, health_failures=failures))
        updated = replace(replica, state=S.UNHEALTHY, health_failures=failures, unhealthy_since=now)
        event = f"replica {replica.id}: unhealthy ({probe.detail or 'health check failed'})"
        return Transition(updated, event + "; not routed")
    since = replica.unhealthy_since if replica.unhealthy_since is not None else now
    if now - since >= config.restart_unhealthy_after_s:
        reason = f"unhealthy for {now - since:.0f}s: {probe.detail or 'health check failed'}"
        return observe_crash(replica, now=now, config=config, reason=reason, log_tail=log_tail())
    return Transition(replace(replica, health_failures=failures, unhealthy_since=since))


def _observe_endpoint(
    replica: Replica, probe: ReplicaProbe, *, now: float, config: ReconcileConfig
) -> Transition:
    """External replicas: ready while they answer, unhealthy while they do not."""
    if replica.state not in (S.PENDING, S.STARTING, S.READY, S.UNHEALTHY):
        return Transition(replica)
    if probe.healthy:
        if replica.state == S.READY:
            return Transition(
                replace(replica, health_failures=0) if replica.health_failures else replica
            )
        updated = replace(
            replica, state=S.READY, ready_at=now, health_failures=0, unhealthy_since=None,
            started_at=replica.started_at if replica.started_at is not None else now,
        )  # fmt: skip
        return Transition(updated, f"replica {replica.id}: endpoint {replica.url} ready")
    failures = replica.health_failures + 1
    first_look = replica.state in (S.PENDING, S.STARTING)
    if replica.state == S.UNHEALTHY or (not first_look and failures < config.unhealthy_after):
        return Transition(replace(replica, health_failures=failures))
    updated = replace(replica, state=S.UNHEALTHY, health_failures=failures, unhealthy_since=now)
    detail = probe.detail or "health check failed"
    return Transition(updated, f"replica {replica.id}: endpoint {replica.url} unhealthy ({detail})")


def draining(replica: Replica, *, now: float) -> Replica:
    """The record once routing to it has stopped."""
    return replace(replica, state=S.DRAINING, drain_started_at=now)


def stopped(replica: Replica, *, now: float) -> Replica:
    """The record once its process is (being) stopped."""
    return replace(replica, state=S.STOPPED, stopped_at=now, unhealthy_since=None)


def _exit(probe: ReplicaProbe) -> str:
    if probe.exit_code is not None:
        return f"exit {probe.exit_code}"
    return probe.detail or "process gone"


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0][:200] if lines else ""


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip()[:200] if lines else ""


# -- planning ------------------------------------------------------------------------------

_TRAILING_NUMBER = re.compile(r"\d+$")
_TAKE_OUT_ORDER = {S.FAILED: 0, S.PENDING: 1, S.STARTING: 2, S.UNHEALTHY: 3, S.READY: 4}
"""Scale-down victims, cheapest first: what serves nothing goes before what serves."""


def plan_actions(
    desired: Sequence[DeploymentSpec],
    replicas: Sequence[Replica],
    *,
    now: float,
    loads: Mapping[str, int],
    config: ReconcileConfig,
) -> list[Action]:
    """The actions that move ``replicas`` towards ``desired`` (see the module's rules).

    ``loads`` maps replica ids to their requests in flight (missing: none). The result is
    deterministic for a given input, deployments in name order.
    """
    specs = {spec.name: spec for spec in desired}
    records: dict[str, list[Replica]] = {}
    for replica in sorted(replicas, key=replica_age):
        records.setdefault(replica.deployment, []).append(replica)
    actions: list[Action] = []
    for name in sorted(specs.keys() | records.keys()):
        spec = specs.get(name)
        active = [r for r in records.get(name, ()) if r.state not in (S.DRAINING, S.STOPPED)]
        if spec is None:
            actions += (_take_out(r, "undeployed") for r in active)
        elif spec.external:
            actions += _plan_endpoints(spec, active, loads, config)
        else:
            actions += _plan_managed(spec, active, loads, now=now, config=config)
    for replica in sorted(replicas, key=replica_age):
        actions += _plan_leaving(replica, loads, now=now, config=config)
    return actions


def _plan_managed(
    spec: DeploymentSpec,
    active: list[Replica],
    loads: Mapping[str, int],
    *,
    now: float,
    config: ReconcileConfig,
) -> list[Action]:
    revision, target = spec.revision(), spec.replicas
    current = [r for r in active if r.revision == revision and not r.external]
    old = [r for r in active if r not in current]
    actions: list[Action] = []
    excess = len(current) - target
    if excess > 0:
        victims = sorted(current, key=lambda r: _take_out_rank(r, loads))[:excess]
        actions += (_take_out(r, f"scaling down to {target}") for r in victims)
        current = [r for r in current if r not in victims]
    reason = f"replaced by revision {revision}"
    kept_old, old_actions = _retire_old(old, _ready(current), target, loads, reason)
    actions += old_actions
    missing = target - len(current)
    if missing > 0 and kept_old:
        live = sum(1 for r in current if r.live)
        missing = min(missing, max(0, target + config.max_surge - live - kept_old))
    actions += (StartReplica(spec.name, revision) for _ in range(max(0, missing)))
    actions += (
        RestartReplica(r.id) for r in current if r.state == S.PENDING and r.next_start_at <= now
    )
    return actions


def _plan_endpoints(
    spec: DeploymentSpec, active: list[Replica], loads: Mapping[str, int], config: ReconcileConfig
) -> list[Action]:
    """External replicas: exactly one record per endpoint URL."""
    del config  # external replicas have no lifecycle knobs of their own
    urls = list(dict.fromkeys(spec.endpoints))
    attached: dict[str, Replica] = {}
    for replica in active:
        if replica.external and replica.url in urls and replica.url not in attached:
            attached[replica.url] = replica
    others = [r for r in active if r not in attached.values()]
    reason = "endpoint removed from the deployment"
    _, actions = _retire_old(others, _ready(attached.values()), len(urls), loads, reason)
    actions += (
        AttachEndpoint(spec.name, spec.revision(), url) for url in urls if url not in attached
    )
    return actions


def _retire_old(
    old: list[Replica], new_ready: int, target: int, loads: Mapping[str, int], reason: str
) -> tuple[int, list[Action]]:
    """Take out replicas being replaced: those that serve nothing at once, ready ones only
    while ``target`` ready replicas remain. Returns (old ready ones kept, actions)."""
    old_ready = sorted((r for r in old if r.state == S.READY), key=lambda r: _drain_rank(r, loads))
    actions: list[Action] = [_take_out(r, reason) for r in old if r.state != S.READY]
    retire = min(len(old_ready), max(0, new_ready + len(old_ready) - target))
    actions += (DrainReplica(r.id, reason) for r in old_ready[:retire])
    return len(old_ready) - retire, actions


def _plan_leaving(
    replica: Replica, loads: Mapping[str, int], *, now: float, config: ReconcileConfig
) -> list[Action]:
    """Draining replicas stop when idle or out of time; stopped records are forgotten."""
    if replica.state == S.DRAINING:
        in_flight = loads.get(replica.id, 0)
        if in_flight <= 0:
            return [StopReplica(replica.id, "drained")]
        started = replica.drain_started_at if replica.drain_started_at is not None else now
        if now - started >= config.drain_timeout_s:
            reason = f"drain timeout after {config.drain_timeout_s:.0f}s, {in_flight} in flight"
            return [StopReplica(replica.id, reason)]
    elif replica.state == S.STOPPED:
        since = replica.stopped_at if replica.stopped_at is not None else now
        if now - since >= config.forget_stopped_after_s:
            return [RemoveReplica(replica.id)]
    return []


def _take_out(replica: Replica, reason: str) -> Action:
    """Replicas that may hold requests drain; the others stop at once."""
    if replica.state in (S.READY, S.UNHEALTHY):
        return DrainReplica(replica.id, reason)
    return StopReplica(replica.id, reason)


def _ready(replicas: Iterable[Replica]) -> int:
    return sum(1 for r in replicas if r.state == S.READY)


def replica_age(replica: Replica) -> tuple[float, int, str]:
    """Oldest first: creation time, then the id's number (``demo-9`` before ``demo-10``)."""
    number = _TRAILING_NUMBER.search(replica.id)
    return (replica.created_at, int(number.group()) if number else -1, replica.id)


def _drain_rank(replica: Replica, loads: Mapping[str, int]) -> tuple[int, float, int, str]:
    """Fewest requests in flight first, then the newest (it has the least warm cache)."""
    created, number, _ = replica_age(replica)
    return (loads.get(replica.id, 0), -created, -number, replica.id)


def _take_out_rank(replica: Replica, loads: Mapping[str, int]) -> tuple[int, int, float, int, str]:
    return (_TAKE_OUT_ORDER.get(replica.state, 5), *_drain_rank(replica, loads))
