"""Shared mailboxes, send as and send on behalf (with Exchange's Sent Items copies), and drafts, driven
through msgraph-sdk (raw httpx where the SDK cannot express the case)."""

from __future__ import annotations

import uuid

import pytest
from msgraph.generated.models.body_type import BodyType
from msgraph.generated.models.delegate_meeting_message_delivery_options import (
    DelegateMeetingMessageDeliveryOptions,
)
from msgraph.generated.models.email_address import EmailAddress
from msgraph.generated.models.item_body import ItemBody
from msgraph.generated.models.mailbox_settings import MailboxSettings
from msgraph.generated.models.message import Message
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.recipient import Recipient
from msgraph.generated.models.single_value_legacy_extended_property import (
    SingleValueLegacyExtendedProperty,
)
from msgraph.generated.models.user_purpose import UserPurpose
from msgraph.generated.users.item.send_mail.send_mail_post_request_body import SendMailPostRequestBody
from msgraph.generated.users.item.user_item_request_builder import UserItemRequestBuilder

from tests.emulators.graph.conftest import cfg, mail_from
from tests.emulators.graph.test_mail import delta_builder, run_round


def fresh(emulator, name: str, **kw) -> str:
    upn = f"{name}{uuid.uuid4().hex[:8]}@contoso.test"
    emulator.control.add_user(upn, name.title(), **kw)
    return upn


def who(address: str) -> Recipient:
    return Recipient(email_address=EmailAddress(address=address))


def note(subject: str, to: list[str], whom: str | None = None) -> Message:
    return Message(
        subject=subject,
        body=ItemBody(content_type=BodyType.Html, content=f"<p>{subject}</p>"),
        to_recipients=[who(a) for a in to],
        from_=who(whom) if whom else None,
    )


async def send(graph, upn: str, message: Message, save: bool = True) -> None:
    """sendMail; the SDK's saveToSentItems defaults to false, Graph's to true."""
    await graph.users.by_user_id(upn).send_mail.post(
        SendMailPostRequestBody(message=message, save_to_sent_items=save)
    )


async def folder(graph, upn: str, name: str) -> list[Message]:
    page = await graph.users.by_user_id(upn).mail_folders.by_mail_folder_id(name).messages.get()
    return list(page.value)


def sides(m: Message) -> tuple[str, str]:
    return m.from_.email_address.address, m.sender.email_address.address


# shared mailboxes -----------------------------------------------------------------------------------------
async def test_a_shared_mailbox_says_so_in_its_settings_and_is_read_app_only_like_any(graph, raw, emulator):
    shared = fresh(emulator, "sales", userPurpose="shared")
    person = fresh(emulator, "ann")
    got = await graph.users.by_user_id(shared).mailbox_settings.get()
    assert got.user_purpose == UserPurpose.Shared
    assert (
        got.delegate_meeting_message_delivery_options
        == DelegateMeetingMessageDeliveryOptions.SendToDelegateOnly
    )
    assert (await graph.users.by_user_id(person).mailbox_settings.get()).user_purpose == UserPurpose.User
    one = raw.get(f"/users/{shared}/mailboxSettings/userPurpose").json()
    assert one["value"] == "shared" and one["@odata.context"].endswith("/mailboxSettings/userPurpose")
    assert raw.get(f"/users/{shared}/mailboxSettings").json()["userPurpose"] == "shared"  # a plain string
    q = UserItemRequestBuilder.UserItemRequestBuilderGetQueryParameters(select=["accountEnabled", "mail"])
    account = await graph.users.by_user_id(shared).get(request_configuration=cfg(query=q))
    assert account.account_enabled is False and account.mail == shared  # sign-in blocked, mail as usual
    emulator.control.deliver(
        shared, mail_from("buyer@fabrikam.example", "Quote please", to=[{"address": shared}])
    )
    items, _, _ = await run_round(delta_builder(graph, shared))
    assert [i["subject"] for i in items] == ["Quote please"]


