"""``aiforge orgs|projects|users|keys|limits``: the admin API from the terminal.

Every command calls the running service over HTTP (``--url`` / ``AIFORGE_URL``) with an
API key (``--api-key`` / ``AIFORGE_API_KEY``, else the admin key a local ``aiforge serve``
stored in the data dir), prints a table, or JSON with ``--json``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from aiforge.config import Settings
from aiforge.platform.api.client import DEFAULT_URL, AdminApiClient, AdminApiError, stored_admin_key

UrlOption = Annotated[
    str, typer.Option("--url", envvar="AIFORGE_URL", help="The aiforge service's base URL.")
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="AIFORGE_API_KEY",
        help="API key (default: the admin key stored by a local `aiforge serve`).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
RoleOption = Annotated[
    str, typer.Option("--role", help="owner, admin, member or viewer.", show_default=True)
]

orgs_app = typer.Typer(help="Organizations.", no_args_is_help=True)
projects_app = typer.Typer(help="Projects and their members.", no_args_is_help=True)
users_app = typer.Typer(help="Users.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (secrets are shown once, at creation).", no_args_is_help=True)
limits_app = typer.Typer(
    help="Rate limits and token budgets per key or project.", no_args_is_help=True
)

_console = Console()
_errors = Console(stderr=True)

ORG_COLUMNS = ("id", "name", "created_at")
PROJECT_COLUMNS = ("id", "name", "organization_id", "created_at")
USER_COLUMNS = ("id", "email", "name", "created_at")
MEMBER_COLUMNS = ("user_id", "role", "project_id", "organization_id")
KEY_COLUMNS = ("id", "display", "name", "role", "status", "allowed_models", "region", "expires_at")
LIMIT_COLUMNS = (
    "scope",
    "subject_id",
    "requests_per_minute",
    "tokens_per_minute",
    "max_concurrent",
    "tokens_per_day",
    "tokens_per_month",
)


def register(app: typer.Typer) -> None:
    app.add_typer(orgs_app, name="orgs")
    app.add_typer(projects_app, name="projects")
    app.add_typer(users_app, name="users")
    app.add_typer(keys_app, name="keys")
    app.add_typer(limits_app, name="limits")


# -- plumbing -----------------------------------------------------------------------
def api_client(url: str, api_key: str | None) -> AdminApiClient:
    """A client for the service at ``url``: ``api_key``, else the admin key a local
    ``aiforge serve`` stored; exits with status 2 when there is neither."""
    key = api_key or stored_admin_key(Settings().data_dir)
    if not key:
        _errors.print("[red]no API key:[/] pass --api-key or set AIFORGE_API_KEY")
        raise typer.Exit(2)
    return AdminApiClient(url=url, api_key=key)


def call_api(url: str, api_key: str | None, send: Callable[[AdminApiClient], Any]) -> Any:
    """``send(client)``; a refusal or an unreachable server prints its message to stderr
    and exits with status 1 (the helper every admin command, ``deploy`` included, uses)."""
    try:
        return send(api_client(url, api_key))
    except AdminApiError as error:
        _errors.print(f"[red]error:[/] {error.message}")
        raise typer.Exit(1) from None


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value) or "(none)"
    return str(value)


def _show(data: Any, columns: Sequence[str], *, as_json: bool, title: str) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    rows = data if isinstance(data, list) else [data]
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")  # never hide an id behind an ellipsis
    for row in rows:
        table.add_row(*(_cell(row.get(column)) for column in columns))
    _console.print(table)


_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_expiry(value: str, *, now: datetime) -> datetime:
    """``30d``, ``12h``, ``90m`` from ``now``, or an ISO timestamp (UTC if no zone given)."""
    match = _DURATION.match(value.strip())
    if match:
        return now + timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(
            f"{value!r}: use a duration like 30d or an ISO timestamp"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _project_or_default(client: AdminApiClient, project: str | None) -> str:
    """An explicit project, else the only project the key sees, else the one named default."""
    if project:
        return project
    projects = client.request("GET", "/admin/v1/projects")
    if len(projects) == 1:
        return str(projects[0]["id"])
    named = [row for row in projects if row["name"] == "default"]
    if named:
        return str(named[0]["id"])
    raise AdminApiError("this key sees several projects: pass --project")


# -- organizations ---------------------------------------------------------------------
@orgs_app.command("list")
def orgs_list(
    url: UrlOption = DEFAULT_URL, api_key: ApiKeyOption = None, as_json: JsonOption = False
) -> None:
    """List the organizations your key can see."""
    data = call_api(url, api_key, lambda c: c.request("GET", "/admin/v1/organizations"))
    _show(data, ORG_COLUMNS, as_json=as_json, title="organizations")


@orgs_app.command("create")
def orgs_create(
    name: str,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create an organization (platform admin)."""
    data = call_api(
        url, api_key, lambda c: c.request("POST", "/admin/v1/organizations", json={"name": name})
    )
    _show(data, ORG_COLUMNS, as_json=as_json, title="organization created")


