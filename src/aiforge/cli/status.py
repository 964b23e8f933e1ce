"""``aiforge status``: every deployment and its replicas, from a running service.

One table: a row per deployment (model, engine, policy, ready/target replicas, totals)
and under it a row per replica (state, engine, where it runs, in-flight requests,
tokens/s, uptime, restarts, the last error). ``--json`` prints the admin API's answer;
``--watch`` redraws every two seconds until Ctrl-C.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from aiforge.cli.admin import ApiKeyOption, JsonOption, UrlOption, api_client, call_api
from aiforge.cli.deploy import COLLECTION
from aiforge.platform.api.client import DEFAULT_URL, AdminApiError

__all__ = ["format_uptime", "register", "status_table", "watch"]

WATCH_INTERVAL_S = 2.0
ERROR_WIDTH = 60
COLUMNS = (
    "deployment / replica",
    "model / state",
    "engine",
    "policy / where",
    "replicas",
    "in-flight",
    "tok/s",
    "uptime",
    "restarts",
    "last error",
)
_STATE_STYLE = {
    "ready": "green",
    "pending": "yellow",
    "starting": "yellow",
    "unhealthy": "red",
    "draining": "magenta",
    "stopped": "dim",
    "failed": "bold red",
}

_console = Console()


def status(
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
    watch_: Annotated[
        bool, typer.Option("--watch", "-w", help="Redraw every 2 s until Ctrl-C.")
    ] = False,
) -> None:
    """Show every deployment and its replicas.

    Examples:

      aiforge status

      aiforge status --watch

      aiforge status --json
    """
    deployments = call_api(url, api_key, lambda c: c.request("GET", COLLECTION))
    if as_json:
        typer.echo(json.dumps(deployments, indent=2))
        return
    if not watch_:
        _console.print(status_table(deployments))
        return
    client = api_client(url, api_key)
    watch(
        lambda: client.request("GET", COLLECTION),
        first=deployments,
        console=_console,
        sleep=time.sleep,
    )


def watch(
    fetch: Callable[[], list[dict[str, Any]]],
    *,
    first: list[dict[str, Any]],
    console: Console,
    sleep: Callable[[float], None],
) -> None:
    """Redraw :func:`status_table` every :data:`WATCH_INTERVAL_S` until Ctrl-C. A failed
    fetch (the server restarting, say) shows its message and is retried next round."""
    with Live(status_table(first), console=console, auto_refresh=False) as live:
        try:
            while True:
                sleep(WATCH_INTERVAL_S)
                view: RenderableType
                try:
                    view = status_table(fetch())
                except AdminApiError as error:
                    view = Text(f"error: {error.message} (retrying)", style="red")
                live.update(view, refresh=True)
        except KeyboardInterrupt:
            pass


def status_table(deployments: list[dict[str, Any]]) -> RenderableType:
    """The status table for the admin API's deployment list."""
    if not deployments:
        return Text("no deployments: create one with `aiforge deploy demo`")
    table = Table(title="deployments")
    for column in COLUMNS:
        numeric = column in ("in-flight", "tok/s", "restarts")
        table.add_column(column, justify="right" if numeric else "left", overflow="fold")
    for index, deployment in enumerate(deployments):
        if index:
            table.add_section()
        replicas: list[dict[str, Any]] = deployment.get("replicas") or []
        spec = deployment["spec"]
        table.add_row(
            Text(deployment["name"], style="bold"),
            spec["model"],
            spec["engine"],
            spec["policy"],
            f"{deployment['ready_replicas']}/{spec['replicas']} ready",
            str(sum(int(r.get("in_flight") or 0) for r in replicas)),
            f"{sum(float(r.get('tokens_per_s') or 0.0) for r in replicas):.1f}",
            "",
            str(sum(int(r.get("restarts") or 0) for r in replicas)),
            "",
        )
        for replica in replicas:
            table.add_row(*_replica_cells(replica))
    return table


def _replica_cells(replica: dict[str, Any]) -> list[RenderableType]:
    state = str(replica.get("state", "?"))
    return [
        f"  {replica.get('id', '?')}",
        Text(state, style=_STATE_STYLE.get(state, "")),
        str(replica.get("engine") or "-"),
        _where(replica),
        "",
        str(replica.get("in_flight", 0)),
        f"{float(replica.get('tokens_per_s') or 0.0):.1f}",
        format_uptime(float(replica.get("uptime_s") or 0.0)),
        str(replica.get("restarts", 0)),
        _truncated(replica.get("last_error")),
    ]


def _where(replica: dict[str, Any]) -> str:
    if replica.get("external"):
        return str(replica.get("url") or "external")
    node, pid = replica.get("node"), replica.get("pid")
    parts = [str(node)] if node else []
    if pid:
        parts.append(f"pid {pid}")
    return " ".join(parts) or "-"


def _truncated(error: Any) -> str:
    if not error:
        return ""
    text = " ".join(str(error).split())  # log tails span lines; one line in a table
    return text if len(text) <= ERROR_WIDTH else text[: ERROR_WIDTH - 1] + "…"


def format_uptime(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``, ``3d04h``; empty for zero (not running)."""
    whole = int(seconds)
    if whole <= 0:
        return ""
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def register(app: typer.Typer) -> None:
    app.command("status")(status)
