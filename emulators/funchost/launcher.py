"""Start the local Functions host as a child process on a free loopback port.

with function_host("function_app:app", settings={"AzureWebJobsStorage": conn, ...}) as host:
    httpx.post(f"{host.base_url}/notifications", params={"code": host.function_key}, ...)
    host.fire("scheduler")            # run a timer function now and wait for it to end

`settings` are the app settings (`Values`); they reach the host as environment variables, and no
`local.settings.json` is read. Unless `settings` give `FUNCTIONS_MASTER_KEY` / `FUNCTIONS_HOST_KEY`,
fresh random keys are made for the run. `AzureFunctionsJobHost__extensions__queues__…` settings
override host.json, e.g. a short `visibilityTimeout` for tests.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from emulators.funchost.config import HOST_KEY, MASTER_KEY
from emulators.process import free_port, python_module, running


class FunctionRunFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class RunningHost:
    port: int
    master_key: str
    function_key: str  # the host key: accepted by every function-level HTTP function

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/api"

    def _invoke_request(self, name: str, wait: bool, input: str) -> dict:
        return {
            "url": f"{self.root_url}/admin/functions/{name}",
            "params": {"wait": "true"} if wait else {},
            "headers": {"x-functions-key": self.master_key},
            "json": {"input": input},
        }

    @staticmethod
    def _check(name: str, response: httpx.Response) -> None:
        if response.status_code == 500:
            raise FunctionRunFailed(f"function {name} raised (see the host log)")
        response.raise_for_status()

    def fire(self, name: str, *, wait: bool = True, input: str = "", timeout: float = 120.0) -> None:
        """Run a timer (or queue) function now, like `POST /admin/functions/<name>`; by default wait
        for the run to end and raise `FunctionRunFailed` if the function raised."""
        response = httpx.post(**self._invoke_request(name, wait, input), timeout=timeout)
        self._check(name, response)

    async def fire_async(
        self, name: str, *, wait: bool = True, input: str = "", timeout: float = 120.0
    ) -> None:
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.post(**self._invoke_request(name, wait, input))
        self._check(name, response)

    def functions(self) -> list[dict]:
        """What the host indexed: each function's trigger, and the error of any it cannot run."""
        response = httpx.get(f"{self.root_url}/admin/functions", headers={"x-functions-key": self.master_key})
        response.raise_for_status()
        return list(response.json())


@contextlib.contextmanager
def function_host(
    app: str = "function_app:app",
    settings: Mapping[str, str] | None = None,
    port: int | None = None,
    *,
    log: Path | None = None,
    timeout: float = 60.0,
) -> Iterator[RunningHost]:
    """Run `python -m emulators.funchost --app <app>` until the block ends; yields a `RunningHost`."""
    values = dict(settings or {})
    values.setdefault(MASTER_KEY, secrets.token_urlsafe(32))
    values.setdefault(HOST_KEY, secrets.token_urlsafe(32))
    host = RunningHost(port or free_port(), values[MASTER_KEY], values[HOST_KEY])
    args = python_module(
        "emulators.funchost",
        "--app",
        app,
        "--port",
        str(host.port),
        "--no-settings-file",
        "--log-level",
        "info",
    )
    with running(
        args,
        ports=(host.port,),
        ready_url=f"{host.root_url}/admin/host/ping",
        env=values,
        log=log,
        timeout=timeout,
    ):
        yield host