@orgs_app.command("get")
def orgs_get(
    organization_id: str,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one organization."""
    data = call_api(
        url, api_key, lambda c: c.request("GET", f"/admin/v1/organizations/{organization_id}")
    )
    _show(data, ORG_COLUMNS, as_json=as_json, title="organization")


# -- projects ------------------------------------------------------------------------------
@projects_app.command("list")
def projects_list(
    org: Annotated[str | None, typer.Option("--org", help="Only this organization.")] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the projects your key can see."""
    data = call_api(
        url,
        api_key,
        lambda c: c.request("GET", "/admin/v1/projects", params={"organization_id": org}),
    )
    _show(data, PROJECT_COLUMNS, as_json=as_json, title="projects")


@projects_app.command("create")
def projects_create(
    name: str,
    org: Annotated[str, typer.Option("--org", help="The organization's id.")],
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a project in an organization (platform admin)."""
    body = {"name": name, "organization_id": org}
    data = call_api(url, api_key, lambda c: c.request("POST", "/admin/v1/projects", json=body))
    _show(data, PROJECT_COLUMNS, as_json=as_json, title="project created")


@projects_app.command("get")
def projects_get(
    project_id: str,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one project."""
    data = call_api(url, api_key, lambda c: c.request("GET", f"/admin/v1/projects/{project_id}"))
    _show(data, PROJECT_COLUMNS, as_json=as_json, title="project")


@projects_app.command("members")
def projects_members(
    project_id: str,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """List a project's members and their roles."""
    data = call_api(
        url, api_key, lambda c: c.request("GET", f"/admin/v1/projects/{project_id}/members")
    )
    _show(data, MEMBER_COLUMNS, as_json=as_json, title="members")


@projects_app.command("add-member")
def projects_add_member(
    project_id: str,
    email: Annotated[
        str | None, typer.Option(help="Add (or create) the user with this email.")
    ] = None,
    user_id: Annotated[
        str | None, typer.Option("--user-id", help="Add this existing user.")
    ] = None,
    role: RoleOption = "member",
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add a user to a project, or change their role."""
    if (email is None) == (user_id is None):
        raise typer.BadParameter("pass exactly one of --email or --user-id")
    body = {"email": email, "user_id": user_id, "role": role}
    data = call_api(
        url,
        api_key,
        lambda c: c.request("PUT", f"/admin/v1/projects/{project_id}/members", json=body),
    )
    _show(data, MEMBER_COLUMNS, as_json=as_json, title="member")


@projects_app.command("remove-member")
def projects_remove_member(
    project_id: str, user_id: str, url: UrlOption = DEFAULT_URL, api_key: ApiKeyOption = None
) -> None:
    """Remove a user from a project."""
    call_api(
        url,
        api_key,
        lambda c: c.request("DELETE", f"/admin/v1/projects/{project_id}/members/{user_id}"),
    )
    typer.echo(f"removed {user_id} from {project_id}")


# -- users ---------------------------------------------------------------------------------
@users_app.command("list")
def users_list(
    url: UrlOption = DEFAULT_URL, api_key: ApiKeyOption = None, as_json: JsonOption = False
) -> None:
    """List users (a project key sees its project's members)."""
    data = call_api(url, api_key, lambda c: c.request("GET", "/admin/v1/users"))
    _show(data, USER_COLUMNS, as_json=as_json, title="users")


@users_app.command("create")
def users_create(
    email: str,
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a user (platform admin)."""
    body = {"email": email, "name": name}
    data = call_api(url, api_key, lambda c: c.request("POST", "/admin/v1/users", json=body))
    _show(data, USER_COLUMNS, as_json=as_json, title="user created")


@users_app.command("get")
def users_get(
    user_id: str,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one user."""
    data = call_api(url, api_key, lambda c: c.request("GET", f"/admin/v1/users/{user_id}"))
    _show(data, USER_COLUMNS, as_json=as_json, title="user")


# -- keys ------------------------------------------------------------------------------------
ProjectOption = Annotated[
    str | None,
    typer.Option("--project", help="Project id (default: your key's project, or 'default')."),
]
ModelOption = Annotated[
    list[str] | None,
    typer.Option("--model", help="Allow only this model (repeat for several; default: all)."),
]
RegionOption = Annotated[str | None, typer.Option("--region", help="The key's home region.")]
ExpiresOption = Annotated[
    str | None, typer.Option("--expires", help="Expiry: a duration (30d, 12h) or ISO timestamp.")
]


@keys_app.command("create")
def keys_create(
    project: ProjectOption = None,
    name: Annotated[str, typer.Option(help="A label for the key.")] = "",
    role: RoleOption = "member",
    model: ModelOption = None,
    region: RegionOption = None,
    expires: ExpiresOption = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create an API key. Its secret is printed once: store it now."""
    body: dict[str, Any] = {"name": name, "role": role, "allowed_models": model or None}
    body["region"] = region
    if expires is not None:
        body["expires_at"] = parse_expiry(expires, now=datetime.now(UTC)).isoformat()

    def send(client: AdminApiClient) -> Any:
        project_id = _project_or_default(client, project)
        return client.request("POST", f"/admin/v1/projects/{project_id}/keys", json=body)

    data = call_api(url, api_key, send)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    _show(data, KEY_COLUMNS, as_json=False, title="API key created")
    _console.print("The secret key (shown only now, store it safely):")
    typer.echo(data["key"])


@keys_app.command("list")
def keys_list(
    project: ProjectOption = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """List a project's keys (prefixes only; secrets are never shown again)."""

    def send(client: AdminApiClient) -> Any:
        project_id = _project_or_default(client, project)
        return client.request("GET", f"/admin/v1/projects/{project_id}/keys")

    _show(call_api(url, api_key, send), KEY_COLUMNS, as_json=as_json, title="API keys")


@keys_app.command("get")
def keys_get(
    key_id: str,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one key."""
    data = call_api(url, api_key, lambda c: c.request("GET", f"/admin/v1/keys/{key_id}"))
    _show(data, KEY_COLUMNS, as_json=as_json, title="API key")


@keys_app.command("update")
def keys_update(
    key_id: str,
    name: Annotated[str | None, typer.Option(help="A new label.")] = None,
    model: ModelOption = None,
    all_models: Annotated[
        bool, typer.Option("--all-models", help="Remove the model allowlist.")
    ] = False,
    region: RegionOption = None,
    expires: ExpiresOption = None,
    never_expires: Annotated[
        bool, typer.Option("--never-expires", help="Remove the expiry.")
    ] = False,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Change a key's label, model allowlist, region or expiry (only what you pass)."""
    body: dict[str, Any] = {}
    if name is not None:
        body["name"] = name
    if model or all_models:
        body["allowed_models"] = None if all_models else model
    if region is not None:
        body["region"] = region
    if expires is not None or never_expires:
        when = None if never_expires else parse_expiry(str(expires), now=datetime.now(UTC))
        body["expires_at"] = None if when is None else when.isoformat()
    if not body:
        raise typer.BadParameter("nothing to change: pass --name, --model, --region or --expires")
    data = call_api(
        url, api_key, lambda c: c.request("PATCH", f"/admin/v1/keys/{key_id}", json=body)
    )
    _show(data, KEY_COLUMNS, as_json=as_json, title="API key updated")


@keys_app.command("revoke")
def keys_revoke(
    key_id: str,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Revoke a key; every gateway refuses it within a second or two."""
    data = call_api(url, api_key, lambda c: c.request("POST", f"/admin/v1/keys/{key_id}/revoke"))
    _show(data, KEY_COLUMNS, as_json=as_json, title="API key revoked")


# -- limits ---------------------------------------------------------------------------------
KeyTarget = Annotated[str | None, typer.Option("--key", help="A key's id.")]
ProjectTarget = Annotated[str | None, typer.Option("--project", help="A project's id.")]
LimitOption = Annotated[int | None, typer.Option(min=0)]


def _limits_path(key: str | None, project: str | None) -> str:
    if (key is None) == (project is None):
        raise typer.BadParameter("pass exactly one of --key or --project")
    return f"/admin/v1/keys/{key}/limits" if key else f"/admin/v1/projects/{project}/limits"


@limits_app.command("get")
def limits_get(
    key: KeyTarget = None,
    project: ProjectTarget = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show a key's or a project's limits (- means unlimited)."""
    path = _limits_path(key, project)
    _show(
        call_api(url, api_key, lambda c: c.request("GET", path)),
        LIMIT_COLUMNS,
        as_json=as_json,
        title="limits",
    )


@limits_app.command("set")
def limits_set(
    key: KeyTarget = None,
    project: ProjectTarget = None,
    rpm: Annotated[int | None, typer.Option("--rpm", min=0, help="Requests per minute.")] = None,
    tpm: Annotated[int | None, typer.Option("--tpm", min=0, help="Tokens per minute.")] = None,
    concurrent: Annotated[
        int | None, typer.Option("--concurrent", min=0, help="Requests in flight.")
    ] = None,
    per_day: Annotated[
        int | None, typer.Option("--tokens-per-day", min=0, help="Daily token budget.")
    ] = None,
    per_month: Annotated[
        int | None, typer.Option("--tokens-per-month", min=0, help="Monthly token budget.")
    ] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Replace a key's or a project's limits; a limit you leave out becomes unlimited."""
    path = _limits_path(key, project)
    body = {
        "requests_per_minute": rpm,
        "tokens_per_minute": tpm,
        "max_concurrent": concurrent,
        "tokens_per_day": per_day,
        "tokens_per_month": per_month,
    }
    data = call_api(url, api_key, lambda c: c.request("PUT", path, json=body))
    _show(data, LIMIT_COLUMNS, as_json=as_json, title="limits")
