"""The controller: one loop that keeps every deployment's replicas matching its spec.

Each tick (every ``tick_s``, and at once after :meth:`Controller.wake`) it

1. reads the desired deployments from its :class:`~aiforge.cluster.sources.DeploymentSource`
   (a failing source keeps the last good answer: a database hiccup must not undeploy);
2. probes the replicas that have something to say (concurrently, bounded) and folds the
   answers into their records (:mod:`aiforge.cluster.reconcile` observations);
3. plans (:func:`~aiforge.cluster.reconcile.plan_actions`) and applies the actions. Starts
   and stops run as background tasks — a start may download a model for minutes — so a
   tick never waits on a replica;
4. publishes the routable view to the :class:`~aiforge.router.directory.ReplicaDirectory`
   when it changed.

It owns the replica records and is their only writer; records are replaced, never mutated,
so a probe answer that raced with a start or a stop is recognised as stale and dropped. It
is never on the request path (Ray Serve's controller is the model).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from aiforge.cluster.deployments import DeploymentSpec
from aiforge.cluster.health import EndpointProber, HttpEndpointProber, endpoint_base
from aiforge.cluster.reconcile import (
    Action,
    AttachEndpoint,
    DrainReplica,
    ReconcileConfig,
    RemoveReplica,
    RestartReplica,
    StartReplica,
    StopReplica,
    Transition,
    draining,
    launching,
    observe_crash,
    observe_probe,
    observe_started,
    plan_actions,
    replica_age,
    stopped,
)
from aiforge.cluster.replicas import Replica, ReplicaState
from aiforge.cluster.runtimes.base import ReplicaProbe, ReplicaStartError, Runtime
from aiforge.cluster.sources import DeploymentSource
from aiforge.engines.registry import ENGINE_NAMES, engine_class
from aiforge.router.directory import DeploymentRoute, ReplicaDirectory, RoutableReplica

__all__ = ["Controller", "ControllerConfig", "SettleError"]

logger = logging.getLogger(__name__)

S = ReplicaState
Clock = Callable[[], float]
Progress = Callable[[str], None]
_PROBED_MANAGED = frozenset({S.STARTING, S.READY, S.UNHEALTHY, S.DRAINING})
_PROBED_EXTERNAL = frozenset({S.PENDING, S.READY, S.UNHEALTHY})


@dataclass(frozen=True, slots=True)
class ControllerConfig:
    reconcile: ReconcileConfig = field(default_factory=ReconcileConfig)
    tick_s: float = 1.0
    probe_concurrency: int = 16
    stop_grace_s: float = 10.0
    """SIGTERM to SIGKILL, for replicas the controller stops."""
    settle_report_every_s: float = 10.0


class SettleError(RuntimeError):
    """A deployment cannot serve: every replica of it failed (the message says why)."""


class Controller:
    """Reconciles desired deployments with replicas (:class:`~.sources.ControlPlane`).

    ``clock`` stamps the records (a fake one in tests); the loop itself sleeps in real time.
    ``prober`` looks at external replicas (attached by URL).
    """

    def __init__(
        self,
        source: DeploymentSource,
        runtime: Runtime,
        directory: ReplicaDirectory,
        *,
        config: ControllerConfig | None = None,
        clock: Clock = time.monotonic,
        progress: Progress | None = None,
        prober: EndpointProber | None = None,
    ) -> None:
        self.source = source
        self.runtime = runtime
        self.directory = directory
        self.config = config or ControllerConfig()
        self._clock = clock
        self._progress = progress
        self._prober = prober or HttpEndpointProber()
        self._replicas: dict[str, Replica] = {}
        self._desired: dict[str, DeploymentSpec] = {}
        self._known: dict[str, DeploymentSpec] = {}
        """The last spec of every deployment that still has records (undeployed ones too)."""
        self._next_ordinal: dict[str, int] = {}
        self._tasks: dict[str, tuple[str, asyncio.Task[None]]] = {}
        self._context_asked: set[str] = set()
        """Each replica's latest start or stop, by kind; the next one waits for it."""
        self._published: tuple[DeploymentRoute, ...] | None = None
        self._source_error = ""
        self._lock = asyncio.Lock()
        self._wakeup = asyncio.Event()
        self._tick = asyncio.Event()
        self._ticks = 0
        self._closing = False

    # -- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        """Reconcile every ``tick_s`` and on :meth:`wake`, until cancelled or shut down."""
        while not self._closing:
            self._wakeup.clear()
            try:
                await self.reconcile_once()
            except Exception:  # a bug in one tick must not stop the fleet's supervision
                logger.exception("reconcile failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=self.config.tick_s)

    def wake(self) -> None:
        """Desired state changed: reconcile now rather than at the next tick."""
        self._wakeup.set()

    async def reconcile_once(self) -> None:
        """One tick: read, probe, plan, act, publish."""
        async with self._lock:
            if self._closing:
                return
            await self._read_desired()
            await self._observe()
            now = self._clock()
            actions = plan_actions(
                list(self._desired.values()), list(self._replicas.values()),
                now=now, loads=self._loads(), config=self.config.reconcile,
            )  # fmt: skip
            for action in actions:
                self._apply(action, now)
            self._publish()
        self._ticks += 1
        tick, self._tick = self._tick, asyncio.Event()
        tick.set()

    async def _read_desired(self) -> None:
        try:
            specs = await self.source.list_deployments()
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            if message != self._source_error:
                self._say(f"cannot read deployments ({message}); keeping the last known ones")
            self._source_error = message
            return
        if self._source_error:
            self._say("deployments readable again")
            self._source_error = ""
        self._desired = {spec.name: spec for spec in specs}
        self._known.update(self._desired)

    async def _observe(self) -> None:
        limit = asyncio.Semaphore(self.config.probe_concurrency)

        async def look(replica: Replica) -> tuple[Replica, ReplicaProbe, int | None]:
            async with limit:
                try:
                    if replica.external:
                        probe = await self._prober.probe(endpoint_base(replica.url))
                    else:
                        probe = await self.runtime.probe(replica.id)
                    return replica, probe, await self._context_length(replica, probe)
                except Exception as exc:  # a probe bug reads as a failed health check
                    failed = ReplicaProbe(alive=True, healthy=False, detail=str(exc))
                    return replica, failed, None

        seen = await asyncio.gather(*(look(r) for r in self._replicas.values() if _probed(r)))
        now = self._clock()
        for snapshot, probe, context in seen:
            if self._replicas.get(snapshot.id) is not snapshot:
                continue  # started, stopped or crashed while we looked: the answer is stale
            tail = self._tail_reader(snapshot.id)
            transition = observe_probe(
                snapshot, probe, now=now, config=self.config.reconcile, log_tail=tail
            )
            if context is not None:
                transition = replace(
                    transition, replica=replace(transition.replica, max_model_len=context)
                )
            self._commit(transition)

    async def _context_length(self, replica: Replica, probe: ReplicaProbe) -> int | None:
        """Once per replica, when it first answers healthy: the context length it reports,
        which the gateway needs to bound requests that set no ``max_tokens``."""
        if not probe.healthy or replica.id in self._context_asked:
            return None
        self._context_asked.add(replica.id)
        return await self._prober.context_length(endpoint_base(replica.url))

    def _tail_reader(self, replica_id: str) -> Callable[[], str]:
        return lambda: self.runtime.log_tail(replica_id)

    def _commit(self, transition: Transition) -> None:
        replica = transition.replica
        self._replicas[replica.id] = replica
        if transition.event:
            self._say(transition.event)
        if transition.release and not replica.external:
            self._stop_process(replica.id)

    def _loads(self) -> dict[str, int]:
        return {r.id: self.directory.in_flight(r.deployment, r.id) for r in self._replicas.values()}

    # -- actions ---------------------------------------------------------------------------

    def _apply(self, action: Action, now: float) -> None:
        match action:
            case StartReplica(deployment, revision):
                spec = self._desired[deployment]
                replica = Replica(
                    id=self._new_id(deployment), deployment=deployment, revision=revision,
                    state=S.STARTING, created_at=now,
                )  # fmt: skip
                self._replicas[replica.id] = launching(replica)
                self._say(f"replica {replica.id}: starting {spec.model} (revision {revision})")
                self._start_process(replica.id, spec)
            case RestartReplica(replica_id):
                replica = self._replicas[replica_id]
                self._replicas[replica_id] = launching(replica)
                self._say(f"replica {replica_id}: restarting (restart {replica.restarts})")
                self._start_process(replica_id, self._desired[replica.deployment])
            case AttachEndpoint(deployment, revision, url):
                engine = self._desired[deployment].engine
                replica = Replica(
                    id=self._new_id(deployment), deployment=deployment, revision=revision,
                    url=url, engine=engine, dialect=_dialect_of(engine), node="external",
                    external=True, created_at=now,
                )  # fmt: skip
                self._replicas[replica.id] = replica
                self._say(f"replica {replica.id}: attaching to {url}")
            case DrainReplica(replica_id, reason):
                self._replicas[replica_id] = draining(self._replicas[replica_id], now=now)
                self._say(f"replica {replica_id}: draining ({reason})")
            case StopReplica(replica_id, reason):
                replica = self._replicas[replica_id]
                self._replicas[replica_id] = stopped(replica, now=now)
                self._say(f"replica {replica_id}: stopped ({reason})")
                if not replica.external:
                    self._stop_process(replica_id)
            case RemoveReplica(replica_id):
                del self._replicas[replica_id]
                self._tasks.pop(replica_id, None)

    def _new_id(self, deployment: str) -> str:
        ordinal = self._next_ordinal.get(deployment, 0)
        self._next_ordinal[deployment] = ordinal + 1
        return f"{deployment}-{ordinal}"

    def _start_process(self, replica_id: str, spec: DeploymentSpec) -> None:
        previous = self._tasks.get(replica_id)
        task = asyncio.create_task(self._start(replica_id, spec, previous), name=replica_id)
        self._tasks[replica_id] = ("start", task)

    def _stop_process(self, replica_id: str) -> None:
        previous = self._tasks.get(replica_id)
        if previous is not None and previous[0] == "start":
            previous[1].cancel()  # a start still preparing (downloading) is abandoned
        task = asyncio.create_task(self._stop(replica_id, previous), name=replica_id)
        self._tasks[replica_id] = ("stop", task)

    async def _start(
        self, replica_id: str, spec: DeploymentSpec, previous: tuple[str, asyncio.Task[None]] | None
    ) -> None:
        if previous is not None:
            await asyncio.wait([previous[1]])  # the previous process must be gone first
        try:
            running = await self.runtime.start(replica_id, spec, self._say)
        except ReplicaStartError as exc:
            self._start_failed(replica_id, str(exc))
            return
        except Exception as exc:
            logger.exception("starting replica %s failed", replica_id)
            self._start_failed(replica_id, f"{type(exc).__name__}: {exc}")
            return
        replica = self._replicas.get(replica_id)
        if replica is None or replica.state != S.STARTING or replica.started_at is not None:
            await self.runtime.stop(replica_id, grace_s=self.config.stop_grace_s)
            return  # taken out while it was starting
        self._commit(observe_started(replica, running, now=self._clock()))
        self.wake()

    def _start_failed(self, replica_id: str, reason: str) -> None:
        replica = self._replicas.get(replica_id)
        if replica is not None and replica.state == S.STARTING and replica.started_at is None:
            now = self._clock()
            self._commit(
                observe_crash(replica, now=now, config=self.config.reconcile, reason=reason)
            )
        self.wake()

    async def _stop(self, replica_id: str, previous: tuple[str, asyncio.Task[None]] | None) -> None:
        if previous is not None:
            await asyncio.wait([previous[1]])
        try:
            await self.runtime.stop(replica_id, grace_s=self.config.stop_grace_s)
        except Exception:
            logger.exception("stopping replica %s failed", replica_id)

    # -- the directory ---------------------------------------------------------------------

    def _publish(self) -> None:
        """Push the routable view when it changed. Draining replicas stay in it (so the
        gateway keeps counting their in-flight requests), and so does an undeployed
        deployment while it drains, visible to no project."""
        by_deployment: dict[str, list[Replica]] = {}
        for replica in sorted(self._replicas.values(), key=replica_age):
            if replica.state != S.STOPPED:
                by_deployment.setdefault(replica.deployment, []).append(replica)
        for name in [n for n in self._known if n not in self._desired]:
            if not any(r.deployment == name for r in self._replicas.values()):
                del self._known[name]
        routes = []
        for name in sorted(self._desired.keys() | by_deployment.keys()):
            spec = self._desired.get(name) or self._known[name]
            projects = spec.projects if name in self._desired else frozenset()
            members = by_deployment.get(name, [])
            replicas = tuple(_routable(r) for r in members)
            routes.append(
                DeploymentRoute(name, spec.policy, replicas, projects, _context_of(spec, members))
            )
        published = tuple(routes)
        if published != self._published:
            self.directory.publish(published)
            self._published = published

    # -- reading ---------------------------------------------------------------------------

    def replicas_of(self, deployment: str) -> list[dict[str, object]]:
        """The deployment's replicas as ``aiforge status`` shows them, with live load."""
        now = self._clock()
        return [
            r.public(
                now=now,
                in_flight=self.directory.in_flight(deployment, r.id),
                tokens_per_s=self.directory.tokens_per_s(deployment, r.id),
            )
            for r in sorted(self._replicas.values(), key=replica_age)
            if r.deployment == deployment
        ]

    def status(self) -> list[dict[str, object]]:
        """Every deployment (desired, or undeployed and still draining) with its replicas,
        shaped like the admin API's deployment (``name``, ``spec``, ``revision``,
        ``ready_replicas``, ``replicas``) plus ``undeployed``."""
        out: list[dict[str, object]] = []
        for name in sorted(self._desired.keys() | self._known.keys()):
            spec = self._desired.get(name) or self._known[name]
            replicas = self.replicas_of(name)
            out.append(
                {
                    "name": name,
                    "spec": spec.to_dict(),
                    "revision": spec.revision(),
                    "ready_replicas": sum(1 for r in replicas if r["state"] == "ready"),
                    "replicas": replicas,
                    "undeployed": name not in self._desired,
                }
            )
        return out

    def records(self) -> list[Replica]:
        """The replica records, oldest first (read-only copies would cost; do not mutate)."""
        return sorted(self._replicas.values(), key=replica_age)

    # -- start-up and shutdown -------------------------------------------------------------

    async def wait_until_settled(
        self,
        names: Iterable[str] | None = None,
        *,
        timeout_s: float = 900.0,
        progress: Progress | None = None,
    ) -> None:
        """Return once every named deployment (default: all) has its target of ready
        replicas, or has failed replicas and none still starting. Needs :meth:`run` going.

        Raises :class:`SettleError` when a deployment has no ready replica and every one of
        them failed (with the failed replica's error), or names an unknown deployment;
        :class:`TimeoutError` after ``timeout_s``.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        report_at = loop.time() + self.config.settle_report_every_s
        wanted = list(names) if names is not None else None
        while True:
            waiting = self._unsettled(wanted) if self._ticks else ["the first reconcile"]
            if not waiting:
                return
            now = loop.time()
            if now >= deadline:
                raise TimeoutError(f"not ready after {timeout_s:.0f}s: {'; '.join(waiting)}")
            if progress is not None and now >= report_at:
                progress(f"waiting for {'; '.join(waiting)}")
                report_at = now + self.config.settle_report_every_s
            tick = self._tick
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(tick.wait(), timeout=min(deadline, report_at) - now)

    def _unsettled(self, names: Sequence[str] | None) -> list[str]:
        waiting = []
        for name in names if names is not None else sorted(self._desired):
            spec = self._desired.get(name)
            if spec is None:
                raise SettleError(f"no deployment named {name!r}")
            verdict = self._settlement(spec)
            if verdict:
                waiting.append(verdict)
        return waiting

    def _settlement(self, spec: DeploymentSpec) -> str:
        """Empty when settled, else what it waits for; raises when it can never serve."""
        current = [r for r in self._replicas.values() if _is_current(r, spec)]
        target = len(set(spec.endpoints)) if spec.external else spec.replicas
        ready = sum(1 for r in current if r.state == S.READY)
        busy = [r for r in current if r.state in (S.PENDING, S.STARTING)]
        failed = [r for r in current if r.state == S.FAILED]
        if ready >= target or (spec.external and not busy and len(current) >= target):
            return ""
        if failed and not busy:
            if ready == 0:
                raise SettleError(f"deployment {spec.name} cannot start: {failed[0].last_error}")
            return ""
        states = ", ".join(f"{r.id} {r.state.value}" for r in sorted(current, key=replica_age))
        return f"{spec.name}: {ready}/{target} ready ({states or 'none yet'})"

    async def shutdown(self, grace_s: float) -> None:
        """Drain every replica (at most ``grace_s``), then stop all it started. Final."""
        async with self._lock:
            self._closing = True
            now = self._clock()
            for replica in list(self._replicas.values()):
                if replica.state in (S.READY, S.UNHEALTHY):
                    self._replicas[replica.id] = draining(replica, now=now)
            self._publish()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while any(self._loads().values()):  # the gateway's in-flight requests finish
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await asyncio.sleep(min(0.05, remaining))
        async with self._lock:
            now = self._clock()
            for replica in list(self._replicas.values()):
                if replica.state != S.STOPPED:
                    self._replicas[replica.id] = stopped(replica, now=now)
                    if not replica.external:
                        self._stop_process(replica.id)
            self._publish()
        await self.wait_for_tasks()
        await self._prober.aclose()

    async def wait_for_tasks(self) -> None:
        """Wait until the starts and stops in flight now have finished (tests, shutdown)."""
        tasks = [task for _, task in self._tasks.values() if not task.done()]
        if tasks:
            await asyncio.wait(tasks)

    def _say(self, line: str) -> None:
        if self._progress is not None:
            self._progress(line)
        else:
            logger.info("%s", line)


def _probed(replica: Replica) -> bool:
    if replica.external:
        return replica.state in _PROBED_EXTERNAL
    if replica.state == S.STARTING:
        return replica.started_at is not None  # else it is still being prepared
    return replica.state in _PROBED_MANAGED


def _is_current(replica: Replica, spec: DeploymentSpec) -> bool:
    if replica.deployment != spec.name:
        return False
    if spec.external:
        return replica.external and replica.url in spec.endpoints
    return not replica.external and replica.revision == spec.revision()


def _routable(replica: Replica) -> RoutableReplica:
    url = endpoint_base(replica.url) if replica.url else ""
    return RoutableReplica(replica.id, url, replica.state.value, replica.dialect, replica.node)


def _context_of(spec: DeploymentSpec, replicas: Sequence[Replica]) -> int | None:
    """The deployment's context length: its spec's, else the smallest its replicas report."""
    reported = [r.max_model_len for r in replicas if r.max_model_len]
    return spec.max_model_len or (min(reported) if reported else None)


def _dialect_of(engine: str) -> str:
    """The dialect an external replica speaks, from the engine its spec names."""
    return engine_class(engine).dialect if engine in ENGINE_NAMES else "openai"
