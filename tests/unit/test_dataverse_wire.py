"""The Dataverse connector's pure mappings: what it writes in a column reads back as written."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.crm.dataverse import activity_rows, wire
from shared.crm.dataverse.batch import BatchBody, parse
from shared.model import ContactFields, PostalAddress

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60)


@settings(max_examples=100, derandomize=True)
@given(body=text)
def test_a_body_written_as_html_reads_back_exactly(body: str) -> None:
    markup = activity_rows.body_html(body)
    inner = markup.removeprefix('<div data-crmsync="text">').removesuffix("</div>").replace("<br>", "")
    assert "<" not in inner and ">" not in inner  # the text cannot become markup in Dynamics
    assert activity_rows.body_text(markup) == body


@settings(max_examples=100, derandomize=True)
@given(
    given_name=text,
    surname=text,
    display=text,
    company=text,
    emails=st.lists(st.emails(), max_size=3),
    phones=st.lists(text.filter(bool), max_size=4),
)
def test_contact_fields_read_back_as_written(
    given_name: str, surname: str, display: str, company: str, emails: list[str], phones: list[str]
) -> None:
    fields = ContactFields(
        given_name=given_name,
        surname=surname,
        display_name=display,
        emails=tuple(emails),
        business_phones=tuple(phones),
        company=company,
        business_address=PostalAddress(city="Leeds"),
    )
    row = {k: v for k, v in wire.contact_columns(fields).items() if v is not None}
    row |= {"contactid": "3f2504e0-4f89-41d3-9a0c-0305e82c3301", "@odata.etag": 'W/"7"'}
    row["fullname"] = " ".join(p for p in (given_name, surname) if p) or None

    assert wire.contact_from_row(row, "ann@contoso.test").fields == fields


def test_an_appointment_key_splits_into_the_meeting_id_and_the_occurrence_start() -> None:
    assert activity_rows.split_key("040000008200E0|2025-03-03T09:00:00+00:00") == (
        "040000008200E0",
        "2025-03-03T09:00:00+00:00",
    )
    assert activity_rows.split_key("uid|with|bars") == ("uid|with|bars", "")
    long_uid, occurrence = activity_rows.split_key("u" * 400)
    assert long_uid.startswith("sha256:") and len(long_uid) <= 300 and occurrence == ""


def test_a_batch_body_answers_part_by_part_with_its_change_sets() -> None:
    body = BatchBody()
    body.get("https://org.example/api/data/v9.2/contacts?$select=fullname")
    changes = body.changeset("emails")
    created = changes.add("POST", "https://org.example/api/data/v9.2/emails", {"subject": "x"})
    changes.add("PATCH", created, {"statecode": 1}, If_Match="*")
    content_type, content = body.render()
    assert content.endswith(b"--\r\n") and b"changeset_emails_" in content and b"PATCH $1 HTTP/1.1" in content

    answer = (
        "--r\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 200 OK\r\n"
        "Content-Type: application/json\r\n\r\n"
        '{"value": []}\r\n--r\r\nContent-Type: multipart/mixed; boundary=c\r\n\r\n--c\r\nContent-Type: '
        'application/http\r\nContent-ID: 1\r\n\r\nHTTP/1.1 400 Bad Request\r\n\r\n{"error": {"code": "0x1", '
        '"message": "no"}}\r\n--c--\r\n--r--\r\n'
    )
    results = parse("multipart/mixed; boundary=r", answer.encode())
    assert [(r.status, r.item, r.changeset) for r in results] == [(200, 0, -1), (400, 1, 1)]
    assert results[1].error == ("0x1", "no") and results[0].body == {"value": []}
