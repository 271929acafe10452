"""Call a user function the way the Python worker does: the trigger value by its parameter name,
`func.Out` objects for output bindings, `context` if asked for; async functions on the event loop,
sync ones in a worker thread. Queue outputs are sent after the function succeeded.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import logging
import os
import threading
import time
import typing
import uuid
from collections.abc import Mapping
from typing import Any

import azure.functions as func
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue.aio import QueueClient

from emulators.funchost.indexing import FunctionSpec, QueueOutputBinding

logger = logging.getLogger(__name__)


class OutValue(func.Out):
    def __init__(self) -> None:
        self._value: Any = None

    def set(self, val: Any) -> None:
        self._value = val

    def get(self) -> Any:
        return self._value


class _TraceContext(func._abc.TraceContext):
    trace_state = ""
    trace_parent = ""
    attributes: dict[str, str] = {}  # noqa: RUF012 - read-only by contract


class _RetryContext(func._abc.RetryContext):
    retry_count = 0
    max_retry_count = 0
    exception = None  # type: ignore[assignment]


class InvocationContext(func.Context):
    def __init__(self, function_name: str) -> None:
        self._invocation_id = str(uuid.uuid4())
        self._function_name = function_name

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return os.getcwd()

    @property
    def thread_local_storage(self) -> type[threading.local]:
        return threading.local

    @property
    def trace_context(self) -> _TraceContext:
        return _TraceContext()

    @property
    def retry_context(self) -> _RetryContext:
        return _RetryContext()


def trigger_annotation(spec: FunctionSpec) -> Any:
    """The annotation of the trigger parameter (resolved when it is a string), or None."""
    fn = spec.user_function
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        hints = {}
    if spec.trigger_param in hints:
        return hints[spec.trigger_param]
    param = inspect.signature(fn).parameters.get(spec.trigger_param)
    return None if param is None or param.annotation is inspect.Parameter.empty else param.annotation


def connection_string(setting: str, environ: Mapping[str, str] = os.environ) -> str:
    """The connection string a binding's `connection` names (the host also tries `AzureWebJobs<name>`)."""
    for name in (setting, f"AzureWebJobs{setting}"):
        if environ.get(name):
            return environ[name]
    raise RuntimeError(
        f"connection setting {setting!r} is not set (this host needs a connection string, e.g. Azurite's)"
    )


def encode_message(value: Any, encoding: str) -> str:
    if isinstance(value, func.QueueMessage):
        value = value.get_body()
    if isinstance(value, str):
        value = value.encode("utf-8")
    if not isinstance(value, bytes | bytearray):
        raise TypeError(f"a queue output takes str, bytes or QueueMessage, got {type(value).__name__}")
    return base64.b64encode(value).decode("ascii") if encoding == "base64" else value.decode("utf-8")


# Retries close to the real host's (its .NET queue client: Azure.Core's 3 retries 0.8 s, 1.6 s, 3.2 s
# apart): a call against unreachable storage fails after about 6 s (2 s, then 4 s) and the listener polls
# again. The Python SDK's default (15 s + 3^n apart, about 80 s in all) would leave the listener blind for
# up to half a minute after storage came back.
HOST_RETRY: dict[str, Any] = {
    "initial_backoff": 0, "increment_base": 2, "retry_total": 2, "random_jitter_range": 0.5,
}  # fmt: skip


class QueueClients:
    """One aio QueueClient per (connection, queue), created on first use; queues created on demand."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._clients: dict[tuple[str, str], QueueClient] = {}
        self._created: set[tuple[str, str]] = set()
        self.on_send: list[typing.Callable[[str], None]] = []  # hears the queue name (fast-path polling)

    def get(self, connection: str, queue: str) -> QueueClient:
        key = (connection, queue)
        if key not in self._clients:
            self._clients[key] = QueueClient.from_connection_string(
                connection_string(connection), queue, **HOST_RETRY
            )
        return self._clients[key]

    async def ensure(self, connection: str, queue: str) -> QueueClient:
        client = self.get(connection, queue)
        if (connection, queue) not in self._created:
            try:
                await client.create_queue()
            except ResourceExistsError:
                pass
            self._created.add((connection, queue))
        return client

    async def send(self, binding: QueueOutputBinding, value: Any) -> None:
        items = value if isinstance(value, list | tuple) else [value]
        client = await self.ensure(binding.connection, binding.queue_name)
        for item in items:
            await client.send_message(encode_message(item, self.encoding))
        for listener in self.on_send:
            listener(binding.queue_name)

    async def send_raw(self, connection: str, queue: str, content: str) -> None:
        client = await self.ensure(connection, queue)
        await client.send_message(content)

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()


class Invoker:
    def __init__(self, queues: QueueClients, function_timeout: float | None = None) -> None:
        self.queues = queues
        self.function_timeout = function_timeout

    async def invoke(self, spec: FunctionSpec, trigger_value: Any, reason: str) -> Any:
        """Run `spec` with its trigger value; send its queue outputs; return its return value.
        Exceptions from the function propagate (the caller applies the trigger's failure semantics)."""
        outs = {o.name: OutValue() for o in spec.queue_outputs if o.name != "$return"}
        if spec.http_output_param:
            outs[spec.http_output_param] = OutValue()
        context = InvocationContext(spec.name)
        kwargs: dict[str, Any] = {}
        for name in inspect.signature(spec.user_function).parameters:
            if name == spec.trigger_param:
                kwargs[name] = trigger_value
            elif name in outs:
                kwargs[name] = outs[name]
            elif name == "context":
                kwargs[name] = context
        logger.info("Executing 'Functions.%s' (Reason='%s', Id=%s)", spec.name, reason, context.invocation_id)
        started = time.perf_counter()
        try:
            if inspect.iscoroutinefunction(spec.user_function):
                call = spec.user_function(**kwargs)
            else:
                call = asyncio.to_thread(spec.user_function, **kwargs)
            result = await asyncio.wait_for(call, self.function_timeout)
            for binding in spec.queue_outputs:
                value = result if binding.name == "$return" else outs[binding.name].get()
                if value is not None:
                    await self.queues.send(binding, value)
        except Exception as e:
            logger.warning(
                "Executed 'Functions.%s' (Failed, Id=%s, Duration=%dms): %s",
                spec.name,
                context.invocation_id,
                (time.perf_counter() - started) * 1000,
                type(e).__name__,
                exc_info=True,
            )
            raise
        logger.info(
            "Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%dms)",
            spec.name,
            context.invocation_id,
            (time.perf_counter() - started) * 1000,
        )
        if spec.http_output_param and result is None:
            return outs[spec.http_output_param].get()
        return result