async def test_mailbox_settings_cannot_be_listed_across_users(raw, emulator):
    shared = fresh(emulator, "support", userPurpose="shared")
    assert raw.get("/users", params={"$select": "id,mailboxSettings"}).status_code == 400
    assert raw.get("/users", params={"$filter": "mailboxSettings/userPurpose eq 'shared'"}).status_code == 400
    one = raw.get(f"/users/{shared}", params={"$select": "mailboxSettings"}).json()
    assert one["mailboxSettings"]["userPurpose"] == "shared"


async def test_mailbox_settings_patch_and_read_only_purpose(graph, raw, emulator):
    upn = fresh(emulator, "bob")
    body = MailboxSettings(
        time_zone="W. Europe Standard Time",
        delegate_meeting_message_delivery_options=DelegateMeetingMessageDeliveryOptions.SendToDelegateAndPrincipal,
    )
    await graph.users.by_user_id(upn).mailbox_settings.patch(body)
    got = await graph.users.by_user_id(upn).mailbox_settings.get()
    assert got.time_zone == "W. Europe Standard Time"
    assert (
        got.delegate_meeting_message_delivery_options
        == DelegateMeetingMessageDeliveryOptions.SendToDelegateAndPrincipal
    )
    assert raw.patch(f"/users/{upn}/mailboxSettings", json={"userPurpose": "shared"}).status_code == 400


async def test_a_denied_shared_mailbox_is_403_like_a_person(graph, emulator):
    shared = fresh(emulator, "ops", userPurpose="shared")
    emulator.control.deny(shared)
    with pytest.raises(ODataError) as e:
        await graph.users.by_user_id(shared).mailbox_settings.get()
    assert e.value.response_status_code == 403 and e.value.error.code == "ErrorAccessDenied"


# sending --------------------------------------------------------------------------------------------------
async def test_send_on_behalf_keeps_only_the_senders_copy_unless_the_manager_asks(graph, emulator):
    manager, assistant, client = fresh(emulator, "mgr"), fresh(emulator, "pa"), fresh(emulator, "cli")
    emulator.control.mailbox(manager, grantSendOnBehalfTo=[assistant])
    await send(graph, assistant, note("For Mgr", [client, "x@fabrikam.example"], manager))
    (mine,) = await folder(graph, assistant, "sentitems")
    (theirs,) = await folder(graph, client, "inbox")
    assert sides(mine) == sides(theirs) == (manager, assistant)
    assert mine.internet_message_id == theirs.internet_message_id
    assert await folder(graph, manager, "sentitems") == []  # Exchange's default: the sender's copy only
    emulator.control.mailbox(manager, messageCopyForSendOnBehalfEnabled=True)
    await send(graph, assistant, note("Again", [client], manager), save=False)
    (copy,) = await folder(graph, manager, "sentitems")  # saved although saveToSentItems was false
    assert sides(copy) == (manager, assistant) and copy.subject == "Again"
    assert [m.subject for m in await folder(graph, assistant, "sentitems")] == ["For Mgr"]


async def test_send_as_a_shared_mailbox_leaves_no_trace_of_the_person(graph, emulator):
    shared, person, client = (
        fresh(emulator, "sales", userPurpose="shared"),
        fresh(emulator, "ann"),
        fresh(emulator, "c"),
    )
    emulator.control.mailbox(shared, sendAs=[person])
    await send(graph, person, note("Offer", [client], shared))
    (mine,) = await folder(graph, person, "sentitems")
    (theirs,) = await folder(graph, client, "inbox")
    assert sides(mine) == sides(theirs) == (shared, shared)
    assert await folder(graph, shared, "sentitems") == []
    emulator.control.mailbox(shared, messageCopyForSentAsEnabled=True)
    await send(graph, person, note("Offer 2", [client], shared))
    (copy,) = await folder(graph, shared, "sentitems")
    later = next(m for m in await folder(graph, person, "sentitems") if m.subject == "Offer 2")
    assert sides(copy) == (shared, shared) and copy.internet_message_id == later.internet_message_id


async def test_sending_for_someone_without_the_right_is_send_as_denied(graph, emulator):
    a, b = fresh(emulator, "a"), fresh(emulator, "b")
    with pytest.raises(ODataError) as e:
        await send(graph, a, note("No", [b], b))
    assert e.value.response_status_code == 403 and e.value.error.code == "ErrorSendAsDenied"
    assert await folder(graph, b, "inbox") == [] and await folder(graph, a, "sentitems") == []


