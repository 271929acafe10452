"""The Web API behaviours the product depends on that Microsoft's client does not exercise, with
requests shaped as the Web API documentation shows them: upsert and its conditional headers, etags,
lookups bound by navigation property, activity parties, state rules, alternate keys, cascades, errors."""

from __future__ import annotations

from typing import Any

import httpx

from emulators.dataverse.launcher import DataverseStandIn
from tests.emulators.dataverse.conftest import error_code

NEW_ID = "5a3c7e1f-0b2d-4c6e-8f9a-1b2c3d4e5f60"


def created_id(response: httpx.Response) -> str:
    assert response.status_code == 204, response.text
    return response.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")


def test_create_answers_204_with_the_entity_url_or_201_with_the_row_when_asked(web: httpx.Client) -> None:
    plain = web.post("contacts", json={"firstname": "Ann", "lastname": "Lee"})
    shown = web.post(
        "contacts?$select=fullname", json={"lastname": "Ng"}, headers={"Prefer": "return=representation"}
    )

    assert plain.status_code == 204 and plain.content == b""
    assert plain.headers["OData-EntityId"].startswith(str(web.base_url) + "contacts(")
    assert shown.status_code == 201 and "OData-EntityId" not in shown.headers
    assert shown.headers["Preference-Applied"] == "return=representation"
    body = shown.json()
    assert body["fullname"] == "Ng" and body["@odata.etag"].startswith('W/"') and "lastname" not in body


def test_patch_is_an_upsert_unless_the_conditional_headers_say_otherwise(web: httpx.Client) -> None:
    missing = web.patch(f"contacts({NEW_ID})", json={"lastname": "Lee"}, headers={"If-Match": "*"})
    assert missing.status_code == 404 and error_code(missing) == "0x80040217"
    assert web.get(f"contacts({NEW_ID})").status_code == 404  # nothing created

    created = web.patch(
        f"contacts({NEW_ID})", json={"lastname": "Lee"}, headers={"Prefer": "return=representation"}
    )
    updated = web.patch(
        f"contacts({NEW_ID})", json={"lastname": "Li"}, headers={"Prefer": "return=representation"}
    )
    refused = web.patch(f"contacts({NEW_ID})", json={"lastname": "No"}, headers={"If-None-Match": "*"})

    assert (created.status_code, updated.status_code) == (201, 200)
    assert refused.status_code == 412 and error_code(refused) == "0x80040237"
    assert web.get(f"contacts({NEW_ID})?$select=lastname").json()["lastname"] == "Li"


def test_an_etag_guards_updates_and_deletes_and_a_read_of_an_unchanged_row_is_304(web: httpx.Client) -> None:
    contact = created_id(web.post("contacts", json={"lastname": "Lee"}))
    etag = web.get(f"contacts({contact})").headers["ETag"]
    assert web.get(f"contacts({contact})", headers={"If-None-Match": etag}).status_code == 304

    assert (
        web.patch(f"contacts({contact})", json={"jobtitle": "CFO"}, headers={"If-Match": etag}).status_code
        == 204
    )
    stale = web.patch(f"contacts({contact})", json={"jobtitle": "CEO"}, headers={"If-Match": etag})
    gone = web.delete(f"contacts({contact})", headers={"If-Match": etag})

    assert stale.status_code == gone.status_code == 412 and error_code(stale) == "0x80060882"
    assert web.get(f"contacts({contact})?$select=jobtitle").json()["jobtitle"] == "CFO"


