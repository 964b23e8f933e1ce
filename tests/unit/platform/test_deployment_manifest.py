"""Deployment specs from plain data and from ``aiforge apply`` manifests: pure, no I/O."""

from __future__ import annotations

import pytest

from aiforge.cluster.deployments import DeploymentSpec, DeploymentSpecError, Placement
from aiforge.platform.deployments.manifest import (
    ManifestError,
    check_spec,
    parse_manifest,
    spec_from_mapping,
)

FULL = DeploymentSpec(
    name="Qwen/Qwen3-0.6B",
    model="Qwen/Qwen3-0.6B",
    engine="vllm",
    engine_args=("--enable-prefix-caching",),
    replicas=2,
    min_replicas=1,
    max_replicas=4,
    policy="prefix_affinity",
    max_model_len=8192,
    dtype="bfloat16",
    threads=4,
    placement=Placement(regions=("eu-west",), node_labels={"accelerator": "h100"}),
    projects=frozenset({"proj_a", "proj_b"}),
    endpoints=(),
)


def test_a_spec_survives_its_json_shape() -> None:
    assert spec_from_mapping(FULL.to_dict()) == FULL
    assert spec_from_mapping({"name": "demo", "model": "demo"}) == DeploymentSpec("demo", "demo")


def test_engine_args_may_be_one_shell_quoted_string() -> None:
    spec = spec_from_mapping(
        {"name": "x", "model": "demo", "engine_args": "--max-num-seqs 8 --chat-template 'a b'"}
    )
    assert spec.engine_args == ("--max-num-seqs", "8", "--chat-template", "a b")


@pytest.mark.parametrize(
    ("data", "param"),
    [
        ({"model": "demo"}, "name"),
        ({"name": "x"}, "model"),
        ({"name": "x", "model": "demo", "replica": 2}, "replica"),
        ({"name": "x", "model": "demo", "replicas": "2"}, "replicas"),
        ({"name": "x", "model": "demo", "replicas": True}, "replicas"),
        ({"name": "x", "model": "demo", "engine_args": [1]}, "engine_args"),
        ({"name": "x", "model": "demo", "projects": "proj_a"}, "projects"),
        ({"name": "x", "model": "demo", "placement": {"zone": "a"}}, "placement.zone"),
        ({"name": "x", "model": "demo", "placement": {"regions": "eu"}}, "placement.regions"),
        (
            {"name": "x", "model": "demo", "placement": {"node_labels": {"a": 1}}},
            "placement.node_labels",
        ),
    ],
)
def test_wrong_types_and_unknown_fields_name_the_field(data: dict[str, object], param: str) -> None:
    with pytest.raises(DeploymentSpecError) as refused:
        spec_from_mapping(data)
    assert refused.value.param == param


@pytest.mark.parametrize(
    ("changes", "param", "words"),
    [
        ({"replicas": -1}, "replicas", "between 0 and"),
        ({"policy": "fastest"}, "policy", "round_robin"),
        ({"engine": "tensorrt"}, "engine", "transformers"),
        ({"name": "bad name"}, "name", "invalid deployment name"),
        ({"max_model_len": 0}, "max_model_len", "positive"),
    ],
)
def test_check_spec_refuses_what_cannot_be_served(
    changes: dict[str, object], param: str, words: str
) -> None:
    spec = spec_from_mapping({"name": "x", "model": "demo", **changes})
    with pytest.raises(DeploymentSpecError) as refused:
        check_spec(spec)
    assert refused.value.param == param
    assert words in refused.value.message


def test_a_manifest_gives_checked_specs_with_their_lines() -> None:
    entries = parse_manifest(
        """\
# two models
deployments:
  - name: chat
    model: Qwen/Qwen3-0.6B
    replicas: 2
    policy: prefix_affinity
  - name: embed
    model: Qwen/Qwen3-Embedding-0.6B
    projects: [proj_a]
    placement:
      regions: [eu-west]
"""
    )
    assert [(entry.spec.name, entry.line) for entry in entries] == [("chat", 3), ("embed", 7)]
    assert entries[0].spec.replicas == 2
    assert entries[1].spec.projects == frozenset({"proj_a"})
    assert entries[1].spec.placement.regions == ("eu-west",)


@pytest.mark.parametrize(
    ("text", "line", "param", "words"),
    [
        ("deployments:\n  - name: a\n    model: demo\n    replicas: -1\n", 4, "replicas", "'a'"),
        ("deployments:\n  - name: a\n    model: demo\n    policy: nope\n", 4, "policy", "nope"),
        ("deployments:\n  - name: a\n    model: demo\n    colour: red\n", 4, "colour", "unknown"),
        ("deployments:\n  - name: a\n  - name: b\n    model: demo\n", 2, "model", "required"),
        (
            "deployments:\n  - name: a\n    model: demo\n  - name: a\n    model: demo\n",
            4,
            "name",
            "appears twice (first on line 2)",
        ),
        ("deployments:\n  - just-a-string\n", 2, None, "not a mapping"),
        ("models:\n  - name: a\n", 1, "deployments", "under 'deployments:'"),
        ("deployments: [\n", 2, None, "not valid YAML"),
    ],
)
def test_manifest_errors_name_the_line_and_field(
    text: str, line: int, param: str | None, words: str
) -> None:
    with pytest.raises(ManifestError) as refused:
        parse_manifest(text)
    assert refused.value.line == line
    assert refused.value.param == param
    assert words in str(refused.value)
    assert str(refused.value).startswith(f"line {line}: ")
