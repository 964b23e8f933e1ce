"""``aiforge usage``: usage totals from a running service's admin API; table, JSON or CSV."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from aiforge.config import Settings
from aiforge.platform.api.client import DEFAULT_URL, AdminApiClient, AdminApiError, stored_admin_key
from aiforge.platform.metering.queries import GROUP_BY_VALUES, UsageTotal, totals_csv

_console = Console()
_errors = Console(stderr=True)
_AGO = re.compile(r"^(\d+)([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
COLUMNS = ("requests", "errors", "prompt_tokens", "completion_tokens", "cached_tokens")


def parse_moment(value: str, *, now: datetime) -> datetime:
    """``2025-05-01``, ``2025-05-01T12:00`` (UTC unless a zone is given), or an age like
    ``24h``/``7d``/``2w`` meaning that long before ``now``."""
    match = _AGO.match(value.strip())
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise typer.BadParameter(f"{value!r}: use an ISO date/time or an age like 7d") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def usage(
    by: Annotated[str, typer.Option("--by", help="key, project, model or day.")] = "day",
    since: Annotated[str | None, typer.Option(help="From (ISO date/time, or 24h, 7d…).")] = None,
    until: Annotated[str | None, typer.Option(help="Until, exclusive (same forms).")] = None,
    project: Annotated[str | None, typer.Option("--project", help="Project id.")] = None,
    key: Annotated[str | None, typer.Option("--key", help="API key id.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Model name.")] = None,
    csv_file: Annotated[
        Path | None, typer.Option("--csv", help="Write CSV to this file ('-': stdout).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    url: Annotated[str, typer.Option("--url", envvar="AIFORGE_URL")] = DEFAULT_URL,
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="AIFORGE_API_KEY")] = None,
) -> None:
    """Usage totals (requests, errors, tokens) grouped by key, project, model or day."""
    if by not in GROUP_BY_VALUES:
        raise typer.BadParameter(f"--by must be one of {', '.join(GROUP_BY_VALUES)}")
    now = datetime.now(UTC)
    params: dict[str, Any] = {
        "group_by": by,
        "since": parse_moment(since, now=now).isoformat() if since else None,
        "until": parse_moment(until, now=now).isoformat() if until else None,
        "project_id": project,
        "key_id": key,
        "model": model,
    }
    report = _fetch(url, api_key, params)
    totals = [UsageTotal(**row) for row in report["data"]]
    if csv_file is not None:
        text = totals_csv(totals, by)
        if str(csv_file) == "-":
            typer.echo(text, nl=False)
        else:
            csv_file.write_text(text)
            _errors.print(f"wrote {len(totals)} rows to {csv_file}")
    elif as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        _print_table(totals, by)


def _fetch(url: str, api_key: str | None, params: dict[str, Any]) -> dict[str, Any]:
    token = api_key or stored_admin_key(Settings().data_dir)
    if not token:
        _errors.print("[red]no API key:[/] pass --api-key or set AIFORGE_API_KEY")
        raise typer.Exit(2)
    try:
        report: dict[str, Any] = AdminApiClient(url=url, api_key=token).request(
            "GET", "/admin/v1/usage", params=params
        )
    except AdminApiError as error:
        _errors.print(f"[red]error:[/] {error.message}")
        raise typer.Exit(1) from None
    return report


def _print_table(totals: list[UsageTotal], by: str) -> None:
    table = Table(title=f"usage by {by}")
    table.add_column(by)
    for column in (*COLUMNS, "total_tokens"):
        table.add_column(column, justify="right")
    for total in totals:
        table.add_row(total.group, *(str(getattr(total, c)) for c in (*COLUMNS, "total_tokens")))
    if totals:
        sums = [str(sum(getattr(t, c) for t in totals)) for c in (*COLUMNS, "total_tokens")]
        table.add_row("[bold]total[/]", *sums)
    _console.print(table)


def register(app: typer.Typer) -> None:
    app.command("usage")(usage)
