"""`crmsync`: the admin command line. Same operations, same code paths as the Function App.

Settings come from the environment, or from a `local.settings.json`-shaped file given with
`--settings` (its `Values`; the environment wins). Everything printed goes through `_say`, which makes
each line `printable()`: a stored error text or a CRM's reason never reaches the terminal with its
control characters (escape sequences that recolour, clear or retitle it).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from shared import admin, leases, wiring
from shared.config import Settings
from shared.errors import SyncError
from shared.model import Job
from shared.printable import printable
from shared.users import COLUMNS, is_enabled, parse_user

T = TypeVar("T")


def _say(text: str, *, nl: bool = True) -> None:
    """Echo a line (or lines) of ours and the values in it; a leading carriage return is ours too."""
    carriage = "\r" if text.startswith("\r") else ""
    click.echo(carriage + "\n".join(printable(line) for line in text[len(carriage) :].split("\n")), nl=nl)


def _load_settings(path: str | None) -> None:
    if path:
        values = json.loads(Path(path).read_text(encoding="utf-8")).get("Values", {})
        for name, value in values.items():
            os.environ.setdefault(name, str(value))


def _run(work: Callable[[wiring.Services], Awaitable[T]]) -> T:
    async def main() -> T:
        services = await wiring.build(Settings.from_env())
        try:
            return await work(services)
        finally:
            await services.aclose()

    try:
        return asyncio.run(main())
    except SyncError as error:
        raise click.ClickException(str(error)) from None


@click.group()
@click.option("--settings", "settings_file", type=click.Path(exists=True, dir_okay=False),
              help="a local.settings.json whose Values are used as app settings")  # fmt: skip
def main(settings_file: str | None) -> None:
    """Admin tool for the Outlook ↔ CRM sync."""
    _load_settings(settings_file)


@main.group()
def users() -> None:
    """List, add, enable, disable and configure users (the SyncUsers table)."""


@users.command("list")
def users_list() -> None:
    rows = _run(lambda s: s.state.list_users())
    for row in rows:
        enabled = "enabled " if is_enabled(row.columns) else "disabled"
        _say(f"{row.upn:40} {enabled} {row.columns.get('State', '')}")


def _parse_pairs(pairs: tuple[str, ...]) -> dict[str, str]:
    columns: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in COLUMNS:
            raise click.BadParameter(f"{pair!r}: use NAME=VALUE with NAME one of {', '.join(COLUMNS)}")
        columns[name] = value
    return columns


@users.command("add")
@click.argument("upn")
@click.argument("pairs", nargs=-1)
@click.option("--enable/--disable", default=True, help="switch the user on now (default) or later")
def users_add(upn: str, pairs: tuple[str, ...], enable: bool) -> None:
    """Add UPN with optional NAME=VALUE settings (e.g. MailPolicy=known-people DaysBack=30)."""
    columns: dict[str, Any] = {**_parse_pairs(pairs), "Enabled": enable}
    parse_user(upn, columns)  # refuse a row that would be invalid
    _run(lambda s: s.state.put_config(upn, columns))
    _say(f"added {upn} ({'enabled' if enable else 'disabled'})")


@users.command("set")
@click.argument("upn")
@click.argument("pairs", nargs=-1, required=True)
def users_set(upn: str, pairs: tuple[str, ...]) -> None:
    """Change settings of UPN: NAME=VALUE ..."""
    columns = _parse_pairs(pairs)

    async def work(s: wiring.Services) -> None:
        row = await s.state.get_user(upn)
        if row is None:
            raise click.ClickException(f"no SyncUsers row for {upn}")
        parse_user(upn, {**row.columns, **columns})
        await s.state.put_config(upn, columns)

    _run(work)
    _say(f"updated {upn}")


@users.command("enable")
@click.argument("upn")
def users_enable(upn: str) -> None:
    _run(lambda s: s.state.put_config(upn, {"Enabled": True}))
    _say(f"enabled {upn}")


@users.command("disable")
@click.argument("upn")
def users_disable(upn: str) -> None:
    _run(lambda s: s.state.put_config(upn, {"Enabled": False}))
    _say(f"disabled {upn}")


def _sync(upn: str, fresh: bool, take_over: bool = False) -> None:
    def show(stream: str, stats: Mapping[str, int]) -> None:
        _say(
            f"\r{stream}: {stats.get('pages', 0)} pages · {stats.get('journaled', 0)} journaled · "
            f"{stats.get('skipped', 0)} skipped · {stats.get('failed', 0)} failed",
            nl=False,
        )

    async def work(s: wiring.Services) -> int:
        config = await s.engine.load_user(upn)
        if config is None:
            raise click.ClickException(f"no SyncUsers row for {upn}")
        failures = 0
        for stream in config.streams():
            if take_over:
                now, host = datetime.now(UTC), socket.gethostname()
                verdict = await leases.take_over(s.state, config.upn, stream, now, host, _alive)
                click.echo(f"{stream}: {verdict.reason}")
            outcome = await s.engine.run_job(
                Job(config.upn, stream, "manual", fresh_round=fresh), progress=show
            )
            _say(f"\r{stream}: {outcome.status} {outcome.detail} {dict(outcome.stats)}".rstrip())
            failures += outcome.status not in {"done"}
        return failures

    sys.exit(1 if _run(work) else 0)


def _alive(pid: int) -> bool:
    """Whether a process of this machine runs (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it runs, as another user
    return True


@main.command()
@click.argument("upn")
@click.option("--take-over", is_flag=True, help="first free the leases of a sync whose process is gone")
def sync(upn: str, take_over: bool) -> None:
    """Sync UPN now, every stream, through the same code the functions run."""
    _sync(upn, fresh=False, take_over=take_over)


@main.command()
@click.argument("upn")
def resync(upn: str) -> None:
    """A fresh initial round for UPN (the window of DaysBack); creates no duplicates."""
    _sync(upn, fresh=True)


@main.command()
@click.argument("upn", required=False)
def status(upn: str | None) -> None:
    """State, last sync, counts, open issues and last error, per user."""
    now = datetime.now(UTC)
    for s in _run(lambda services: admin.user_statuses(services.state, upn)):
        lag = s.lag_seconds(now)
        _say(f"{s.upn}: {s.state} · last sync {'never' if lag is None else f'{lag:.0f} s ago'} · "
                   f"{s.totals()} · open issues {s.open_issues}")  # fmt: skip
        for stream in s.streams:
            _say(f"  {stream.stream}: {stream.phase} {dict(stream.totals)}")
        if s.last_error:  # stored free text: one line, whatever line breaks it holds
            _say(f"  last error: {printable(s.last_error)}")
        if s.warnings:
            _say(f"  warnings: {printable(s.warnings)}")
        for note in s.unreadable:
            _say(f"  unreadable: {note}")


@main.command()
@click.argument("upn", required=False)
def check(upn: str | None) -> None:
    """Storage, CRM and (with UPN) the mailbox with the permissions each stream needs."""
    checks = _run(lambda s: admin.check(s.state, s.crm, s.probe, upn))
    for c in checks:
        _say(f"{'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}")
    sys.exit(0 if all(c.ok for c in checks) else 1)


@main.command()
@click.argument("upn")
def approve(upn: str) -> None:
    """Approve UPN's contact changes held by the mass-change brake (State=review); they apply next run."""
    _say(_run(lambda s: admin.approve(s.state, s.queue, upn)))


@main.command()
@click.argument("upn")
@click.argument("message")
def explain(upn: str, message: str) -> None:
    """Why MESSAGE (its internetMessageId) did or did not become a journal."""
    _say(_run(lambda s: admin.explain(s.state, upn, message)))
