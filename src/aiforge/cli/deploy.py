"""``aiforge deploy|scale|undeploy|apply``: change the deployments of a running service.

Each command talks to the service's admin API (``--url`` / ``AIFORGE_URL``, ``--api-key``
/ ``AIFORGE_API_KEY`` or the admin key a local ``aiforge serve`` stored) through the
helpers of :mod:`aiforge.cli.admin`. Specs are checked here first (known policy and
engine, replica bounds, a manifest's lines), so a typo is named before anything is sent;
the server checks again, and also that ``--project`` ids exist.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.console import Console

from aiforge.cli.admin import ApiKeyOption, JsonOption, UrlOption, call_api
from aiforge.cluster.deployments import DEFAULT_POLICY, DeploymentSpec, DeploymentSpecError
from aiforge.config import Settings
from aiforge.models.sources import model_reference, served_name
from aiforge.platform.api.client import DEFAULT_URL, AdminApiClient
from aiforge.platform.deployments.manifest import (
    ENGINE_CHOICES,
    ManifestEntry,
    ManifestError,
    check_spec,
    parse_manifest,
    spec_from_mapping,
)
from aiforge.router.registry import POLICY_NAMES

__all__ = ["deployment_path", "register"]

_errors = Console(stderr=True)
COLLECTION = "/admin/v1/deployments"


def deployment_path(name: str, *suffix: str) -> str:
    """The admin API path of deployment ``name`` (its ``/`` kept: routes take paths)."""
    return "/".join((COLLECTION, quote(name, safe="/:@+"), *suffix))


def _fail(message: str, *, code: int = 2) -> typer.Exit:
    _errors.print(f"[red]error:[/] {message}")
    return typer.Exit(code)


# -- aiforge deploy ---------------------------------------------------------------
def deploy(
    model: Annotated[
        str,
        typer.Argument(
            help="demo, a local directory or .gguf file, a catalog name (qwen3-0.6b) or a "
            "hub id (Qwen/Qwen3-0.6B)."
        ),
    ],
    name: Annotated[
        str | None,
        typer.Option(help="The model name clients send (default: the model's served name)."),
    ] = None,
    replicas: Annotated[int, typer.Option(min=0, help="How many replicas to run.")] = 1,
    engine: Annotated[str, typer.Option(help=f"One of: {', '.join(ENGINE_CHOICES)}.")] = "auto",
    policy: Annotated[
        str, typer.Option(help=f"Routing policy: {', '.join(POLICY_NAMES)}.")
    ] = DEFAULT_POLICY,
    max_model_len: Annotated[
        int | None, typer.Option("--max-model-len", min=1, help="Context length cap.")
    ] = None,
    dtype: Annotated[str, typer.Option(help="Weights dtype (auto, bfloat16, float16…).")] = "auto",
    threads: Annotated[
        int | None, typer.Option(min=1, help="CPU threads per replica (CPU engines).")
    ] = None,
    engine_arg: Annotated[
        list[str] | None,
        typer.Option(
            "--engine-arg",
            help="Extra engine arguments, shell-quoted; repeatable "
            "(--engine-arg=--enable-prefix-caching).",
        ),
    ] = None,
    region: Annotated[
        list[str] | None, typer.Option("--region", help="Allowed region; repeatable.")
    ] = None,
    label: Annotated[
        list[str] | None,
        typer.Option("--label", help="Node label KEY=VALUE replicas need; repeatable."),
    ] = None,
    project: Annotated[
        list[str] | None,
        typer.Option(
            "--project", help="Only this project id may use it; repeatable (default: every one)."
        ),
    ] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Deploy a model, or replace the spec of the deployment with that name.

    The options are the whole spec: what you leave out takes its default. Follow the
    replicas coming up with `aiforge status --watch`.

    Examples:

      aiforge deploy demo

      aiforge deploy Qwen/Qwen3-0.6B --replicas 2 --policy prefix_affinity

      aiforge deploy ./models/my-model --name mine --engine transformers --threads 4

      aiforge deploy qwen3-8b --engine vllm --engine-arg=--enable-prefix-caching
    """
    settings = Settings()
    fields: dict[str, Any] = {
        "name": name or served_name(model, settings),
        "model": model_reference(model),
        "engine": engine,
        "engine_args": [arg for value in engine_arg or [] for arg in shlex.split(value)],
        "replicas": replicas,
        "policy": policy,
        "max_model_len": max_model_len,
        "dtype": dtype,
        "threads": threads,
        "placement": {"regions": region or [], "node_labels": _labels(label or [])},
        "projects": project or None,
    }
    spec = _checked(fields)
    data = call_api(url, api_key, lambda client: _put(client, spec))
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    typer.echo(
        f"deployment {spec.name!r} {data['result']}: {spec.model}, engine {spec.engine}, "
        f"{spec.replicas} replica(s), policy {spec.policy}"
    )
    typer.echo("follow its replicas with: aiforge status --watch")


