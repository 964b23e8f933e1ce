import pytest

from aiforge.router.base import RoutingPolicy
from aiforge.router.registry import POLICY_NAMES, UnknownPolicyError, make_policy


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_every_registered_policy_is_made_by_its_name(name: str) -> None:
    policy = make_policy(name)

    assert isinstance(policy, RoutingPolicy)
    assert policy.name == name
    assert make_policy(name) is not policy  # one instance per deployment


def test_the_four_policies_of_the_issue_are_registered() -> None:
    assert set(POLICY_NAMES) == {
        "round_robin",
        "least_outstanding",
        "prefix_affinity",
        "session_affinity",
    }


def test_an_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(UnknownPolicyError, match="round_robin, least_outstanding"):
        make_policy("fastest")
