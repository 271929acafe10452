"""Meeting messages (eventMessage, eventMessageRequest, eventMessageResponse) and calendar delegates,
read through msgraph-sdk; the meetings themselves are made through the control API, as people in
Outlook would make them."""

from __future__ import annotations

from msgraph.generated.models.event_message import EventMessage
from msgraph.generated.models.event_message_request import EventMessageRequest
from msgraph.generated.models.event_message_response import EventMessageResponse
from msgraph.generated.models.meeting_message_type import MeetingMessageType
from msgraph.generated.models.meeting_request_type import MeetingRequestType
from msgraph.generated.users.item.messages.item.message_item_request_builder import MessageItemRequestBuilder

from tests.emulators.graph.test_mail import delta_builder, run_round
from tests.emulators.graph.test_mailboxes import folder, fresh


def meeting(emulator, organizer: str, *attendees: str, **kw):
    return emulator.control.meeting(
        organizer,
        subject=kw.pop("subject", "Pricing"),
        start={"dateTime": "2026-04-01T10:00:00", "timeZone": "UTC"},
        end={"dateTime": "2026-04-01T11:00:00", "timeZone": "UTC"},
        attendees=[{"emailAddress": {"address": a}, "type": "required"} for a in attendees],
        **kw,
    )


async def test_an_invitation_is_an_event_message_request_with_a_tentative_event(graph, raw, emulator):
    ann = fresh(emulator, "ann")
    made = meeting(emulator, "boss@fabrikam.example", ann)
    (req,) = await folder(graph, ann, "inbox")
    assert isinstance(req, EventMessageRequest)
    assert req.meeting_message_type == MeetingMessageType.MeetingRequest
    assert req.meeting_request_type == MeetingRequestType.NewMeetingRequest and req.is_delegated is False
    assert req.from_.email_address.address == "boss@fabrikam.example"
    event = await graph.users.by_user_id(ann).events.by_event_id(made["events"][ann]).get()
    assert event.is_organizer is False and event.show_as.value == "tentative"
    assert "boss@fabrikam.example" in [a.email_address.address for a in event.attendees]
    q = MessageItemRequestBuilder.MessageItemRequestBuilderGetQueryParameters(
        expand=["microsoft.graph.eventMessage/event"]
    )
    got = await graph.users.by_user_id(ann).messages.by_message_id(req.id).get(request_configuration=cfg_q(q))
    assert got.event.i_cal_u_id == event.i_cal_u_id == made["iCalUId"]
    items, _, _ = await run_round(delta_builder(graph, ann))  # delta items carry the derived type too
    assert [type(i["m"]) for i in items] == [EventMessageRequest]


def cfg_q(q):
    from tests.emulators.graph.conftest import cfg

    return cfg(query=q)


async def test_meeting_message_type_cannot_be_selected_on_messages(raw, emulator):
    ann = fresh(emulator, "ann")
    r = raw.get(f"/users/{ann}/messages", params={"$select": "subject,meetingMessageType"})
    assert r.status_code == 400
    assert "Could not find a property named 'meetingMessageType'" in r.json()["error"]["message"]
    meeting(emulator, "boss@fabrikam.example", ann)
    plain = raw.get(f"/users/{ann}/messages", params={"$select": "subject"}).json()["value"]
    assert [m["@odata.type"] for m in plain] == ["#microsoft.graph.eventMessageRequest"]  # the way to tell