def test_lookups_are_bound_by_their_exact_navigation_property(
    web: httpx.Client, dv: DataverseStandIn
) -> None:
    owner = dv.add_user("ann@contoso.test")
    contact = created_id(web.post("contacts", json={"lastname": "Lee"}))

    wrong_name = web.post(
        "emails", json={"subject": "x", "regardingobjectid@odata.bind": f"/contacts({contact})"}
    )
    no_such_row = web.post(
        "emails", json={"subject": "x", "regardingobjectid_contact_email@odata.bind": f"/contacts({NEW_ID})"}
    )
    read_only = web.post("emails", json={"subject": "x", "_regardingobjectid_value": contact})
    email = created_id(
        web.post(
            "emails",
            json={
                "subject": "x",
                "regardingobjectid_contact_email@odata.bind": f"/contacts({contact})",
                "ownerid@odata.bind": f"/systemusers({owner})",
            },
        )
    )

    assert (wrong_name.status_code, error_code(wrong_name)) == (400, "0x80048d19")
    assert (no_such_row.status_code, error_code(no_such_row)) == (404, "0x80040217")
    assert read_only.status_code == 400
    row = web.get(
        f"emails({email})?$select=_regardingobjectid_value,_ownerid_value",
        headers={"Prefer": 'odata.include-annotations="Microsoft.Dynamics.CRM.lookuplogicalname"'},
    ).json()
    assert (row["_regardingobjectid_value"], row["_ownerid_value"]) == (contact, owner)
    assert row["_ownerid_value@Microsoft.Dynamics.CRM.lookuplogicalname"] == "systemuser"


def parties(web: httpx.Client, email: str) -> list[tuple[Any, ...]]:
    row = web.get(
        f"emails({email})?$select=subject&$expand=email_activity_parties($select=participationtypemask,addressused,_partyid_value)"
    ).json()
    return [
        (p["participationtypemask"], p["addressused"], p["_partyid_value"])
        for p in row["email_activity_parties"]
    ]


def test_an_email_is_created_with_its_activity_parties_and_they_can_be_replaced(
    web: httpx.Client, dv: DataverseStandIn
) -> None:
    ann = dv.add_contact("ann@example.test", name="Ann Lee")
    me = dv.add_user("me@contoso.test")
    email = created_id(
        web.post(
            "emails",
            json={
                "subject": "Quote",
                "messageid": "<m1@example.test>",
                "directioncode": False,
                "email_activity_parties": [
                    {"participationtypemask": 1, "partyid_contact@odata.bind": f"/contacts({ann})"},
                    {"participationtypemask": 2, "partyid_systemuser@odata.bind": f"/systemusers({me})"},
                    {"participationtypemask": 3, "addressused": "someone@unknown.test"},
                ],
            },
        )
    )
    assert parties(web, email) == [
        (1, "ann@example.test", ann),
        (2, "me@contoso.test", me),
        (3, "someone@unknown.test", None),
    ]

    replaced = web.put(
        f"emails({email})/email_activity_parties",
        json={"value": [{"participationtypemask": 4, "addressused": "b@x.test"}]},
    )

    assert replaced.status_code == 204
    assert parties(web, email) == [(4, "b@x.test", None)]
    matching = web.get(
        "emails?$select=subject&$filter=email_activity_parties/any(p:p/addressused eq 'B@X.test')"
    ).json()["value"]
    assert [m["activityid"] for m in matching] == [email]


def test_an_activity_is_created_open_closed_with_a_valid_pair_and_read_only_once_closed(
    web: httpx.Client,
) -> None:
    email = created_id(web.post("emails", json={"subject": "Quote"}))
    row = web.get(f"emails({email})?$select=statecode,statuscode,directioncode").json()
    assert (row["statecode"], row["statuscode"], row["directioncode"]) == (0, 1, True)

    wrong = web.patch(f"emails({email})", json={"statecode": 1, "statuscode": 5}, headers={"If-Match": "*"})
    closed = web.patch(f"emails({email})", json={"statecode": 1, "statuscode": 4}, headers={"If-Match": "*"})
    edit = web.patch(f"emails({email})", json={"subject": "Edited"}, headers={"If-Match": "*"})
    reopened = web.patch(
        f"emails({email})", json={"statecode": 0, "statuscode": 1}, headers={"If-Match": "*"}
    )
    edit_again = web.patch(f"emails({email})", json={"subject": "Edited"}, headers={"If-Match": "*"})
    on_create = web.post("emails", json={"subject": "x", "statecode": 1})

    assert (wrong.status_code, error_code(wrong)) == (400, "0x80048408")
    assert closed.status_code == reopened.status_code == edit_again.status_code == 204
    assert (edit.status_code, error_code(edit)) == (400, "0x8004022e")
    assert on_create.status_code == 400
    assert web.get(f"emails({email})?$select=subject").json()["subject"] == "Edited"


