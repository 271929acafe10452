"""A deployment that does not ask for a Graph permission (CONTACTS_SYNC=false): a user whose row asks
for contacts keeps mail, gets a readable warning, and the app never calls Graph for contacts, so no
403 on every run. The subscription upkeep makes no contacts subscription and the mailbox check does
not try the permission. The Graph emulator answers 403 to every contacts request, as Graph does for an
app without Contacts.ReadWrite; the control case (a deployment with the permission, same tenant) shows
what the flag saves."""

from __future__ import annotations

from azure.functions.timer import TimerRequest
from msgraph.graph_service_client import GraphServiceClient

from functions import timers, worker
from shared import wiring
from shared.graph.client import GraphCaller
from shared.graph.contacts import GraphContacts
from shared.graph.probe import MailboxProbe
from shared.graph.subscriptions import GraphSubscriptions
from shared.subscriptions import SubscriptionKeeper
from shared.sync.contacts import ContactsStream
from shared.sync.engine import Engine
from shared.sync.mail import MailStream
from shared.users import EVERYTHING, Granted, parse_user
from tests.functions.conftest import TENANT, App

ANN = "ann@contoso.com"
NO_CONTACTS = Granted(contacts=False, calendar=True, calendar_write_back=False)
WARNING = (
    "Contacts is on, but this deployment does not ask for Contacts.ReadWrite (CONTACTS_SYNC is off): "
    "contacts are not synced"
)


def deployment(app: App, client: GraphServiceClient, granted: Granted) -> wiring.Services:
    """The app's services as wiring builds them for a deployment with these permissions."""
    old = app.services
    caller = GraphCaller()
    engine = Engine(
        app.state,
        app.queue,
        {
            "mail": MailStream(app.state, app.crm, old.mail, org_domains=(TENANT,), clock=app.clock),
            "contacts": ContactsStream(app.state, app.crm, GraphContacts(client, caller)),
        },
        clock=app.clock,
        granted=granted,
    )
    keeper = SubscriptionKeeper(
        app.state,
        GraphSubscriptions(client, caller),
        app.queue,
        engine.streams,
        webhook_base_url=app.webhook.base_url,
        webhook_key=app.webhook.key,
        clock=app.clock,
        granted=granted,
    )
    services = wiring.Services(
        app.state, app.queue, app.crm, old.mail, engine, keeper, MailboxProbe(client, caller, granted)
    )
    wiring.use(services)
    return services


async def run_everything(app: App) -> list[str]:
    """Upkeep, sweep, and every queued job; the Graph paths requested meanwhile."""
    seen = len(app.graph.control.requests())
    await timers.subscription_upkeep(TimerRequest(past_due=False))
    await timers.sync_sweep(TimerRequest(past_due=False))
    for message in app.take_messages():
        await worker.sync_worker(message)
    return [str(r) for r in app.graph.control.requests()[seen:]]


async def ann_asks_for_mail_and_contacts(app: App) -> None:
    app.graph.control.fault(403, count=1000, pathContains="contact", errorCode="ErrorAccessDenied")
    await app.add_user(ANN, MailFolders="inbox", Contacts=True)
    app.deliver(ANN, subject="Quote", internetMessageId="<quote@fabrikam.example>")


async def test_contacts_without_the_permission_warn_and_mail_goes_on(
    app: App, graph_client: GraphServiceClient
) -> None:
    services = deployment(app, graph_client, NO_CONTACTS)
    await ann_asks_for_mail_and_contacts(app)
    requests = await run_everything(app)
    assert not [r for r in requests if "contact" in r.lower()], "no contacts request at all, so no 403"
    row = await app.state.get_user(ANN)
    assert row is not None
    assert row.columns["State"] == "ok" and not row.columns.get("LastError")
    assert row.columns["Warnings"] == WARNING
    assert list(app.crm.journals) == ["<quote@fabrikam.example>"]
    assert [s.stream for s in await app.state.list_subscriptions(ANN)] == ["mail:inbox"]
    checks = {c.name: c for c in await services.probe.check(parse_user(ANN, row.columns))}
    assert checks["contact folders"].ok
    assert checks["contact folders"].detail.startswith("not tried: this deployment does not ask for")
    await run_everything(app)  # a second round: still quiet, still ok
    row = await app.state.get_user(ANN)
    assert row is not None and row.columns["State"] == "ok"


async def test_control_with_the_permission_the_same_row_tries_contacts(
    app: App, graph_client: GraphServiceClient
) -> None:
    deployment(app, graph_client, EVERYTHING)
    await ann_asks_for_mail_and_contacts(app)
    requests = await run_everything(app)
    assert [r for r in requests if "contact" in r.lower()], "the contacts stream ran and met Graph's 403"
    row = await app.state.get_user(ANN)
    assert row is not None and "contacts" in str(row.columns.get("LastError", ""))


async def test_tasks_without_tasks_sync_warn_and_the_check_says_what_the_grant_reaches(
    app: App, graph_client: GraphServiceClient
) -> None:
    no_tasks = Granted(tasks=False)
    services = deployment(app, graph_client, no_tasks)
    await app.add_user(ANN, MailFolders="inbox", Tasks=True)
    requests = await run_everything(app)
    assert not [r for r in requests if "todo" in r.lower()], "no To Do request at all"
    row = await app.state.get_user(ANN)
    assert row is not None and row.columns["State"] == "ok"
    assert row.columns["Warnings"] == (
        "Tasks is on, but this deployment does not ask for Tasks.ReadWrite.All (TASKS_SYNC is off): "
        "To Do tasks are not synced"
    )
    checks = {c.name: c for c in await services.probe.check(parse_user(ANN, row.columns))}
    assert checks["To Do lists"].detail.startswith("not tried: this deployment does not ask for")

    services = deployment(app, graph_client, EVERYTHING)
    checks = {c.name: c for c in await services.probe.check(parse_user(ANN, row.columns))}
    assert checks["To Do lists"].ok
    assert "reach every user's tasks in the tenant" in checks["To Do lists"].detail
