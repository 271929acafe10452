"""Read a FunctionApp the way the Python worker indexes it: `app.get_functions()`, then each
function's trigger and bindings, with `%Setting%` binding expressions resolved from app settings.

A function whose bindings cannot be served (an unsupported trigger or binding, an unresolved
`%Setting%`, a bad schedule) is kept with its `error`; the others run, as in the real host.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import azure.functions as func

from emulators.funchost.ncrontab import CronSchedule, Interval, ScheduleError, parse_schedule
from emulators.funchost.routes import RouteError, RouteTemplate

_EXPRESSION = re.compile(r"%([^%]+)%")
ALL_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


class BindingError(ValueError):
    pass


def resolve(value: str, settings: Mapping[str, str]) -> str:
    """Replace each `%Name%` with the app setting `Name` (unset or empty is an error, as in the host)."""

    def one(m: re.Match[str]) -> str:
        if not settings.get(m.group(1)):
            raise BindingError(f"binding expression %{m.group(1)}% does not resolve to a value")
        return settings[m.group(1)]

    return _EXPRESSION.sub(one, value)


@dataclass(frozen=True)
class QueueOutputBinding:
    name: str  # the parameter name, or "$return"
    queue_name: str
    connection: str  # the app setting (prefix) naming the storage account


@dataclass
class FunctionSpec:
    name: str
    kind: str  # "http" | "timer" | "queue" | the unsupported trigger type
    user_function: Callable[..., Any]
    trigger_param: str
    return_binding: str | None = None  # "http" | "queue" | None
    queue_outputs: list[QueueOutputBinding] = field(default_factory=list)
    http_output_param: str | None = None  # a named http output (func.Out[HttpResponse])
    # http
    route: RouteTemplate | None = None
    methods: frozenset[str] = ALL_METHODS
    auth_level: str = "function"
    # timer
    schedule: CronSchedule | Interval | None = None
    run_on_startup: bool = False
    # queue
    queue_name: str = ""
    connection: str = ""
    error: str = ""


def _enum_value(value: Any) -> str:
    return str(getattr(value, "value", value))


def _spec(function: func.Function, settings: Mapping[str, str]) -> FunctionSpec:
    trigger: Any = function.get_trigger()  # the concrete trigger class carries its own fields
    trigger_type = str(trigger.type)
    spec = FunctionSpec(
        name=str(function.get_function_name()),
        kind=trigger_type,
        user_function=function.get_user_function(),
        trigger_param=trigger.name,
    )
    if trigger_type == "httpTrigger":
        spec.kind = "http"
        try:
            spec.route = RouteTemplate.parse(trigger.route)
        except RouteError as e:
            raise BindingError(f"route: {e}") from None
        if trigger.methods:
            spec.methods = frozenset(_enum_value(m).upper() for m in trigger.methods)
        spec.auth_level = _enum_value(trigger.auth_level or func.AuthLevel.FUNCTION).lower()
    elif trigger_type == "timerTrigger":
        spec.kind = "timer"
        try:
            spec.schedule = parse_schedule(resolve(trigger.schedule, settings))
            spec.schedule.next_after(datetime.now(UTC))  # one that never fires is an error now, not later
        except ScheduleError as e:
            raise BindingError(f"schedule: {e}") from None
        spec.run_on_startup = bool(trigger.run_on_startup)
    elif trigger_type == "queueTrigger":
        spec.kind = "queue"
        spec.queue_name = resolve(trigger.queue_name, settings).lower()
        spec.connection = trigger.connection or "AzureWebJobsStorage"
    else:
        raise BindingError(f"trigger type {trigger_type!r} is not served by this host")

    binding: Any
    for binding in function.get_bindings():
        if binding is trigger:
            continue
        kind = binding.type
        if kind == "http" and binding.name == "$return":
            spec.return_binding = "http"
        elif kind == "http":
            spec.http_output_param = binding.name
        elif kind == "queue":
            out = QueueOutputBinding(
                binding.name, resolve(binding.queue_name, settings).lower(), binding.connection
            )
            spec.queue_outputs.append(out)
            if binding.name == "$return":
                spec.return_binding = "queue"
        else:
            raise BindingError(f"{kind} binding {binding.name!r} is not served by this host")
    _check_parameters(spec)
    return spec


def _check_parameters(spec: FunctionSpec) -> None:
    """Every parameter must be bound (trigger, an output binding or `context`), as the worker checks."""
    bound = {spec.trigger_param, "context", *(o.name for o in spec.queue_outputs)}
    if spec.http_output_param:
        bound.add(spec.http_output_param)
    for p in inspect.signature(spec.user_function).parameters.values():
        if p.name not in bound and p.default is inspect.Parameter.empty:
            raise BindingError(f"parameter {p.name!r} has no binding")


def index(app: func.FunctionApp, settings: Mapping[str, str]) -> list[FunctionSpec]:
    """Every function of `app`; the ones this host cannot run carry an `error`."""
    specs = []
    for function in app.get_functions():
        try:
            specs.append(_spec(function, settings))
        except (BindingError, ValueError) as e:
            trigger = function.get_trigger()
            specs.append(
                FunctionSpec(
                    name=str(function.get_function_name()),
                    kind=str(getattr(trigger, "type", "unknown")),
                    user_function=function.get_user_function(),
                    trigger_param=getattr(trigger, "name", ""),
                    error=str(e),
                )
            )
    return specs
