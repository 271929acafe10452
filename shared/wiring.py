"""Builds the real adapters from the settings, once per process, on first use (never at import).

`services()` is what every function and the CLI call. Tests and local tools install their own
`Services` with `use()`; nothing is patched.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from shared.config import Settings
from shared.graph.probe import MailboxProbe
from shared.ports.crm import CrmPort
from shared.ports.graph import MailSource
from shared.ports.state import JobQueue, StateStore
from shared.subscriptions import SubscriptionKeeper
from shared.sync.engine import Engine


@dataclass
class Services:
    state: StateStore
    queue: JobQueue
    crm: CrmPort
    mail: MailSource
    engine: Engine
    keeper: SubscriptionKeeper
    probe: MailboxProbe | None = None
    settings: Settings | None = None

    async def aclose(self) -> None:
        await self.crm.aclose()
        await self.state.aclose()
        close = getattr(self.queue, "aclose", None)
        if close is not None:
            await close()


_services: Services | None = None
_lock = asyncio.Lock()


def use(services: Services | None) -> None:
    """Install (or, with None, forget) the services this process uses."""
    global _services
    _services = services


async def services() -> Services:
    global _services
    if _services is None:
        async with _lock:
            if _services is None:
                _services = await build(Settings.from_env())
    return _services


def build_crm(settings: Settings) -> CrmPort:
    if settings.crm_connector == "dataverse":
        return _dataverse(settings)
    if settings.crm_connector == "bottlecrm":
        from shared.crm.bottlecrm import BottleCrmConnector

        return BottleCrmConnector(settings.crm_base_url, settings.crm_api_token)
    from shared.crm.reference import ReferenceCrmConnector

    return ReferenceCrmConnector(
        settings.crm_base_url, settings.crm_api_token, auth_scheme=settings.crm_auth_scheme
    )


def _dataverse(settings: Settings) -> CrmPort:
    """Dynamics 365: the managed identity (or an app registration trusting it) as the environment's
    application user; a fixed token only for the loopback stand-in (config.py enforces it)."""
    from shared.config import DataverseAuthMode
    from shared.crm.dataverse import DataverseConnector, auth

    url = settings.dataverse_url
    mode = settings.dataverse_auth_mode
    token: auth.StaticToken | auth.IdentityToken
    if mode is DataverseAuthMode.STATIC_TOKEN:
        token = auth.StaticToken(settings.dataverse_static_token)
    elif mode is DataverseAuthMode.WORKLOAD_IDENTITY:
        token = auth.workload_identity(
            settings.graph_tenant_id, settings.dataverse_client_id, settings.managed_identity_client_id, url
        )
    else:
        token = auth.managed_identity(settings.managed_identity_client_id, url)
    return DataverseConnector(url, token)


def _storage_credential(settings: Settings) -> Any:
    """The app's managed identity in Azure; an admin's own sign-in (az login) when `crmsync` runs
    on a workstation."""
    from azure.identity.aio import DefaultAzureCredential

    client_id = settings.storage_client_id or settings.managed_identity_client_id
    return DefaultAzureCredential(managed_identity_client_id=client_id or None)


async def build(settings: Settings, *, table_prefix: str = "") -> Services:
    """`table_prefix` isolates tests that share one storage account; deployments use none."""
    from shared.graph.batch import GraphBatch
    from shared.graph.calendar import GraphCalendar
    from shared.graph.client import GraphCaller, build_graph_client
    from shared.graph.contacts import GraphContacts
    from shared.graph.mail import GraphMailReader
    from shared.graph.subscriptions import GraphSubscriptions
    from shared.graph.tasks import GraphTasks
    from shared.model import StreamKind
    from shared.state.queue import StorageJobQueue
    from shared.state.tables import TableStateStore
    from shared.sync.calendar import CalendarStream
    from shared.sync.contacts import ContactsStream
    from shared.sync.mail import MailStream
    from shared.sync.push import PushStream
    from shared.sync.stream import Stream
    from shared.sync.sweep import DeltaProbe, Sweeper
    from shared.sync.tasks import TasksStream
    from shared.telemetry import configure, use_log_hash_key

    configure(settings.appinsights_connection_string, settings.managed_identity_client_id)
    use_log_hash_key(settings.log_hash_key)
    if settings.storage_connection_string:
        state = TableStateStore.from_connection_string(
            settings.storage_connection_string, table_prefix=table_prefix
        )
        queue = StorageJobQueue.from_connection_string(settings.storage_connection_string)
    else:
        credential = _storage_credential(settings)
        state = TableStateStore.from_service_uri(settings.table_service_uri, credential)
        queue = StorageJobQueue.from_service_uri(settings.queue_service_uri, credential)
    await state.ensure_tables()
    await queue.ensure_queue()
    crm = build_crm(settings)
    client = build_graph_client(settings)
    caller = GraphCaller()
    mail = GraphMailReader(client, caller)
    calendar = GraphCalendar(client, caller)
    streams: dict[StreamKind, Stream] = {
        StreamKind.MAIL: MailStream(
            state, crm, mail, org_domains=settings.org_domains, body_limit=settings.journal_body_max_chars
        ),
        StreamKind.CONTACTS: ContactsStream(state, crm, GraphContacts(client, caller)),
        StreamKind.CALENDAR: CalendarStream(state, crm, calendar, body_limit=settings.journal_body_max_chars),
        StreamKind.PUSH: PushStream(state, crm, calendar),
        StreamKind.TASKS: TasksStream(state, crm, GraphTasks(client, caller)),
    }
    engine = Engine(
        state,
        queue,
        streams,
        sweeper=Sweeper(queue, DeltaProbe(state, GraphBatch(client, caller), streams)),
        granted=settings.granted,
    )
    keeper = SubscriptionKeeper(
        state,
        GraphSubscriptions(client, caller),
        queue,
        streams,
        webhook_base_url=settings.webhook_base_url,
        webhook_key=settings.webhook_key,
        granted=settings.granted,
    )
    probe = MailboxProbe(client, caller, settings.granted)
    return Services(state, queue, crm, mail, engine, keeper, probe, settings)
