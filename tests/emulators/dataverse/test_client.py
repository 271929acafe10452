"""The stand-in driven by Microsoft's own Python client (`powerplatform-dataverse-client`) over HTTPS:
what the client sends (entity-set resolution through `EntityDefinitions`, `If-Match: *` on updates
and deletes, `Prefer: odata.maxpagesize`, `$batch` with change sets) must work as against Dataverse."""

from __future__ import annotations

import pytest
from PowerPlatform.Dataverse.client import DataverseClient
from PowerPlatform.Dataverse.core.errors import HttpError
from PowerPlatform.Dataverse.models.upsert import UpsertItem

from emulators.dataverse.launcher import DataverseStandIn
from tests.emulators.dataverse.conftest import StaticCredential


def test_the_client_asks_for_a_token_for_the_environment_and_creates_and_reads_a_row(
    client: DataverseClient, credential: StaticCredential, dv: DataverseStandIn
) -> None:
    contact_id = client.records.create("contact", {"firstname": "Ann", "lastname": "Lee"})

    record = client.records.retrieve("contact", contact_id, select=["fullname", "emailaddress1"])
    assert record is not None
    assert dict(record) == {"fullname": "Ann Lee", "emailaddress1": None, "contactid": contact_id}
    assert record.etag is not None and record.etag.startswith('W/"')
    assert credential.scopes and set(credential.scopes) == {f"{dv.url}/.default"}


def test_update_and_delete_go_to_the_row_and_a_missing_row_is_a_404_with_dataverses_code(
    client: DataverseClient,
) -> None:
    contact_id = client.records.create("contact", {"lastname": "Lee"})
    client.records.update("contact", contact_id, {"jobtitle": "Buyer"})
    record = client.records.retrieve("contact", contact_id, select=["jobtitle"])
    assert record is not None and record["jobtitle"] == "Buyer"

    client.records.delete("contact", contact_id)

    assert client.records.retrieve("contact", contact_id) is None
    with pytest.raises(HttpError) as caught:  # the client updates with If-Match: *: no upsert
        client.records.update("contact", contact_id, {"jobtitle": "CEO"})
    assert caught.value.status_code == 404
    assert caught.value.details["service_error_code"] == "0x80040217"
    assert client.records.list("contact").records == []


def test_filters_ignore_case_double_quotes_and_use_in_and_contains(client: DataverseClient) -> None:
    for first, last, email in (
        ("Ann", "O'Brien", "Ann.OBrien@Example.test"),
        ("Bob", "Smith", "bob@example.test"),
        ("Cy", "Jones", "cy@other.test"),
    ):
        client.records.create("contact", {"firstname": first, "lastname": last, "emailaddress1": email})

    def names(filter: str) -> list[str]:
        rows = client.records.list("contact", filter=filter, select=["fullname"], orderby=["lastname"])
        return [r["fullname"] for r in rows]

    assert names("emailaddress1 eq 'ann.obrien@example.TEST'") == ["Ann O'Brien"]
    assert names("lastname eq 'O''Brien'") == ["Ann O'Brien"]
    assert names("contains(emailaddress1,'EXAMPLE.test') and not startswith(firstname,'b')") == [
        "Ann O'Brien"
    ]
    assert names(
        'Microsoft.Dynamics.CRM.In(PropertyName=\'emailaddress1\',PropertyValues=["cy@other.test","BOB@example.test"])'
    ) == ["Cy Jones", "Bob Smith"]
    assert names("emailaddress2 eq null and (firstname eq 'Bob' or firstname eq 'Cy')") == [
        "Cy Jones",
        "Bob Smith",
    ]
    with pytest.raises(HttpError) as caught:
        names("lastname eq 'O'Brien'")
    assert "unterminated literal" in str(caught.value)
    with pytest.raises(HttpError) as unknown:
        names("LastName eq 'x'")  # names are case-sensitive
    assert "Could not find a property named 'LastName'" in str(unknown.value)


def test_the_client_follows_next_links_and_every_row_comes_once_in_order(client: DataverseClient) -> None:
    for n in range(7):
        client.records.create("contact", {"lastname": f"L{n}", "jobtitle": "Buyer" if n % 2 else "CEO"})

    pages = list(
        client.records.list_pages(
            "contact", select=["lastname"], orderby=["jobtitle desc", "lastname"], page_size=3
        )
    )

    assert [len(p.records) for p in pages] == [3, 3, 1]
    assert [r["lastname"] for p in pages for r in p] == ["L0", "L2", "L4", "L6", "L1", "L3", "L5"]


def test_upsert_by_alternate_key_creates_then_updates_one_row(client: DataverseClient) -> None:
    key = {"crmsync_outlookkey": "link-1"}
    client.records.upsert("contact", [UpsertItem(alternate_key=key, record={"lastname": "First"})])
    client.records.upsert("contact", [UpsertItem(alternate_key=key, record={"lastname": "Second"})])

    rows = client.records.list("contact", select=["lastname", "crmsync_outlookkey"]).records
    assert [(r["lastname"], r["crmsync_outlookkey"]) for r in rows] == [("Second", "link-1")]


def test_a_change_set_is_atomic_and_names_its_results_for_later_operations(client: DataverseClient) -> None:
    contact_id = client.records.create("contact", {"lastname": "Lee"})
    batch = client.batch.new()
    good = batch.changeset()
    email = good.records.create(
        "email",
        {
            "subject": "Quote",
            "messageid": "<q-1@example.test>",
            "regardingobjectid_contact_email@odata.bind": f"/contacts({contact_id})",
        },
    )
    good.records.update("email", email, {"statecode": 1, "statuscode": 4})
    bad = batch.changeset()
    bad.records.create("email", {"subject": "Never", "messageid": "<q-2@example.test>"})
    bad.records.update("email", "00000000-0000-0000-0000-000000000001", {"subject": "missing row"})

    result = batch.execute(continue_on_error=True)

    assert [r.status_code for r in result.responses] == [204, 204, 404]
    assert result.responses[2].error_code == "0x80040217"
    rows = client.records.list(
        "email", select=["subject", "statecode", "statuscode", "_regardingobjectid_value"]
    )
    assert [(r["subject"], r["statecode"], r["statuscode"], r["_regardingobjectid_value"]) for r in rows] == [
        ("Quote", 1, 4, contact_id)
    ]


def test_without_continue_on_error_a_batch_stops_at_the_first_failure(client: DataverseClient) -> None:
    batch = client.batch.new()
    batch.records.create("contact", {"lastname": "Before"})
    batch.records.update("contact", "00000000-0000-0000-0000-000000000001", {"lastname": "missing"})
    batch.records.create("contact", {"lastname": "After"})

    result = batch.execute()

    assert [r.status_code for r in result.responses] == [204, 404]
    assert [r["lastname"] for r in client.records.list("contact", select=["lastname"])] == ["Before"]
