from __future__ import annotations

from msgraph.generated.users.item.mail_folders.item.messages.delta.delta_request_builder import (
    DeltaRequestBuilder,
)

from tests.emulators.graph.conftest import cfg, mail_from


async def test_delta_round_over_sdk(graph, emulator, upn):
    for i in range(25):
        emulator.control.deliver(upn, mail_from("a@ext.test", f"m{i}"))
    b = graph.users.by_user_id(upn).mail_folders.by_mail_folder_id("inbox").messages.delta
    q = DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(select=["subject", "receivedDateTime"])
    page = await b.get(request_configuration=cfg("odata.maxpagesize=10", query=q))
    seen = []
    while True:
        seen += [m.subject for m in page.value]
        if page.odata_next_link:
            page = await b.with_url(page.odata_next_link).get(
                request_configuration=cfg("odata.maxpagesize=10")
            )
            continue
        break
    assert sorted(seen) == sorted(f"m{i}" for i in range(25))
    assert page.odata_delta_link.startswith(emulator.base_url)


def test_the_product_never_imports_the_emulator():
    from emulators.process import ROOT

    for top in ("shared", "functions"):
        for path in (ROOT / top).rglob("*.py"):
            text = path.read_text()
            assert "import emulators" not in text and "from emulators" not in text, path
