"""`GraphCaller.fetch_json`: what every raw Graph read (delta pages, calendar answers, `$batch`) makes of
the answer's body. The request goes through the real SDK request adapter to an HTTP transport that
answers with the body under test."""

from __future__ import annotations

import httpx
import pytest
from kiota_abstractions.authentication import AnonymousAuthenticationProvider
from kiota_abstractions.method import Method
from kiota_abstractions.request_information import RequestInformation
from msgraph.graph_request_adapter import GraphRequestAdapter

from shared.errors import GraphError
from shared.graph.client import GraphCaller

URL = "https://graph.example/v1.0/users/ann@contoso.com/mailFolders/inbox/messages/delta"


async def fetch(body: bytes, content_type: str = "application/json") -> dict[str, object]:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"Content-Type": content_type})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        adapter = GraphRequestAdapter(AnonymousAuthenticationProvider(), client=http)
        info = RequestInformation(Method.GET, URL)
        return await GraphCaller().fetch_json("ann@contoso.com", adapter, info, "a message page")


async def test_a_json_object_is_returned_as_it_is() -> None:
    assert await fetch(b'{"value": [{"id": "m1"}], "@odata.deltaLink": "d"}') == {
        "value": [{"id": "m1"}],
        "@odata.deltaLink": "d",
    }


async def test_an_empty_answer_is_an_empty_object() -> None:
    assert await fetch(b"") == {}


@pytest.mark.parametrize(
    ("body", "content_type", "says"),
    [
        (b"<html>Service Unavailable</html>", "text/html", "a message page that is not JSON"),
        (b'{"value": [', "application/json", "a message page that is not JSON"),
        (b'["m1", "m2"]', "application/json", "a message page that is not a JSON object"),
    ],
)
async def test_an_answer_that_is_not_a_json_object_is_a_graph_error(
    body: bytes, content_type: str, says: str
) -> None:
    with pytest.raises(GraphError, match=says):
        await fetch(body, content_type)
