"""The controller's decisions as pure functions: no processes, no event loop, no sleeps."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import pytest

from aiforge.cluster.deployments import DeploymentSpec
from aiforge.cluster.reconcile import (
    Action,
    AttachEndpoint,
    DrainReplica,
    ReconcileConfig,
    RemoveReplica,
    RestartReplica,
    StartReplica,
    StopReplica,
    draining,
    launching,
    observe_crash,
    observe_probe,
    observe_started,
    plan_actions,
    stopped,
)
from aiforge.cluster.replicas import Replica, ReplicaState
from aiforge.cluster.runtimes.base import ReplicaProbe, RunningReplica

S = ReplicaState
CONFIG = ReconcileConfig()
HEALTHY = ReplicaProbe(alive=True, healthy=True)
SICK = ReplicaProbe(alive=True, healthy=False, detail="health 503")
DEAD = ReplicaProbe(alive=False, healthy=False, exit_code=-9)


def spec(
    replicas: int = 1, *, model: str = "m", name: str = "demo", **kw: object
) -> DeploymentSpec:
    return DeploymentSpec(name=name, model=model, replicas=replicas, **kw)  # type: ignore[arg-type]


class World:
    """Replica records and a pure application of actions (what the controller does, minus
    the runtime): started replicas are running at once, probes are scripted."""

    def __init__(self) -> None:
        self.replicas: dict[str, Replica] = {}
        self.now = 0.0
        self.loads: dict[str, int] = {}
        self.ordinal = 0

    def plan(self, desired: Sequence[DeploymentSpec]) -> list[Action]:
        return plan_actions(
            desired, list(self.replicas.values()), now=self.now, loads=self.loads, config=CONFIG
        )

    def apply(self, actions: Sequence[Action]) -> None:
        for action in actions:
            self._apply(action)

    def _apply(self, action: Action) -> None:
        match action:
            case StartReplica(deployment, revision):
                replica = Replica(
                    id=f"{deployment}-{self.ordinal}", deployment=deployment, revision=revision,
                    created_at=self.now,
                )  # fmt: skip
                self.ordinal += 1
                self._launch(replica)
            case RestartReplica(replica_id):
                self._launch(self.replicas[replica_id])
            case AttachEndpoint(deployment, revision, url):
                self.replicas[f"{deployment}-{self.ordinal}"] = Replica(
                    id=f"{deployment}-{self.ordinal}", deployment=deployment, revision=revision,
                    url=url, external=True, created_at=self.now,
                )  # fmt: skip
                self.ordinal += 1
            case DrainReplica(replica_id, _):
                self.replicas[replica_id] = draining(self.replicas[replica_id], now=self.now)
            case StopReplica(replica_id, _):
                self.replicas[replica_id] = stopped(self.replicas[replica_id], now=self.now)
            case RemoveReplica(replica_id):
                del self.replicas[replica_id]

    def _launch(self, replica: Replica) -> None:
        running = RunningReplica(
            replica.id, replica.deployment, f"http://{replica.id}", "e", "openai"
        )
        started = observe_started(launching(replica), running, now=self.now).replica
        self.replicas[replica.id] = started

    def probe(self, answer: Callable[[Replica], ReplicaProbe]) -> None:
        for replica in list(self.replicas.values()):
            if replica.state in (S.STARTING, S.READY, S.UNHEALTHY, S.DRAINING, S.PENDING):
                probe = answer(replica)
                self.replicas[replica.id] = observe_probe(
                    replica, probe, now=self.now, config=CONFIG, log_tail=lambda: "boom"
                ).replica

    def states(self, state: ReplicaState, revision: str | None = None) -> list[str]:
        return sorted(
            r.id
            for r in self.replicas.values()
            if r.state == state and (revision is None or r.revision == revision)
        )

    def converge(
        self, desired: Sequence[DeploymentSpec], answer: Callable[[Replica], ReplicaProbe], *,
        steps: int = 40, check: Callable[[World], None] = lambda w: None,
    ) -> None:  # fmt: skip
        for _ in range(steps):
            self.apply(self.plan(desired))
            check(self)
            self.probe(answer)
            check(self)
            self.now += 1.0


def test_scale_up_starts_the_missing_replicas_then_asks_for_nothing() -> None:
    world, want = World(), [spec(3)]
    actions = world.plan(want)
    assert actions == [StartReplica("demo", want[0].revision())] * 3
    assert world.plan(want) == actions, "planning twice on one state gives the same actions"
    world.apply(actions)
    assert world.plan(want) == [], "starting replicas are not started again"
    world.probe(lambda r: HEALTHY)
    assert len(world.states(S.READY)) == 3
    assert world.plan(want) == []


def test_scale_down_drains_the_least_loaded_newest_ready_first() -> None:
    world = World()
    world.converge([spec(3)], lambda r: HEALTHY, steps=2)
    world.loads = {"demo-0": 0, "demo-1": 4, "demo-2": 0}
    actions = world.plan([spec(1)])
    assert actions == [
        DrainReplica("demo-2", "scaling down to 1"),
        DrainReplica("demo-0", "scaling down to 1"),
    ]


def test_scale_down_takes_out_what_serves_nothing_first() -> None:
    world = World()
    world.converge([spec(4)], lambda r: HEALTHY, steps=2)
    world.replicas["demo-1"] = replace(world.replicas["demo-1"], state=S.FAILED)
    world.replicas["demo-3"] = replace(world.replicas["demo-3"], state=S.PENDING, next_start_at=99)
    world.replicas["demo-2"] = replace(world.replicas["demo-2"], state=S.UNHEALTHY)
    assert [type(a).__name__ + ":" + a.replica_id for a in world.plan([spec(1)])] == [  # type: ignore[union-attr]
        "StopReplica:demo-1",
        "StopReplica:demo-3",
        "DrainReplica:demo-2",
    ]


def test_draining_stops_when_idle_or_after_the_timeout() -> None:
    world = World()
    world.converge([spec(2)], lambda r: HEALTHY, steps=2)
    world.loads = {"demo-0": 2, "demo-1": 0}
    world.apply(world.plan([spec(0)]))
    assert world.states(S.DRAINING) == ["demo-0", "demo-1"]
    assert world.plan([spec(0)]) == [StopReplica("demo-1", "drained")]
    world.apply(world.plan([spec(0)]))
    world.now += CONFIG.drain_timeout_s
    (action,) = world.plan([spec(0)])
    assert isinstance(action, StopReplica)
    assert action.replica_id == "demo-0"
    assert "drain timeout" in action.reason
    assert "2 in flight" in action.reason


def test_stopped_records_are_forgotten_after_a_while() -> None:
    world = World()
    world.converge([spec(1)], lambda r: HEALTHY, steps=2)
    world.converge([spec(0)], lambda r: HEALTHY, steps=2)
    assert world.states(S.STOPPED) == ["demo-0"]
    world.now += CONFIG.forget_stopped_after_s
    assert world.plan([spec(0)]) == [RemoveReplica("demo-0")]


def _never_below(target: int, *, surge: int) -> Callable[[World], None]:
    def check(world: World) -> None:
        assert len(world.states(S.READY)) >= target, world.replicas
        live = [r for r in world.replicas.values() if r.live]
        assert len(live) <= target + surge

    return check


def test_rolling_update_keeps_the_target_ready_throughout() -> None:
    world, old, new = World(), spec(3, model="m1"), spec(3, model="m2")
    world.converge([old], lambda r: HEALTHY, steps=2)
    assert old.revision() != new.revision()
    world.converge([new], lambda r: HEALTHY, steps=20, check=_never_below(3, surge=1))
    assert len(world.states(S.READY, new.revision())) == 3
    assert not [r for r in world.replicas.values() if r.revision == old.revision() and r.live]
    assert world.plan([new]) == []


def test_rolling_update_surges_one_at_a_time() -> None:
    world, old, new = World(), spec(2, model="m1"), spec(2, model="m2")
    world.converge([old], lambda r: HEALTHY, steps=2)
    assert world.plan([new]) == [StartReplica("demo", new.revision())]
    world.apply(world.plan([new]))
    assert world.plan([new]) == [], "no second new replica before the first is ready"
    world.probe(lambda r: HEALTHY)
    actions = world.plan([new])
    assert actions == [
        DrainReplica("demo-1", f"replaced by revision {new.revision()}"),
        StartReplica("demo", new.revision()),
    ]


def test_failing_new_revision_never_drains_the_old_replicas() -> None:
    world, old, new = World(), spec(2, model="m1"), spec(2, model="m2")
    world.converge([old], lambda r: HEALTHY, steps=2)
    old_ids = world.states(S.READY)

    def answer(replica: Replica) -> ReplicaProbe:
        return HEALTHY if replica.revision == old.revision() else DEAD

    world.converge([new], answer, steps=200, check=_never_below(2, surge=1))
    assert world.states(S.READY) == old_ids
    assert len(world.states(S.FAILED, new.revision())) == 2
    assert world.plan([new]) == [], "failed replicas are not restarted nor replaced"


def test_failed_replicas_go_when_the_revision_changes() -> None:
    world = World()
    world.converge([spec(1, model="bad")], lambda r: DEAD, steps=100)
    assert world.states(S.FAILED) == ["demo-0"]
    assert world.plan([spec(1, model="bad")]) == []
    fixed = spec(1, model="good")
    reason = f"replaced by revision {fixed.revision()}"
    assert world.plan([fixed]) == [
        StopReplica("demo-0", reason),
        StartReplica("demo", fixed.revision()),
    ]


def test_undeploy_takes_every_replica_out() -> None:
    world = World()
    world.converge([spec(3)], lambda r: HEALTHY, steps=2)
    world.replicas["demo-2"] = replace(world.replicas["demo-2"], state=S.FAILED)
    assert world.plan([]) == [
        DrainReplica("demo-0", "undeployed"),
        DrainReplica("demo-1", "undeployed"),
        StopReplica("demo-2", "undeployed"),
    ]
    world.converge([], lambda r: HEALTHY, steps=2)
    assert world.states(S.STOPPED) == ["demo-0", "demo-1", "demo-2"]


def test_deployments_are_planned_independently_and_in_name_order() -> None:
    world = World()
    actions = world.plan([spec(1, name="b"), spec(2, name="a")])
    assert [a.deployment for a in actions] == ["a", "a", "b"]  # type: ignore[union-attr]


# -- crashes, backoff, failure --------------------------------------------------------------


def test_crashes_back_off_exponentially_then_fail_with_the_log_tail() -> None:
    config = ReconcileConfig(restart_backoff_base_s=1.0, restart_backoff_cap_s=5.0)
    replica = Replica(id="demo-0", deployment="demo", revision="r")
    waits, events = [], []
    for _ in range(config.max_consecutive_failures):
        crash = observe_crash(
            replica, now=100.0, config=config, reason="exit -9", log_tail="loading\nCUDA OOM\n"
        )
        assert crash.release
        events.append(crash.event)
        replica = crash.replica
        waits.append(replica.next_start_at - 100.0)
    assert waits[:4] == [1.0, 2.0, 4.0, 5.0]
    assert events[0] == "replica demo-0 crashed (exit -9); restarting in 1s (restart 1)"
    assert replica.state == S.FAILED
    assert replica.restarts == 4
    assert events[-1] == "replica demo-0 failed after 5 crashes: CUDA OOM"
    assert "CUDA OOM" in replica.last_error


def test_crash_backoff_is_min_of_base_times_two_to_the_n_and_cap() -> None:
    config = ReconcileConfig(restart_backoff_base_s=2.0, restart_backoff_cap_s=30.0)
    assert [config.backoff_s(n) for n in range(1, 6)] == [2.0, 4.0, 8.0, 16.0, 30.0]


def test_a_pending_replica_restarts_once_its_backoff_elapsed() -> None:
    world, want = World(), [spec(1)]
    world.converge(want, lambda r: HEALTHY, steps=2)
    world.probe(lambda r: DEAD)
    assert world.replicas["demo-0"].state == S.PENDING
    assert world.plan(want) == []
    world.now = world.replicas["demo-0"].next_start_at
    assert world.plan(want) == [RestartReplica("demo-0")]


def test_a_replica_ready_for_a_while_has_its_crash_count_reset() -> None:
    replica = Replica(id="r", deployment="d", revision="x", state=S.READY, started_at=0.0,
                      ready_at=10.0, consecutive_failures=3)  # fmt: skip
    early = observe_probe(replica, HEALTHY, now=20.0, config=CONFIG).replica
    assert early.consecutive_failures == 3
    late = observe_probe(replica, HEALTHY, now=10.0 + CONFIG.stable_after_s, config=CONFIG)
    assert late.replica.consecutive_failures == 0
    assert late.event == ""


def test_starting_longer_than_the_startup_timeout_is_a_crash() -> None:
    replica = Replica(id="r", deployment="d", revision="x", state=S.STARTING, started_at=0.0,
                      startup_timeout_s=30.0)  # fmt: skip
    assert observe_probe(replica, SICK, now=29.0, config=CONFIG).replica is replica
    timed_out = observe_probe(replica, SICK, now=31.0, config=CONFIG, log_tail=lambda: "stuck")
    assert timed_out.replica.state == S.PENDING
    assert timed_out.release
    assert "not healthy after 30s" in timed_out.replica.last_error
    ready = observe_probe(replica, HEALTHY, now=3.25, config=CONFIG)
    assert ready.replica.state == S.READY
    assert ready.event == "replica r: ready after 3.2s"


def test_a_replica_still_being_prepared_is_not_judged_by_probes() -> None:
    preparing = launching(Replica(id="r", deployment="d", revision="x"))
    assert observe_probe(preparing, DEAD, now=1e6, config=CONFIG).replica is preparing


def test_unhealthy_after_n_failed_checks_back_when_it_answers_restarted_when_it_does_not() -> None:
    replica = Replica(id="r", deployment="d", revision="x", state=S.READY, started_at=0.0,
                      ready_at=1.0)  # fmt: skip
    for _ in range(CONFIG.unhealthy_after - 1):
        replica = observe_probe(replica, SICK, now=5.0, config=CONFIG).replica
        assert replica.state == S.READY
    turned = observe_probe(replica, SICK, now=5.0, config=CONFIG)
    assert turned.replica.state == S.UNHEALTHY
    assert "health 503" in turned.event
    back = observe_probe(turned.replica, HEALTHY, now=6.0, config=CONFIG)
    assert back.replica.state == S.READY
    assert back.event == "replica r: healthy again"
    still = observe_probe(
        turned.replica, SICK, now=5.0 + CONFIG.restart_unhealthy_after_s - 1, config=CONFIG
    )
    assert still.replica.state == S.UNHEALTHY
    restarted = observe_probe(
        turned.replica, SICK, now=5.0 + CONFIG.restart_unhealthy_after_s, config=CONFIG
    )
    assert restarted.replica.state == S.PENDING
    assert restarted.release


def test_a_draining_replica_that_exits_is_stopped() -> None:
    replica = Replica(id="r", deployment="d", revision="x", state=S.DRAINING, started_at=0.0)
    gone = observe_probe(replica, DEAD, now=3.0, config=CONFIG)
    assert gone.replica.state == S.STOPPED
    assert gone.release


# -- external endpoints ---------------------------------------------------------------------


def test_external_endpoints_get_one_record_per_url_probed_never_started() -> None:
    world = World()
    want = [spec(endpoints=("http://a:1", "http://b:2", "http://a:1"))]
    rev = want[0].revision()
    assert world.plan(want) == [
        AttachEndpoint("demo", rev, "http://a:1"),
        AttachEndpoint("demo", rev, "http://b:2"),
    ]
    world.apply(world.plan(want))
    assert world.plan(want) == []
    world.probe(lambda r: SICK if r.url == "http://b:2" else HEALTHY)
    assert [world.replicas[i].state for i in ("demo-0", "demo-1")] == [S.READY, S.UNHEALTHY]
    world.probe(lambda r: HEALTHY)
    assert world.replicas["demo-1"].state == S.READY
    fewer = [spec(endpoints=("http://b:2",))]
    assert world.plan(fewer) == [DrainReplica("demo-0", "endpoint removed from the deployment")]


def test_external_replicas_are_unhealthy_not_crashed_when_down() -> None:
    replica = Replica(id="r", deployment="d", revision="x", state=S.READY, external=True,
                      url="http://a")  # fmt: skip
    for _ in range(10):
        replica = observe_probe(replica, DEAD, now=1e5, config=CONFIG).replica
    assert replica.state == S.UNHEALTHY


@pytest.mark.parametrize("loads", [{}, {"demo-0": 3}])
def test_plan_is_deterministic(loads: dict[str, int]) -> None:
    world = World()
    world.converge([spec(3, model="a")], lambda r: HEALTHY, steps=2)
    world.loads = loads
    want = [spec(2, model="b"), spec(1, name="other")]
    assert world.plan(want) == world.plan(list(reversed(want)))
