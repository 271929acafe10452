"""Start the Graph emulator as a child process on a free port, for tests, the demo and benchmarks.

with graph_emulator(seed=path, latency_ms=0) as g:
    g.base_url        # http://127.0.0.1:PORT/v1.0  (give it to GraphServiceClient)
    g.control.deliver("user@contoso.com", {...})
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from emulators.process import free_port, python_module, running


class Control:
    """A small synchronous client for /_emulator/."""

    def __init__(self, root: str) -> None:
        self.http = httpx.Client(base_url=f"{root}/_emulator", timeout=30.0)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        r = self.http.request(method, path, json=body)
        if r.status_code >= 400:
            raise RuntimeError(f"control {method} {path}: {r.status_code} {r.text}")
        return r.json() if r.content else None

    def add_user(self, upn: str, display_name: str = "", **kw: Any) -> dict[str, Any]:
        """kw: userPurpose ("shared", "room", …), accountEnabled, id."""
        body = {"userPrincipalName": upn, "displayName": display_name or upn, **kw}
        return self._call("POST", "/users", body)

    def mailbox(self, upn: str, **settings: Any) -> dict[str, Any]:
        """Read, or change (sendAs, grantSendOnBehalfTo, delegates,
        messageCopyForSentAsEnabled, messageCopyForSendOnBehalfEnabled,
        delegateMeetingMessageDeliveryOptions, accountEnabled, timeZone), a mailbox's configuration."""
        path = f"/users/{upn}/mailbox"
        return self._call("PATCH", path, settings) if settings else self._call("GET", path)

    def meeting(self, organizer: str, **event: Any) -> dict[str, Any]:
        """A meeting organised in Outlook (event: subject, start, end, attendees, …, bookedBy)."""
        return self._call("POST", "/meetings", {"organizer": organizer, **event})

    def respond(self, upn: str, event_id: str, response: str, **kw: Any) -> dict[str, Any]:
        body = {"response": response, **kw}
        return self._call("POST", f"/users/{upn}/events/{event_id}/respond", body)

    def cancel_meeting(self, upn: str, event_id: str, comment: str = "") -> dict[str, Any]:
        return self._call("POST", f"/users/{upn}/events/{event_id}/cancel-meeting", {"comment": comment})

    def deliver(self, upn: str, message: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", f"/users/{upn}/deliver", message)

    def invitation(self, upn: str, event: dict[str, Any]) -> dict[str, Any]:
        """An invitation from outside the tenant lands in the user's calendar (`iCalUId`, `organizer`)."""
        return self._call("POST", f"/users/{upn}/invitations", event)

    def organizer_cancel(self, upn: str, event_id: str, send_message: bool = False) -> Any:
        body = {"sendMessage": True} if send_message else None
        return self._call("POST", f"/users/{upn}/events/{event_id}/organizer-cancel", body)

    # To Do, changed as its user would in the app: `ref` is a list id, a wellknownListName or a name
    def todo_list(self, upn: str, display_name: str, shared: bool = False) -> dict[str, Any]:
        body = {"displayName": display_name, "isShared": shared}
        return self._call("POST", f"/users/{upn}/todo/lists", body)

    def todo_rename_list(self, upn: str, ref: str, display_name: str) -> dict[str, Any]:
        return self._call("PATCH", f"/users/{upn}/todo/lists/{ref}", {"displayName": display_name})

    def todo_delete_list(self, upn: str, ref: str) -> None:
        self._call("DELETE", f"/users/{upn}/todo/lists/{ref}")

    def todo_task(self, upn: str, ref: str, task: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", f"/users/{upn}/todo/lists/{ref}/tasks", task)

    def todo_update(self, upn: str, task_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        return self._call("PATCH", f"/users/{upn}/todo/tasks/{task_id}", changes)

    def todo_delete(self, upn: str, task_id: str) -> None:
        self._call("DELETE", f"/users/{upn}/todo/tasks/{task_id}")

    def todo_move(self, upn: str, task_id: str, ref: str) -> dict[str, Any]:
        return self._call("POST", f"/users/{upn}/todo/tasks/{task_id}/move", {"list": ref})

    def fault(self, status: int, count: int = 1, **kw: Any) -> None:
        """kw: method, pathContains, retryAfter, errorCode, message."""
        self._call("POST", "/faults", {"status": status, "count": count, **kw})

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    def expire_delta_tokens(self, upn: str) -> int:
        return int(self._call("POST", f"/users/{upn}/expire-delta-tokens")["expired"])

    def deny(self, upn: str) -> None:
        self._call("POST", f"/users/{upn}/deny")

    def allow(self, upn: str) -> None:
        self._call("POST", f"/users/{upn}/allow")

    def lifecycle(self, subscription_id: str, event: str) -> None:
        self._call("POST", f"/subscriptions/{subscription_id}/lifecycle", {"lifecycleEvent": event})

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/stats")

    def requests(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/requests")["value"])

    def notifications(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/notifications")["value"])

    def settings(self, **changes: Any) -> dict[str, Any]:
        return self._call("PATCH", "/settings", changes) if changes else self._call("GET", "/settings")

    def reset(self, empty: bool = False) -> None:
        self._call("POST", "/reset", {"empty": empty})

    def close(self) -> None:
        self.http.close()


@dataclass
class GraphEmulator:
    port: int
    control: Control

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1.0"


def sdk_client(base_url: str, token: str = "emulator-token") -> Any:
    """A msgraph-sdk GraphServiceClient for the emulator (docs/graph-behaviour.md §6.3): a static bearer
    token, the SDK's default middleware (retry, redirect) kept."""
    from kiota_abstractions.authentication import AccessTokenProvider, AllowedHostsValidator
    from kiota_abstractions.authentication.base_bearer_token_authentication_provider import (
        BaseBearerTokenAuthenticationProvider,
    )
    from msgraph import GraphRequestAdapter, GraphServiceClient  # type: ignore[attr-defined]
    from msgraph_core import GraphClientFactory

    class StaticToken(AccessTokenProvider):
        async def get_authorization_token(
            self, uri: str, additional_authentication_context: Any = None
        ) -> str:
            return token

        def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
            return AllowedHostsValidator([])

    http = GraphClientFactory.create_with_default_middleware(
        client=httpx.AsyncClient(base_url=base_url, timeout=60)
    )
    adapter = GraphRequestAdapter(BaseBearerTokenAuthenticationProvider(StaticToken()), client=http)
    adapter.base_url = base_url
    return GraphServiceClient(request_adapter=adapter)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@contextlib.contextmanager
def graph_emulator(
    seed: Path | None = None, log: Path | None = None, **flags: Any
) -> Iterator[GraphEmulator]:
    """flags: any CLI option of `python -m emulators.graph` (concurrency=0, latency_ms=20, ...)."""
    port = free_port()
    args = ["--port", str(port)]
    if seed is not None:
        args += ["--seed", str(seed)]
    for k, v in flags.items():
        args += [_flag(k), str(v)]
    with running(
        python_module("emulators.graph", *args),
        ports=(port,),
        ready_url=f"http://127.0.0.1:{port}/health",
        log=log,
    ):
        g = GraphEmulator(port, Control(f"http://127.0.0.1:{port}"))
        try:
            yield g
        finally:
            g.control.close()
