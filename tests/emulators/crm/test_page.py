"""The reference CRM's HTML page lists people, journals with their links, and appointments, escaped."""

from __future__ import annotations

import httpx

from emulators.crm.launcher import ReferenceCrm

HOSTILE = "<script>alert('x')</script>"


def test_page_lists_what_the_crm_holds_with_every_value_escaped(
    server: ReferenceCrm, api: httpx.Client
) -> None:
    ann = server.add_person("ann@example.test", name=f"Ann {HOSTILE}", owner="alice@contoso.test")
    server.add_person("info@acme.test", name="Acme & Co", kind="company")
    journal = {
        "subject": f"Re: {HOSTILE}",
        "direction": "inbound",
        "owner": "alice@contoso.test",
        "seenBy": ["alice@contoso.test", "bob@contoso.test"],
        "people": [{"id": ann, "kind": "contact", "name": f"Ann {HOSTILE}", "email": "ann@example.test"}],
    }
    assert api.put("/journals/%3Cm1%40example.test%3E", json=journal).status_code == 201
    appointment = {
        "subject": "Kick-off",
        "start": "2024-05-06T09:30:00+00:00",
        "end": "2024-05-06T10:30:00+00:00",
        "location": '<img src=x onerror="alert(1)">',
        "owner": "alice@contoso.test",
    }
    assert api.put("/appointments/by-key/ical-1", json=appointment).status_code == 201
    assert api.post("/appointments/by-key/ical-1/cancel").status_code == 200

    page = httpx.get(server.base_url + "/")

    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert "&lt;m1@example.test&gt;" in html  # the journal's key
    assert "bob@contoso.test" in html  # who saw it
    assert f"({ann})" in html  # its linked person
    assert "Acme &amp; Co" in html
    assert 'class="cancelled"' in html