def test_alternate_keys_find_rows_refuse_duplicates_and_undefined_keys(web: httpx.Client) -> None:
    created_id(web.post("contacts", json={"lastname": "Lee", "crmsync_outlookkey": "link-1"}))

    found = web.get("contacts(crmsync_outlookkey='link-1')?$select=lastname")
    missing = web.get("contacts(crmsync_outlookkey='link-2')")
    duplicate = web.post("contacts", json={"lastname": "Other", "crmsync_outlookkey": "LINK-1"})
    undefined = web.get("contacts(lastname='Lee')")

    assert found.status_code == 200 and found.json()["lastname"] == "Lee"
    assert (missing.status_code, error_code(missing)) == (404, "0x80060891")
    assert (duplicate.status_code, error_code(duplicate)) == (412, "0x80060892")
    assert (
        undefined.status_code == 400
        and "key in the request URI is not valid" in undefined.json()["error"]["message"]
    )


def test_deleting_a_contact_deletes_the_activities_regarding_it_and_marks_its_parties(
    web: httpx.Client, dv: DataverseStandIn
) -> None:
    ann, bob = dv.add_contact("ann@example.test", name="Ann"), dv.add_contact("bob@example.test", name="Bob")
    regarding = created_id(
        web.post(
            "emails", json={"subject": "r", "regardingobjectid_contact_email@odata.bind": f"/contacts({ann})"}
        )
    )
    party_only = created_id(
        web.post(
            "emails",
            json={
                "subject": "p",
                "regardingobjectid_contact_email@odata.bind": f"/contacts({bob})",
                "email_activity_parties": [
                    {"participationtypemask": 2, "partyid_contact@odata.bind": f"/contacts({ann})"}
                ],
            },
        )
    )

    assert web.delete(f"contacts({ann})").status_code == 204

    assert web.get(f"emails({regarding})").status_code == 404
    row = web.get(f"emails({party_only})?$expand=email_activity_parties($select=ispartydeleted)").json()
    assert [p["ispartydeleted"] for p in row["email_activity_parties"]] == [True]


def test_a_second_email_with_a_used_messageid_is_accepted_or_refused_as_the_toggle_says(
    web: httpx.Client, dv: DataverseStandIn
) -> None:
    body = {"subject": "x", "messageid": "<same@example.test>"}
    assert web.post("emails", json=body).status_code == 204
    assert web.post("emails", json=body).status_code == 204  # undocumented: accepted by default

    dv.settings(reject_duplicate_message_id=True)
    refused = web.post("emails", json={**body, "messageid": "<SAME@example.test>"})

    assert (refused.status_code, error_code(refused)) == (412, "0x80040237")


def test_errors_carry_dataverses_codes(web: httpx.Client, dv: DataverseStandIn) -> None:
    unknown_set = web.get("Contacts")
    too_long = web.post("contacts", json={"lastname": "x" * 51})
    unknown_column = web.post("contacts", json={"favouritecolour": "x"})
    no_token = httpx.get(dv.api_url + "contacts", verify=dv.ssl_context())
    skip = web.get("contacts?$skip=1")

    assert (unknown_set.status_code, error_code(unknown_set)) == (404, "0x8006088a")
    assert (too_long.status_code, error_code(too_long)) == (400, "0x80044331")
    assert (unknown_column.status_code, error_code(unknown_column)) == (400, "0x80048d19")
    assert no_token.status_code == 401 and no_token.headers["WWW-Authenticate"].startswith("Bearer ")
    assert skip.status_code == 400
    who = web.get("WhoAmI").json()
    assert set(who) >= {"BusinessUnitId", "UserId", "OrganizationId"}


def test_the_launchers_reader_follows_next_links_to_the_last_page(dv: DataverseStandIn) -> None:
    dv.settings(page_cap=2)
    made = sorted(dv.add_contact(f"p{n}@example.test", name=f"P {n}") for n in range(5))

    assert sorted(r["contactid"] for r in dv.rows("contacts", select="fullname")) == made
