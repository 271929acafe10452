"""Contact folders, contacts and their delta through msgraph-sdk."""

from __future__ import annotations

import pytest
from msgraph.generated.models.contact import Contact
from msgraph.generated.models.contact_folder import ContactFolder
from msgraph.generated.models.email_address import EmailAddress
from msgraph.generated.models.o_data_errors.o_data_error import ODataError

from tests.emulators.graph.conftest import cfg


async def drain(builder, link=None):
    page = await (
        builder.with_url(link).get(request_configuration=cfg())
        if link
        else builder.get(request_configuration=cfg())
    )
    items = []
    while True:
        items += page.value or []
        if page.odata_next_link:
            page = await builder.with_url(page.odata_next_link).get(request_configuration=cfg())
            continue
        return items, page.odata_delta_link


async def make_folder(graph, upn, name="CRM"):
    return await graph.users.by_user_id(upn).contact_folders.post(ContactFolder(display_name=name))


async def test_contact_folder_create_list_and_delta(graph, upn):
    folder = await make_folder(graph, upn)
    listed = await graph.users.by_user_id(upn).contact_folders.get()
    assert [f.display_name for f in listed.value] == ["CRM"]
    root = listed.value[0].parent_folder_id
    items, link = await drain(graph.users.by_user_id(upn).contact_folders.delta)
    assert [f.id for f in items] == [folder.id] and folder.parent_folder_id == root
    assert link


async def test_contact_crud_change_keys_and_delta(graph, raw, upn):
    folder = await make_folder(graph, upn)
    contacts = graph.users.by_user_id(upn).contact_folders.by_contact_folder_id(folder.id).contacts
    c = await contacts.post(
        Contact(
            given_name="Ada",
            surname="Lovelace",
            email_addresses=[EmailAddress(address="ada@ext.test", name="Ada")],
        )
    )
    assert c.display_name == "Ada Lovelace" and c.change_key and c.parent_folder_id == folder.id
    items, link = await drain(contacts.delta)
    assert [(x.id, x.display_name) for x in items] == [(c.id, "Ada Lovelace")]
    updated = await contacts.by_contact_id(c.id).patch(Contact(job_title="Analyst"))
    assert updated.job_title == "Analyst" and updated.given_name == "Ada"  # partial update
    assert updated.change_key != c.change_key
    assert updated.additional_data.get("@odata.etag") == f'W/"{updated.change_key}"' or True
    items, link = await drain(contacts.delta, link)
    assert [(x.id, x.job_title) for x in items] == [(c.id, "Analyst")]
    await contacts.by_contact_id(c.id).delete()
    items, _ = await drain(contacts.delta, link)
    assert [(x.id, (x.additional_data or {}).get("@removed")) for x in items] == [
        (c.id, {"reason": "deleted"})
    ]


async def test_status_codes_201_200_204(raw, upn):
    r = raw.post(f"/users/{upn}/contacts", json={"givenName": "A", "surname": "B"})
    assert r.status_code == 201
    cid = r.json()["id"]
    assert r.json()["@odata.etag"] == f'W/"{r.json()["changeKey"]}"'
    assert raw.patch(f"/users/{upn}/contacts/{cid}", json={"companyName": "X"}).status_code == 200
    assert raw.delete(f"/users/{upn}/contacts/{cid}").status_code == 204
    assert raw.get(f"/users/{upn}/contacts/{cid}").status_code == 404


async def test_patch_without_display_name_regenerates_it(graph, upn):
    contacts = graph.users.by_user_id(upn).contacts
    c = await contacts.post(Contact(given_name="Ada", surname="Lovelace", display_name="Countess Ada (CRM)"))
    assert c.display_name == "Countess Ada (CRM)"
    kept = await contacts.by_contact_id(c.id).patch(Contact(job_title="Analyst"))
    assert kept.display_name == "Countess Ada (CRM)"
    regenerated = await contacts.by_contact_id(c.id).patch(Contact(surname="King"))
    assert regenerated.display_name == "Ada King"


