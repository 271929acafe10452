"""The Outlook side of the contacts stream: the owned contact folder, its contacts delta, and writes
inside that folder only, with msgraph-sdk.

- The folder is found by name among the top-level folders (created under the default Contacts
  folder) or created; a lost race to create it (409) reads the list again.
- Delta is per folder. Every request re-sends the Prefer set (page size, immutable ids); links are
  used verbatim (`with_url`). The first request `$select`s the mapped fields and `$expand`s our
  `CrmContactId` property, so a contact we created before a crash is recognised on the re-run.
- Writes always resend `displayName` (Outlook regenerates it from the name fields otherwise) and the
  collections whole (Outlook replaces them); an update carries `If-Match` with the changeKey we based
  it on, so an Outlook edit made after our read is not overwritten (412: `OutlookChanged`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.headers_collection import HeadersCollection
from msgraph.generated.models.contact import Contact
from msgraph.generated.models.contact_folder import ContactFolder
from msgraph.generated.models.email_address import EmailAddress
from msgraph.generated.models.physical_address import PhysicalAddress
from msgraph.generated.models.single_value_legacy_extended_property import (
    SingleValueLegacyExtendedProperty,
)
from msgraph.generated.users.item.contact_folders.item.contacts.delta.delta_request_builder import (
    DeltaRequestBuilder,
)
from msgraph.graph_service_client import GraphServiceClient

from shared.errors import GraphError, GraphNotFound, OutlookChanged
from shared.graph.client import GraphCaller
from shared.model import (
    ContactFields,
    OutlookChange,
    OutlookContact,
    OutlookContactRemoved,
    OutlookItem,
    Page,
    PostalAddress,
)

CRM_ID_PROPERTY = "String {6b0f6c2e-3a5e-4c55-9f1e-2d8f3c1a7e41} Name CrmContactId"
SELECT = [
    "id", "changeKey", "lastModifiedDateTime", "givenName", "surname", "displayName", "emailAddresses",
    "businessPhones", "mobilePhone", "companyName", "jobTitle", "department", "businessAddress",
    "personalNotes",
]  # fmt: skip
EXPAND = [f"singleValueExtendedProperties($filter=id eq '{CRM_ID_PROPERTY}')"]


def prefer_headers(page_size: int) -> HeadersCollection:
    headers = HeadersCollection()  # always a new collection (a shared default leaked in old kiota)
    headers.add("Prefer", f"odata.maxpagesize={page_size}")
    headers.add("Prefer", 'IdType="ImmutableId"')
    return headers


class GraphContacts:
    def __init__(self, client: GraphServiceClient, caller: GraphCaller, *, page_size: int = 100) -> None:
        self._client = client
        self._caller = caller
        self._page_size = page_size

    def _config(self, query: Any = None, if_match: str = "") -> RequestConfiguration[Any]:
        headers = prefer_headers(self._page_size)
        if if_match:
            headers.add("If-Match", f'W/"{if_match}"')
        return RequestConfiguration(headers=headers, query_parameters=query)

    async def owned_folder(self, user: str, name: str) -> str:
        """The id of the top-level contact folder called `name`, created when missing."""
        found = await self._find_folder(user, name)
        if found:
            return found
        folders = self._client.users.by_user_id(user).contact_folders
        try:
            created = await self._caller.call(
                user,
                lambda: folders.post(ContactFolder(display_name=name), request_configuration=self._config()),
            )
        except GraphError as error:
            if error.status != 409:
                raise
            found = await self._find_folder(user, name)  # another job created it meanwhile
            if not found:
                raise
            return found
        if created is None or not created.id:
            raise GraphError("Graph created the contact folder but returned no id")
        return created.id

    async def _find_folder(self, user: str, name: str) -> str:
        builder: Any = self._client.users.by_user_id(user).contact_folders
        page = await self._caller.call(user, lambda: builder.get(request_configuration=self._config()))
        while page is not None:
            for folder in page.value or []:
                if (folder.display_name or "").strip().lower() == name.strip().lower() and folder.id:
                    return str(folder.id)
            if not page.odata_next_link:
                return ""
            page = await self._caller.call(
                user, _getter(builder.with_url(page.odata_next_link), self._config())
            )
        return ""

    async def read_page(self, user: str, folder_id: str, link: str) -> Page[OutlookChange]:
        """One delta page of the folder: from a saved link, or (link == "") a new initial round."""
        builder: DeltaRequestBuilder = (
            self._client.users.by_user_id(user).contact_folders.by_contact_folder_id(folder_id).contacts.delta
        )
        if link:
            request = builder.with_url(link)
            config = self._config()
        else:
            request = builder
            config = self._config(
                DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(select=SELECT, expand=EXPAND)
            )
        response = await self._caller.call(user, lambda: request.get(request_configuration=config))
        if response is None:
            return Page()
        changes: list[OutlookChange] = []
        for contact in response.value or []:
            if "@removed" in (contact.additional_data or {}):
                changes.append(OutlookContactRemoved(id=contact.id or ""))
            else:
                changes.append(to_item(contact))
        return Page(changes, response.odata_next_link or "", response.odata_delta_link or "")

    def _item(self, user: str, folder_id: str, contact_id: str) -> Any:
        folder = self._client.users.by_user_id(user).contact_folders.by_contact_folder_id(folder_id)
        return folder.contacts.by_contact_id(contact_id)

    async def get(self, user: str, folder_id: str, contact_id: str) -> OutlookItem | None:
        from msgraph.generated.users.item.contact_folders.item.contacts.item.contact_item_request_builder import (  # noqa: E501
            ContactItemRequestBuilder,
        )

        builder = self._item(user, folder_id, contact_id)
        query = ContactItemRequestBuilder.ContactItemRequestBuilderGetQueryParameters(
            select=SELECT, expand=EXPAND
        )
        try:
            contact = await self._caller.call(
                user, lambda: builder.get(request_configuration=self._config(query))
            )
        except GraphNotFound:
            return None
        return None if contact is None else to_item(contact)

    async def create(
        self, user: str, folder_id: str, fields: ContactFields, *, crm_id: str, notes: bool
    ) -> OutlookItem:
        body = to_graph(fields, notes=notes)
        body.single_value_extended_properties = [
            SingleValueLegacyExtendedProperty(id=CRM_ID_PROPERTY, value=crm_id)
        ]
        contacts = (
            self._client.users.by_user_id(user).contact_folders.by_contact_folder_id(folder_id).contacts
        )
        created = await self._caller.call(
            user, lambda: contacts.post(body, request_configuration=self._config())
        )
        if created is None or not created.id:
            raise GraphError("Graph created the contact but returned no id")
        return to_item(created, crm_tag=crm_id)

    async def update(
        self,
        user: str,
        folder_id: str,
        contact_id: str,
        fields: ContactFields,
        *,
        change_key: str,
        notes: bool,
    ) -> OutlookItem:
        builder = self._item(user, folder_id, contact_id)
        body = to_graph(fields, notes=notes)
        config = self._config(if_match=change_key)
        try:
            updated = await self._caller.call(user, lambda: builder.patch(body, request_configuration=config))
        except GraphError as error:
            if error.status == 412:
                raise OutlookChanged(str(error), status=412, code=error.code) from error
            raise
        if updated is None:
            raise GraphError("Graph updated the contact but returned nothing")
        return to_item(updated)

    async def delete(self, user: str, folder_id: str, contact_id: str) -> None:
        """Delete from the owned folder (a contact already gone is not an error)."""
        builder = self._item(user, folder_id, contact_id)
        try:
            await self._caller.call(user, lambda: builder.delete(request_configuration=self._config()))
        except GraphNotFound:
            return


def _getter(builder: Any, config: RequestConfiguration[Any]) -> Any:
    return lambda: builder.get(request_configuration=config)


def _text(value: str | None) -> str:
    return (value or "").strip()


def to_fields(contact: Contact) -> ContactFields:
    postal = contact.business_address or PhysicalAddress()
    return ContactFields(
        given_name=_text(contact.given_name),
        surname=_text(contact.surname),
        display_name=_text(contact.display_name),
        emails=tuple(
            _text(e.address) for e in contact.email_addresses or [] if e is not None and _text(e.address)
        ),
        business_phones=tuple(_text(p) for p in contact.business_phones or [] if _text(p)),
        mobile_phone=_text(contact.mobile_phone),
        company=_text(contact.company_name),
        job_title=_text(contact.job_title),
        department=_text(contact.department),
        business_address=PostalAddress(
            street=_text(postal.street),
            city=_text(postal.city),
            state=_text(postal.state),
            postal_code=_text(postal.postal_code),
            country=_text(postal.country_or_region),
        ),
        notes=_text(contact.personal_notes),
    )


def _tag(contact: Contact) -> str:
    for prop in contact.single_value_extended_properties or []:
        if (prop.id or "").lower() == CRM_ID_PROPERTY.lower():
            return _text(prop.value)
    return ""


def to_item(contact: Contact, *, crm_tag: str = "") -> OutlookItem:
    return OutlookItem(
        contact=OutlookContact(
            id=contact.id or "", change_key=contact.change_key or "", fields=to_fields(contact)
        ),
        modified=contact.last_modified_date_time,
        crm_tag=crm_tag or _tag(contact),
    )


def _emails(addresses: Sequence[str], name: str) -> list[EmailAddress]:
    return [EmailAddress(address=a, name=name or a) for a in addresses]


def to_graph(fields: ContactFields, *, notes: bool) -> Contact:
    """The Graph body for a create or a full update of the mapped fields (`displayName` always set)."""
    postal = fields.business_address
    body = Contact(
        given_name=fields.given_name,
        surname=fields.surname,
        display_name=fields.display_name,
        email_addresses=_emails(fields.emails, fields.display_name),
        business_phones=list(fields.business_phones),
        mobile_phone=fields.mobile_phone,
        company_name=fields.company,
        job_title=fields.job_title,
        department=fields.department,
        business_address=PhysicalAddress(
            street=postal.street,
            city=postal.city,
            state=postal.state,
            postal_code=postal.postal_code,
            country_or_region=postal.country,
        ),
    )
    if notes:
        body.personal_notes = fields.notes
    return body