async def test_a_delegate_gets_the_request_and_the_owners_copy_goes_to_deleted_items(graph, emulator):
    boss, pa = fresh(emulator, "boss"), fresh(emulator, "pa")
    emulator.control.mailbox(boss, delegates=[pa])
    made = meeting(emulator, "client@fabrikam.example", boss)
    assert await folder(graph, boss, "inbox") == []
    (owners,) = await folder(graph, boss, "deleteditems")
    (forwarded,) = await folder(graph, pa, "inbox")
    for m in (owners, forwarded):
        assert isinstance(m, EventMessageRequest) and m.is_delegated is True
        assert m.meeting_message_type == MeetingMessageType.MeetingRequest
    assert [r.email_address.address for r in forwarded.to_recipients] == [boss]
    assert forwarded.internet_message_id != owners.internet_message_id  # a forward: a Message-ID of its own
    assert await graph.users.by_user_id(pa).events.get() is not None
    assert (await graph.users.by_user_id(pa).events.get()).value == []  # nothing in the delegate's calendar
    event = await graph.users.by_user_id(boss).events.by_event_id(made["events"][boss]).get()
    assert event.subject == "Pricing"


async def test_delivery_options_keep_the_owners_copy_in_the_inbox(graph, emulator):
    both, info, pa = fresh(emulator, "both"), fresh(emulator, "info"), fresh(emulator, "pa")
    emulator.control.mailbox(
        both, delegates=[pa], delegateMeetingMessageDeliveryOptions="sendToDelegateAndPrincipal"
    )
    emulator.control.mailbox(
        info, delegates=[pa], delegateMeetingMessageDeliveryOptions="sendToDelegateAndInformationToPrincipal"
    )
    meeting(emulator, "client@fabrikam.example", both, info)
    (mine,) = await folder(graph, both, "inbox")
    assert mine.meeting_request_type == MeetingRequestType.NewMeetingRequest
    (copy,) = await folder(graph, info, "inbox")
    assert copy.meeting_request_type == MeetingRequestType.PrincipalWantsCopy
    assert len(await folder(graph, pa, "inbox")) == 2


async def test_a_meeting_a_delegate_books_is_the_managers_and_answers_go_to_the_delegate(graph, emulator):
    boss, pa, bob = fresh(emulator, "boss"), fresh(emulator, "pa"), fresh(emulator, "bob")
    emulator.control.mailbox(boss, delegates=[pa])
    made = meeting(emulator, boss, bob, bookedBy=pa)
    event = await graph.users.by_user_id(boss).events.by_event_id(made["events"][boss]).get()
    assert event.is_organizer is True and event.organizer.email_address.address == boss
    (request,) = await folder(graph, bob, "inbox")
    assert (request.from_.email_address.address, request.sender.email_address.address) == (boss, pa)
    (sent,) = await folder(graph, boss, "sentitems")
    assert isinstance(sent, EventMessageRequest) and sent.internet_message_id == request.internet_message_id
    emulator.control.respond(bob, made["events"][bob], "tentativelyAccepted")
    (answer,) = await folder(graph, pa, "inbox")
    assert isinstance(answer, EventMessageResponse)
    assert answer.meeting_message_type == MeetingMessageType.MeetingTenativelyAccepted  # the CSDL spelling
    assert [r.email_address.address for r in answer.to_recipients] == [pa]
    assert await folder(graph, boss, "inbox") == [] and await folder(graph, boss, "deleteditems") == []
    event = await graph.users.by_user_id(boss).events.by_event_id(made["events"][boss]).get()
    assert [(a.email_address.address, a.status.response.value) for a in event.attendees] == [
        (bob, "tentativelyAccepted")
    ]


async def test_a_cancellation_is_a_base_event_message(graph, emulator):
    org, ann = fresh(emulator, "org"), fresh(emulator, "ann")
    made = meeting(emulator, org, ann, subject="Review")
    emulator.control.cancel_meeting(org, made["events"][org], "sorry")
    cancelled = [m for m in await folder(graph, ann, "inbox") if m.subject.startswith("Canceled")]
    (msg,) = cancelled
    assert type(msg) is EventMessage and msg.meeting_message_type == MeetingMessageType.MeetingCancelled
    event = await graph.users.by_user_id(ann).events.by_event_id(made["events"][ann]).get()
    assert event.is_cancelled is True
    assert (await graph.users.by_user_id(org).events.get()).value == []
