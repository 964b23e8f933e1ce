"""The ``aiforge`` command. Each subcommand group lives in its own module and registers itself."""

from __future__ import annotations

import typer

from aiforge import __version__

app = typer.Typer(
    name="aiforge",
    help="aiforge: your own AI cloud. Serve open models behind the OpenAI API, with keys, "
    "quotas and usage metering.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"aiforge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """aiforge: your own AI cloud."""


def _register_commands() -> None:
    # Imported here so `aiforge --help` stays fast and each group owns its module.
    from aiforge.cli import admin, bench, chat, deploy, engines, models, serve, status, usage

    for module in (serve, deploy, status, models, chat, bench, engines, admin, usage):
        module.register(app)


def main() -> None:
    _register_commands()
    app()
