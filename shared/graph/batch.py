"""JSON batching: up to 20 Graph requests in one `POST /$batch`, through the SDK's request adapter (its
auth and middleware), with the envelope built and read here (docs/graph-behaviour.md §3.3).

The outer answer is 200 whenever the batch parses; each sub-request has its own status, and a throttled
one comes back as 429 with its own Retry-After inside the envelope (the SDK's retry middleware never
retries sub-requests). Callers decide per sub-request. Sub-request URLs are relative to the client's
base URL; an absolute link (a saved delta link) is made relative with `relative_url()`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from kiota_abstractions.method import Method
from kiota_abstractions.request_information import RequestInformation
from msgraph.graph_service_client import GraphServiceClient

from shared.errors import GraphError
from shared.graph.client import GraphCaller
from shared.model import SubRequest, SubResponse
from shared.ports.graph import MAX_BATCH


class GraphBatch:
    def __init__(self, client: GraphServiceClient, caller: GraphCaller) -> None:
        self._adapter = client.request_adapter
        self._caller = caller

    @property
    def base_url(self) -> str:
        return str(self._adapter.base_url).rstrip("/")

    def relative_url(self, link: str) -> str | None:
        """The link relative to the API root, or None when it points elsewhere (then it cannot be batched)."""
        base = self.base_url
        if link.startswith(base + "/"):
            return link[len(base) :]
        return None

    async def send(self, mailbox: str, requests: Sequence[SubRequest]) -> dict[str, SubResponse]:
        """One `POST /$batch` for one mailbox (so it counts against that mailbox's concurrency slots).
        Raises the translated error when the batch as a whole fails (throttled, denied, malformed)."""
        if not requests:
            return {}
        if len(requests) > MAX_BATCH:
            raise ValueError(f"a batch holds at most {MAX_BATCH} requests, got {len(requests)}")
        items: list[dict[str, Any]] = []
        for r in requests:
            item: dict[str, Any] = {"id": r.id, "method": r.method, "url": r.url}
            if r.headers:
                item["headers"] = dict(r.headers)
            items.append(item)
        payload = {"requests": items}
        info = RequestInformation(Method.POST, "{+baseurl}/$batch", {"baseurl": self.base_url})
        info.headers.try_add("Accept", "application/json")
        info.set_stream_content(json.dumps(payload).encode(), "application/json")
        body = await self._caller.fetch_json(mailbox, self._adapter, info, "a $batch")
        answers = body.get("responses") or []
        if not isinstance(answers, list):
            raise GraphError("Graph answered a $batch with a body that is not a batch response")
        out: dict[str, SubResponse] = {}
        for answer in answers:
            if isinstance(answer, dict) and "id" in answer:
                rid = str(answer["id"])
                out[rid] = SubResponse(
                    id=rid,
                    status=int(answer.get("status") or 0),
                    headers={str(k): str(v) for k, v in (answer.get("headers") or {}).items()},
                    body=answer.get("body"),
                )
        return out