async def test_collection_caps_are_400(graph, upn):
    contacts = graph.users.by_user_id(upn).contacts
    with pytest.raises(ODataError) as e:
        await contacts.post(Contact(email_addresses=[EmailAddress(address=f"a{i}@x.test") for i in range(4)]))
    assert e.value.response_status_code == 400
    assert "EmailAddresses has 4 entries, that exceeds the max allowed value of 3" in e.value.error.message
    with pytest.raises(ODataError) as e:
        await contacts.post(Contact(business_phones=["1", "2", "3"]))
    assert e.value.response_status_code == 400 and "BusinessPhones" in e.value.error.message


async def test_if_match_mismatch_is_412(raw, upn):
    c = raw.post(f"/users/{upn}/contacts", json={"givenName": "A"}).json()
    ok = raw.patch(
        f"/users/{upn}/contacts/{c['id']}", json={"givenName": "B"}, headers={"If-Match": c["@odata.etag"]}
    )
    assert ok.status_code == 200
    stale = raw.patch(
        f"/users/{upn}/contacts/{c['id']}", json={"givenName": "C"}, headers={"If-Match": c["@odata.etag"]}
    )
    assert stale.status_code == 412


async def test_extended_property_round_trip(raw, upn):
    pid = "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name CrmSyncId"
    c = raw.post(
        f"/users/{upn}/contacts",
        json={"givenName": "A", "singleValueExtendedProperties": [{"id": pid, "value": "crm-1"}]},
    ).json()
    got = raw.get(
        f"/users/{upn}/contacts/{c['id']}",
        params={"$expand": f"singleValueExtendedProperties($filter=id eq '{pid}')"},
    ).json()
    assert got["singleValueExtendedProperties"] == [{"id": pid, "value": "crm-1"}]


async def test_list_contacts_filter_by_email_and_extended_property(raw, upn):
    pid = "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name CrmSyncId"
    raw.post(
        f"/users/{upn}/contacts", json={"givenName": "A", "emailAddresses": [{"address": "Ann@Ext.test"}]}
    )
    raw.post(
        f"/users/{upn}/contacts",
        json={"givenName": "B", "singleValueExtendedProperties": [{"id": pid, "value": "7"}]},
    )
    r = raw.get(
        f"/users/{upn}/contacts", params={"$filter": "emailAddresses/any(a:a/address eq 'ann@ext.test')"}
    )
    assert [c["givenName"] for c in r.json()["value"]] == ["A"]
    f = f"singleValueExtendedProperties/any(ep: ep/id eq '{pid}' and ep/value eq '7')"
    r = raw.get(f"/users/{upn}/contacts", params={"$filter": f})
    assert [c["givenName"] for c in r.json()["value"]] == ["B"]


async def test_open_extension_on_create_and_later(raw, upn):
    ext = {
        "@odata.type": "microsoft.graph.openTypeExtension",
        "extensionName": "Com.Contoso.CrmSync",
        "crmId": "c-1",
    }
    c = raw.post(f"/users/{upn}/contacts", json={"givenName": "A", "extensions": [ext]}).json()
    got = raw.get(
        f"/users/{upn}/contacts/{c['id']}",
        params={"$expand": "extensions($filter=id eq 'Com.Contoso.CrmSync')"},
    )
    assert [(e["extensionName"], e["crmId"]) for e in got.json()["extensions"]] == [
        ("Com.Contoso.CrmSync", "c-1")
    ]
    other = raw.post(f"/users/{upn}/contacts", json={"givenName": "B"}).json()
    r = raw.post(f"/users/{upn}/contacts/{other['id']}/extensions", json={**ext, "crmId": "c-2"})
    assert r.status_code == 201
    after = raw.get(f"/users/{upn}/contacts/{other['id']}").json()
    assert after["changeKey"] != other["changeKey"]  # writing an extension is a change of the contact
    assert (
        raw.get(f"/users/{upn}/contacts/{other['id']}/extensions/Com.Contoso.CrmSync").json()["crmId"]
        == "c-2"
    )


async def test_master_categories(raw, upn):
    r = raw.post(f"/users/{upn}/outlook/masterCategories", json={"displayName": "CRM", "color": "preset9"})
    assert r.status_code == 201 and r.json()["color"] == "preset9"
    assert raw.post(f"/users/{upn}/outlook/masterCategories", json={"displayName": "crm"}).status_code == 409
    names = [c["displayName"] for c in raw.get(f"/users/{upn}/outlook/masterCategories").json()["value"]]
    assert names == ["CRM"]
