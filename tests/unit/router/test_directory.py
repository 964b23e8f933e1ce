from aiforge.router.base import RoutingRequest
from aiforge.router.directory import (
    THROUGHPUT_WINDOW_S,
    DeploymentRoute,
    DeploymentRouter,
    ReplicaDirectory,
    RoutableReplica,
)
from aiforge.router.policies.least_outstanding import LeastOutstandingPolicy
from aiforge.router.policies.round_robin import RoundRobinPolicy

REQUEST = RoutingRequest(request_id="req", model="chat")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def replica(replica_id: str, state: str = "ready", url: str = "") -> RoutableReplica:
    return RoutableReplica(id=replica_id, url=url or f"http://{replica_id}", state=state)


def route(
    *replicas: RoutableReplica, policy: str = "round_robin", name: str = "chat"
) -> DeploymentRoute:
    return DeploymentRoute(name=name, policy=policy, replicas=replicas)


def router_of(directory: ReplicaDirectory, model: str = "chat") -> DeploymentRouter:
    router = directory.router(model)
    assert router is not None
    return router


def test_only_ready_replicas_are_routed_to() -> None:
    directory = ReplicaDirectory()
    directory.publish([route(replica("a", "starting"), replica("b"), replica("c", "draining"))])
    router = router_of(directory)

    chosen = {endpoint.id for _ in range(5) if (endpoint := router.select(REQUEST)) is not None}

    assert chosen == {"b"}
    assert router.ready_count == 1


def test_publish_keeps_in_flight_counts_and_endpoints() -> None:
    directory = ReplicaDirectory()
    directory.publish([route(replica("a"), replica("b"))])
    router = router_of(directory)
    endpoint = router.select(REQUEST)
    assert endpoint is not None
    router.begin(endpoint, REQUEST)

    directory.publish([route(replica(endpoint.id, "draining"), replica("c"))])

    assert router_of(directory) is router
    assert directory.in_flight("chat", endpoint.id) == 1  # draining still counts
    router.end(endpoint, REQUEST, ok=True)
    assert directory.in_flight("chat", endpoint.id) == 0


def test_a_replica_at_a_new_url_starts_from_zero() -> None:
    directory = ReplicaDirectory()
    directory.publish([route(replica("a", url="http://old"))])
    router = router_of(directory)
    old = router.select(REQUEST)
    assert old is not None
    router.begin(old, REQUEST)

    directory.publish([route(replica("a", url="http://new"))])
    new = router.select(REQUEST)
    router.end(old, REQUEST, ok=False)  # the old process's request ends late

    assert new is not None
    assert new.url == "http://new"
    assert directory.in_flight("chat", "a") == 0


def test_policy_switch_keeps_loads() -> None:
    directory = ReplicaDirectory()
    directory.publish([route(replica("a"), policy="round_robin")])
    router = router_of(directory)
    endpoint = router.select(REQUEST)
    assert endpoint is not None
    router.begin(endpoint, REQUEST)
    assert isinstance(router.policy, RoundRobinPolicy)

    directory.publish([route(replica("a"), policy="least_outstanding")])

    assert isinstance(router.policy, LeastOutstandingPolicy)
    assert router.policy_name == "least_outstanding"
    assert directory.in_flight("chat", "a") == 1
    router.end(endpoint, REQUEST, ok=True)  # started under the old policy
    assert directory.in_flight("chat", "a") == 0


def test_exclude_skips_failed_replicas_for_a_retry() -> None:
    directory = ReplicaDirectory()
    directory.publish([route(replica("a"), replica("b"))])
    router = router_of(directory)

    retried = {router.select(REQUEST, exclude=["a"]) for _ in range(4)}

    assert {endpoint.id for endpoint in retried if endpoint is not None} == {"b"}
    assert router.select(REQUEST, exclude={"a", "b"}) is None


def test_visibility_by_project() -> None:
    directory = ReplicaDirectory()
    directory.publish(
        [
            route(replica("a"), name="public"),
            DeploymentRoute(name="private", policy="round_robin", projects=frozenset({"p1"})),
        ]
    )

    assert directory.models() == ["private", "public"]
    assert directory.models("p1") == ["private", "public"]
    assert directory.models("p2") == ["public"]
    assert router_of(directory, "private").visible_to("p1")
    assert not router_of(directory, "private").visible_to("p2")


def test_unpublished_deployments_disappear() -> None:
    directory = ReplicaDirectory()
    directory.publish([route(replica("a"), name="one"), route(replica("b"), name="two")])

    directory.publish([route(replica("b"), name="two")])

    assert directory.router("one") is None
    assert len(directory) == 1
    assert directory.ready_count() == 1
    assert directory.in_flight("one", "a") == 0


def test_why_none_names_the_states() -> None:
    directory = ReplicaDirectory()
    directory.publish(
        [
            route(name="empty"),
            route(replica("a", "starting"), replica("b", "failed"), replica("c", "starting")),
        ]
    )

    assert router_of(directory, "empty").why_none() == "no replica is running"
    assert router_of(directory).select(REQUEST) is None
    assert router_of(directory).why_none() == "replicas are failed, starting"


def test_throughput_over_a_sliding_window() -> None:
    clock = FakeClock()
    directory = ReplicaDirectory(clock=clock)
    directory.publish([route(replica("a"))])
    router = router_of(directory)
    endpoint = router.select(REQUEST)
    assert endpoint is not None

    for tokens in (300, 600):
        router.begin(endpoint, REQUEST)
        router.end(endpoint, REQUEST, ok=True, tokens=tokens)
        clock.now += 10
    assert directory.tokens_per_s("chat", "a") == 900 / THROUGHPUT_WINDOW_S

    clock.now += THROUGHPUT_WINDOW_S - 15  # the first is 35 s old, the second 25 s
    assert directory.tokens_per_s("chat", "a") == 600 / THROUGHPUT_WINDOW_S
    clock.now += 10
    assert directory.tokens_per_s("chat", "a") == 0.0
    assert directory.tokens_per_s("chat", "nope") == 0.0


def test_the_policy_sees_only_ready_replicas() -> None:
    directory = ReplicaDirectory()
    replicas = [replica("a"), replica("b"), replica("c")]
    directory.publish([route(*replicas, policy="session_affinity")])
    router = router_of(directory)
    alice = RoutingRequest(request_id="req", model="chat", session="alice")
    home = router.select(alice)
    assert home is not None

    draining = [replica(r.id, "draining") if r.id == home.id else r for r in replicas]
    directory.publish([route(*draining, policy="session_affinity")])
    elsewhere = router.select(alice)
    directory.publish([route(*replicas, policy="session_affinity")])

    assert elsewhere is not None
    assert elsewhere.id != home.id
    assert router.select(alice) is home