def _labels(pairs: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r}: use KEY=VALUE", param_hint="--label")
        labels[key] = value
    return labels


def _checked(fields: dict[str, Any]) -> DeploymentSpec:
    try:
        return check_spec(spec_from_mapping(fields))
    except DeploymentSpecError as error:
        raise _fail(f"{error.param}: {error.message}") from None


def _put(client: AdminApiClient, spec: DeploymentSpec) -> dict[str, Any]:
    answer: dict[str, Any] = client.request("PUT", deployment_path(spec.name), json=spec.to_dict())
    return answer


# -- aiforge scale / undeploy ---------------------------------------------------------
def scale(
    name: Annotated[str, typer.Argument(help="The deployment's name.")],
    replicas: Annotated[int, typer.Argument(min=0, help="The new replica count.")],
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Set how many replicas a deployment runs (0 keeps it, with no replicas).

    Scaling down drains: the replicas that go finish their in-flight requests first.

    Examples:

      aiforge scale demo 3

      aiforge scale Qwen/Qwen3-0.6B 0
    """
    path = deployment_path(name, "scale")
    data = call_api(url, api_key, lambda c: c.request("POST", path, json={"replicas": replicas}))
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    typer.echo(
        f"deployment {name!r}: {replicas} replica(s) wanted, {data['ready_replicas']} ready now"
    )


def undeploy(
    name: Annotated[str, typer.Argument(help="The deployment's name.")],
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Delete a deployment; its replicas finish their in-flight requests, then stop.

    Example:

      aiforge undeploy Qwen/Qwen3-0.6B
    """
    call_api(url, api_key, lambda c: c.request("DELETE", deployment_path(name)))
    typer.echo(f"deployment {name!r} deleted; its replicas drain and stop")


# -- aiforge apply -f ---------------------------------------------------------------
def apply(
    file: Annotated[
        str,
        typer.Option(
            "--file", "-f", help="A YAML manifest with a list under 'deployments:' ('-': stdin)."
        ),
    ],
    prune: Annotated[
        bool, typer.Option("--prune", help="Also delete the deployments the file does not name.")
    ] = False,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Make the deployments match a YAML manifest (idempotent, like kubectl apply).

    Each item takes the fields of a deployment; only name and model are required:

    \b
      deployments:
        - name: chat
          model: Qwen/Qwen3-0.6B
          replicas: 2
          policy: prefix_affinity
          engine_args: --enable-prefix-caching
        - name: embed
          model: Qwen/Qwen3-Embedding-0.6B
          projects:
            - proj_0123456789abcdef

    Prints what happened to each deployment: created, updated, unchanged (or deleted,
    with --prune).

    Examples:

      aiforge apply -f deployments.yaml

      aiforge apply -f deployments.yaml --prune
    """
    entries = _read_manifest(file)
    outcome: list[dict[str, str]] = []

    def done(name: str, result: str) -> None:
        # Printed as it happens: if a later item is refused, the earlier ones are reported.
        outcome.append({"name": name, "result": result})
        if not as_json:
            typer.echo(f"deployment/{name} {result}")

    def send(client: AdminApiClient) -> None:
        for entry in entries:
            done(entry.spec.name, str(_put(client, entry.spec)["result"]))
        if prune:
            wanted = {entry.spec.name for entry in entries}
            for row in client.request("GET", COLLECTION):
                if row["name"] not in wanted:
                    client.request("DELETE", deployment_path(row["name"]))
                    done(row["name"], "deleted")

    call_api(url, api_key, send)
    if as_json:
        typer.echo(json.dumps(outcome, indent=2))


def _read_manifest(file: str) -> list[ManifestEntry]:
    source = "<stdin>" if file == "-" else file
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text()
    except OSError as error:
        raise _fail(f"cannot read {source}: {error.strerror or error}") from None
    try:
        return parse_manifest(text)
    except ManifestError as error:
        raise _fail(f"{source}: {error}") from None


def register(app: typer.Typer) -> None:
    app.command("deploy")(deploy)
    app.command("scale")(scale)
    app.command("undeploy")(undeploy)
    app.command("apply")(apply)