async def test_the_app_sending_through_the_shared_mailbox_fills_its_sent_items(graph, emulator):
    shared, client = fresh(emulator, "info", userPurpose="shared"), fresh(emulator, "c")
    await send(graph, shared, note("News", [client]))
    (sent,) = await folder(graph, shared, "sentitems")
    assert sides(sent) == (shared, shared)


# drafts ---------------------------------------------------------------------------------------------------
async def test_post_messages_always_makes_a_draft_wherever_it_lands(graph, raw, emulator):
    upn = fresh(emulator, "d")
    made = await graph.users.by_user_id(upn).messages.post(note("Draft", ["x@fabrikam.example"]))
    assert made.is_draft is True and made.is_read is True and made.internet_message_id.startswith("<")
    assert [m.id for m in await folder(graph, upn, "drafts")] == [made.id]
    into_inbox = (
        await graph.users.by_user_id(upn)
        .mail_folders.by_mail_folder_id("inbox")
        .messages.post(Message(subject="Imported?", is_draft=False))
    )
    assert into_inbox.is_draft is True  # isDraft in the body changes nothing
    r = raw.patch(f"/users/{upn}/messages/{into_inbox.id}", json={"isDraft": False})
    assert r.status_code == 400


async def test_message_flags_at_creation_make_a_non_draft_and_cannot_change_later(graph, raw, emulator):
    upn = fresh(emulator, "imp")
    body = Message(
        subject="Imported",
        from_=who("old@fabrikam.example"),
        single_value_extended_properties=[
            SingleValueLegacyExtendedProperty(id="Integer 0x0E07", value="1"),  # read, not unsent
            SingleValueLegacyExtendedProperty(id="SystemTime 0x0E06", value="2025-05-01T10:00:00Z"),
        ],
    )
    made = await graph.users.by_user_id(upn).mail_folders.by_mail_folder_id("inbox").messages.post(body)
    assert made.is_draft is False and made.is_read is True
    assert made.received_date_time.isoformat().startswith("2025-05-01T10:00:00")
    assert sides(made) == ("old@fabrikam.example", "old@fabrikam.example")
    flags = {"singleValueExtendedProperties": [{"id": "Integer 0x0E07", "value": "9"}]}
    assert raw.patch(f"/users/{upn}/messages/{made.id}", json=flags).status_code == 400
    assert (
        raw.patch(f"/users/{upn}/messages/{made.id}", json={"subject": "x"}).status_code == 400
    )  # not a draft


async def test_sending_a_draft_makes_a_new_sent_item_and_removes_the_draft(graph, emulator):
    upn, other = fresh(emulator, "s"), fresh(emulator, "r")
    immutable = 'IdType="ImmutableId"'
    drafts = delta_builder(graph, upn, "drafts")
    made = await graph.users.by_user_id(upn).messages.post(
        note("Proposal", [other]), request_configuration=cfg(immutable)
    )
    _, _, link = await run_round(drafts, None, immutable)
    await graph.users.by_user_id(upn).messages.by_message_id(made.id).patch(Message(subject="Proposal v2"))
    await graph.users.by_user_id(upn).messages.by_message_id(made.id).send.post()
    items, _, _ = await run_round(drafts, link, immutable)
    assert [(i["id"], i["removed"]) for i in items] == [(made.id, {"reason": "deleted"})]
    sent = (
        await graph.users.by_user_id(upn)
        .mail_folders.by_mail_folder_id("sentitems")
        .messages.get(request_configuration=cfg(immutable))
    )
    (copy,) = sent.value
    assert (
        copy.id != made.id and copy.is_draft is False and copy.subject == "Proposal v2"
    )  # a new id, even immutable
    assert (copy.internet_message_id, copy.conversation_id) == (
        made.internet_message_id,
        made.conversation_id,
    )
    (arrived,) = await folder(graph, other, "inbox")
    assert arrived.internet_message_id == made.internet_message_id
    with pytest.raises(ODataError) as e:
        await graph.users.by_user_id(upn).messages.by_message_id(copy.id).send.post()
    assert e.value.response_status_code == 400
