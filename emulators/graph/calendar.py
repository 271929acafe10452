"""Events, calendarView delta, instances."""

from __future__ import annotations

from emulators.graph.routing import Router


def routes(r: Router) -> None:
    pass
