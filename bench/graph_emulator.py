"""How fast the Graph emulator serves a 10,000-message folder in delta pages of 100 through msgraph-sdk.

python -m bench.graph_emulator [--messages 10000] [--page 100]   (prints JSON)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import httpx
from kiota_abstractions.authentication import AccessTokenProvider, AllowedHostsValidator
from kiota_abstractions.authentication.base_bearer_token_authentication_provider import (
    BaseBearerTokenAuthenticationProvider,
)
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.headers_collection import HeadersCollection
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph_core import GraphClientFactory

from emulators.graph.launcher import graph_emulator
from emulators.graph.sample import generate


class _Token(AccessTokenProvider):
    async def get_authorization_token(self, uri, additional_authentication_context=None):  # type: ignore[no-untyped-def]
        return "bench"

    def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
        return AllowedHostsValidator([])


def _cfg(page: int) -> RequestConfiguration:  # type: ignore[type-arg]
    h = HeadersCollection()
    h.add("Prefer", f"odata.maxpagesize={page}")
    h.add("Prefer", 'IdType="ImmutableId"')
    return RequestConfiguration(headers=h)


async def _sdk_round(base_url: str, upn: str, page: int) -> tuple[int, int, float]:
    http = GraphClientFactory.create_with_default_middleware(
        client=httpx.AsyncClient(base_url=base_url, timeout=60)
    )
    adapter = GraphRequestAdapter(BaseBearerTokenAuthenticationProvider(_Token()), client=http)
    adapter.base_url = base_url
    client = GraphServiceClient(request_adapter=adapter)
    b = client.users.by_user_id(upn).mail_folders.by_mail_folder_id("inbox").messages.delta
    t0 = time.perf_counter()
    resp = await b.get(request_configuration=_cfg(page))
    pages, items = 1, len(resp.value or [])
    while resp.odata_next_link:
        resp = await b.with_url(resp.odata_next_link).get(request_configuration=_cfg(page))
        pages += 1
        items += len(resp.value or [])
    return pages, items, time.perf_counter() - t0


async def _sdk_bytes_round(base_url: str, upn: str, page: int) -> tuple[int, int, float]:
    """The SDK's request adapter (auth, retry middleware) with the JSON parsed by json.loads."""
    from msgraph.generated.models.o_data_errors.o_data_error import ODataError

    http = GraphClientFactory.create_with_default_middleware(
        client=httpx.AsyncClient(base_url=base_url, timeout=60)
    )
    adapter = GraphRequestAdapter(BaseBearerTokenAuthenticationProvider(_Token()), client=http)
    adapter.base_url = base_url
    client = GraphServiceClient(request_adapter=adapter)
    b = client.users.by_user_id(upn).mail_folders.by_mail_folder_id("inbox").messages.delta
    errors = {"XXX": ODataError}
    t0 = time.perf_counter()
    raw = await adapter.send_primitive_async(b.to_get_request_information(_cfg(page)), "bytes", errors)
    body = json.loads(raw)
    pages, items = 1, len(body["value"])
    while "@odata.nextLink" in body:
        info = b.with_url(body["@odata.nextLink"]).to_get_request_information(_cfg(page))
        body = json.loads(await adapter.send_primitive_async(info, "bytes", errors))
        pages += 1
        items += len(body["value"])
    return pages, items, time.perf_counter() - t0


def _raw_round(base_url: str, upn: str, page: int) -> tuple[int, int, float]:
    headers = {"Authorization": "Bearer bench", "Prefer": f'odata.maxpagesize={page}, IdType="ImmutableId"'}
    with httpx.Client(headers=headers, timeout=60) as c:
        t0 = time.perf_counter()
        body = c.get(f"{base_url}/users/{upn}/mailFolders/inbox/messages/delta").json()
        pages, items = 1, len(body["value"])
        while "@odata.nextLink" in body:
            body = c.get(body["@odata.nextLink"]).json()
            pages += 1
            items += len(body["value"])
        return pages, items, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--messages", type=int, default=10_000)
    p.add_argument("--page", type=int, default=100)
    a = p.parse_args()
    data = generate(
        users=1, days=100, per_day=max(1, a.messages // 100), seed=7, contacts_per_user=0, events_per_user=0
    )
    user = data["users"][0]
    user["messages"] = [{**m, "folder": "inbox"} for m in user["messages"][: a.messages]]
    with tempfile.TemporaryDirectory() as tmp:
        seed = Path(tmp) / "bench-tenant.json"
        seed.write_text(json.dumps(data))
        with graph_emulator(seed=seed, budget=0) as g:
            upn = user["userPrincipalName"]
            pages, items, secs = asyncio.run(_sdk_round(g.base_url, upn, a.page))
            bpages, bitems, bsecs = asyncio.run(_sdk_bytes_round(g.base_url, upn, a.page))
            rpages, ritems, rsecs = _raw_round(g.base_url, upn, a.page)
    print(
        json.dumps(
            {
                "benchmark": "graph_emulator_message_delta",
                "messages": items,
                "page_size": a.page,
                "sdk": {
                    "pages": pages,
                    "seconds": round(secs, 3),
                    "pages_per_second": round(pages / secs, 1),
                },
                "sdk_adapter_json_loads": {
                    "pages": bpages,
                    "items": bitems,
                    "seconds": round(bsecs, 3),
                    "pages_per_second": round(bpages / bsecs, 1),
                },
                "raw_httpx": {
                    "pages": rpages,
                    "items": ritems,
                    "seconds": round(rsecs, 3),
                    "pages_per_second": round(rpages / rsecs, 1),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
