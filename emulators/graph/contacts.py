"""Contact folders, contacts (create 201 / PATCH 200 partial / DELETE 204, Outlook's collection caps,
displayName regeneration, If-Match), and their per-folder delta."""

from __future__ import annotations

import functools
import re
from typing import Any

from emulators.graph import delta
from emulators.graph.odata import compile_filter, context, list_page, parse_expand, parse_select
from emulators.graph.protocol import GraphError, Request, Response, iso, utcnow
from emulators.graph.routing import Ctx, Router
from emulators.graph.store import Change, Contact, ContactFolder, Tenant, User

CONTACT_TYPE = "#microsoft.graph.contact"
WRITABLE: dict[str, Any] = {
    "assistantName": None,
    "birthday": None,
    "businessAddress": {},
    "businessHomePage": None,
    "businessPhones": [],
    "categories": [],
    "children": [],
    "companyName": None,
    "department": None,
    "displayName": None,
    "emailAddresses": [],
    "fileAs": "",
    "generation": None,
    "givenName": None,
    "homeAddress": {},
    "homePhones": [],
    "imAddresses": [],
    "initials": None,
    "jobTitle": None,
    "manager": None,
    "middleName": None,
    "mobilePhone": None,
    "nickName": None,
    "officeLocation": None,
    "otherAddress": {},
    "personalNotes": "",
    "profession": None,
    "spouseName": None,
    "surname": None,
    "title": None,
    "yomiCompanyName": None,
    "yomiGivenName": None,
    "yomiSurname": None,
}
NAME_FIELDS = ("givenName", "middleName", "surname", "title", "generation", "nickName")
CAPS = {
    "emailAddresses": ("EmailAddresses", 3),
    "businessPhones": ("BusinessPhones", 2),
    "homePhones": ("HomePhones", 2),
}
CONTACT_PROPS = frozenset(
    [*WRITABLE, "id", "createdDateTime", "lastModifiedDateTime", "changeKey", "parentFolderId"]
)
FOLDER_PROPS = frozenset(["id", "displayName", "parentFolderId"])


def generated_display_name(data: dict[str, Any]) -> str:
    parts = [data.get(k) for k in ("givenName", "middleName", "surname")]
    name = " ".join(p for p in parts if p)
    if not name:
        emails = data.get("emailAddresses") or []
        name = data.get("companyName") or (emails[0].get("address", "") if emails else "")
    return name or ""


def validate(body: dict[str, Any]) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    for k, v in body.items():
        if k.startswith("@odata."):
            continue
        if k == "singleValueExtendedProperties":
            clean[k] = [{"id": p["id"], "value": str(p.get("value", ""))} for p in v or []]
            continue
        if k == "extensions":
            clean[k] = {e["extensionName"]: open_extension(e) for e in v or []}
            continue
        if k not in WRITABLE:
            raise GraphError(
                400,
                "RequestBodyRead",
                f"The property '{k}' does not exist on type 'microsoft.graph.contact'. Make sure to only use "
                "property names that are defined by the type or mark the type as open type.",
            )
        if k in CAPS and v is not None and len(v) > CAPS[k][1]:
            name, cap = CAPS[k]
            raise GraphError(
                400,
                "ErrorInvalidArgument",
                f"The multi value property {name} has {len(v)} entries, "
                f"that exceeds the max allowed value of {cap}",
            )
        clean[k] = v
    return clean


def open_extension(body: dict[str, Any]) -> dict[str, Any]:
    name = body.get("extensionName") or ""
    if not name:
        raise GraphError(400, "ErrorInvalidParameter", "extensionName is required.")
    if name.lower().startswith(("com.microsoft", "com.onmicrosoft")):
        raise GraphError(400, "ErrorInvalidParameter", "The extension name uses a reserved prefix.")
    props = {
        k: v for k, v in body.items() if not k.startswith("@odata.") and k not in ("id", "extensionName")
    }
    return {
        "@odata.type": "#microsoft.graph.openTypeExtension",
        "id": f"Microsoft.OutlookServices.OpenTypeExtension.{name}",
        "extensionName": name,
        **props,
    }


def render_contact(c: Contact, select: frozenset[str] | None, expand: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"@odata.type": CONTACT_TYPE, "@odata.etag": f'W/"{c.change_key}"', "id": c.id}
    full = {
        "createdDateTime": iso(c.created),
        "lastModifiedDateTime": iso(c.modified),
        "changeKey": c.change_key,
        "parentFolderId": c.folder_id,
        **{k: c.data.get(k, default) for k, default in WRITABLE.items()},
    }
    out.update({k: v for k, v in full.items() if select is None or k in select})
    if "extensions" in expand:
        wanted_ext = {w.lower() for w in re.findall(r"'([^']*)'", expand["extensions"])}
        out["extensions"] = [
            e
            for e in c.data.get("extensions", {}).values()
            if not wanted_ext or e["id"].lower() in wanted_ext or e["extensionName"].lower() in wanted_ext
        ]
    if "singlevalueextendedproperties" in expand:
        wanted = re.findall(r"'([^']*)'", expand["singlevalueextendedproperties"])
        props = c.data.get("singleValueExtendedProperties", [])
        out["singleValueExtendedProperties"] = [
            p for p in props if not wanted or p["id"].lower() in {w.lower() for w in wanted}
        ]
    return out


def render_folder(f: ContactFolder, select: frozenset[str] | None = None) -> dict[str, Any]:
    full = {"displayName": f.display_name, "parentFolderId": f.parent_id}
    out: dict[str, Any] = {"@odata.type": "#microsoft.graph.contactFolder", "id": f.id}
    out.update({k: v for k, v in full.items() if select is None or k in select})
    return out


# store operations (also used by seed loading) ------------------------------------------------------------
def create_contact(tenant: Tenant, user: User, folder: ContactFolder, body: dict[str, Any]) -> Contact:
    data = validate(body)
    if not data.get("displayName"):
        data["displayName"] = generated_display_name(data)
    now = utcnow()
    c = Contact(
        tenant.new_id("AAMkAGcontact"), folder.id, data, tenant.new_change_key(), now, now, tenant.next_seq()
    )
    folder.contacts[c.id] = c
    folder.log.record(c.created_seq, c.id, "upsert")
    tenant.emit(Change(user.id, "contact", folder.id, (c.id, c.id), "created", c.change_key))
    return c


def update_contact(tenant: Tenant, user: User, c: Contact, body: dict[str, Any]) -> None:
    patch = validate(body)
    names_changed = any(k in patch and patch[k] != c.data.get(k) for k in NAME_FIELDS)
    if "extensions" in patch:
        patch["extensions"] = {**c.data.get("extensions", {}), **patch["extensions"]}
    c.data.update(patch)  # collections are replaced as a whole
    if names_changed and "displayName" not in patch:
        c.data["displayName"] = generated_display_name(c.data)  # Outlook regenerates it
    c.change_key = tenant.new_change_key()
    c.modified = utcnow()
    folder = user.contact_folders[c.folder_id]
    folder.log.record(tenant.next_seq(), c.id, "upsert")
    tenant.emit(Change(user.id, "contact", folder.id, (c.id, c.id), "updated", c.change_key))


def delete_contact(tenant: Tenant, user: User, c: Contact) -> None:
    folder = user.contact_folders[c.folder_id]
    del folder.contacts[c.id]
    folder.log.record(tenant.next_seq(), c.id, "removed")
    tenant.emit(Change(user.id, "contact", folder.id, (c.id, c.id), "deleted"))


def create_folder(tenant: Tenant, user: User, name: str, parent_id: str) -> ContactFolder:
    if any(
        f.display_name.lower() == name.lower() and f.parent_id == parent_id
        for f in user.contact_folders.values()
    ):
        raise GraphError(409, "ErrorFolderExists", "A folder with the specified name already exists.")
    f = ContactFolder(tenant.new_id("AAMkAGcfolder"), name, parent_id)
    user.contact_folders[f.id] = f
    user.contact_folder_log.record(tenant.next_seq(), f.id, "upsert")
    return f


# handlers -------------------------------------------------------------------------------------------------
def _folder(ctx: Ctx) -> ContactFolder:
    return ctx.u.contact_folder(ctx.params.get("cfolder", "contacts"))


def _contact(ctx: Ctx) -> Contact:
    c = ctx.u.contact(ctx.params["contact"])
    if "cfolder" in ctx.params and _folder(ctx).id != c.folder_id:
        raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
    return c


def _check_if_match(req: Request, c: Contact) -> None:
    want = req.headers.get("if-match", "")
    if want and want != "*" and want.removeprefix("W/").strip('"') != c.change_key:
        raise GraphError(
            412,
            "ErrorIrresolvableConflict",
            "The change key passed in the request does not match the current change key for the item.",
        )


def list_folders(ctx: Ctx) -> Response:
    u = ctx.u
    parent = _folder(ctx).id if "cfolder" in ctx.params else u.contact_root_id
    select = parse_select(ctx.req, FOLDER_PROPS, "microsoft.graph.contactFolder")
    rows = [render_folder(f, select) for f in u.contact_folders.values() if f.parent_id == parent]
    return Response(200, list_page(ctx.req, rows, context(ctx.req, "contactFolders")))


def get_folder(ctx: Ctx) -> Response:
    return Response(200, render_folder(_folder(ctx)))


def post_folder(ctx: Ctx) -> Response:
    u = ctx.u
    parent = _folder(ctx).id if "cfolder" in ctx.params else u.contact_root_id
    name = ctx.req.json().get("displayName") or ""
    if not name:
        raise GraphError(400, "ErrorInvalidParameter", "The displayName is required.")
    return Response(201, render_folder(create_folder(ctx.emu.tenant, u, name, parent)))


def delete_folder(ctx: Ctx) -> Response:
    u, tenant = ctx.u, ctx.emu.tenant
    f = _folder(ctx)
    if f.id == u.contact_root_id:
        raise GraphError(403, "ErrorDeleteDistinguishedFolder", "Distinguished folders cannot be deleted.")
    for c in list(f.contacts.values()):
        delete_contact(tenant, u, c)
    del u.contact_folders[f.id]
    u.contact_folder_log.record(tenant.next_seq(), f.id, "removed")
    return Response(204)


def list_contacts(ctx: Ctx) -> Response:
    select = parse_select(ctx.req, CONTACT_PROPS, "microsoft.graph.contact")
    expand = parse_expand(ctx.req)
    items = list(_folder(ctx).contacts.values())
    if ctx.req.query.get("$filter"):
        test = compile_filter(ctx.req.query["$filter"])
        items = [c for c in items if test(functools.partial(_contact_prop, c))]
    page = list_page(
        ctx.req, items, context(ctx.req, "contacts"), render=lambda c: render_contact(c, select, expand)
    )
    return Response(200, page)


def _contact_prop(c: Contact, p: str) -> Any:
    if p == "id":
        return c.id
    if p == "singleValueExtendedProperties":
        return c.data.get(p, [])
    if p == "parentFolderId":
        return c.folder_id
    return c.data.get(p, WRITABLE.get(p))


def get_contact(ctx: Ctx) -> Response:
    select = parse_select(ctx.req, CONTACT_PROPS, "microsoft.graph.contact")
    return Response(200, render_contact(_contact(ctx), select, parse_expand(ctx.req)))


def post_contact(ctx: Ctx) -> Response:
    c = create_contact(ctx.emu.tenant, ctx.u, _folder(ctx), ctx.req.json())
    return Response(201, render_contact(c, None, {}))


def patch_contact(ctx: Ctx) -> Response:
    c = _contact(ctx)
    _check_if_match(ctx.req, c)
    update_contact(ctx.emu.tenant, ctx.u, c, ctx.req.json())
    return Response(200, render_contact(c, None, {}))


def delete(ctx: Ctx) -> Response:
    c = _contact(ctx)
    _check_if_match(ctx.req, c)
    delete_contact(ctx.emu.tenant, ctx.u, c)
    return Response(204)


def post_extension(ctx: Ctx) -> Response:
    """POST …/contacts/{id}/extensions: writing an extension changes the contact (new changeKey)."""
    c = _contact(ctx)
    ext = open_extension(ctx.req.json())
    if ext["extensionName"] in c.data.get("extensions", {}):
        raise GraphError(409, "ErrorConflict", "An extension with this name already exists.")
    update_contact(ctx.emu.tenant, ctx.u, c, {"extensions": [ctx.req.json()]})
    return Response(201, ext)


def get_extension(ctx: Ctx) -> Response:
    c = _contact(ctx)
    name = ctx.params["ext"].removeprefix("Microsoft.OutlookServices.OpenTypeExtension.")
    ext = c.data.get("extensions", {}).get(name)
    if ext is None:
        raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
    return Response(200, ext)


def patch_extension(ctx: Ctx) -> Response:
    c = _contact(ctx)
    name = ctx.params["ext"].removeprefix("Microsoft.OutlookServices.OpenTypeExtension.")
    if name not in c.data.get("extensions", {}):
        raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
    update_contact(ctx.emu.tenant, ctx.u, c, {"extensions": [{**ctx.req.json(), "extensionName": name}]})
    return Response(204)


def folder_delta(ctx: Ctx) -> Response:
    u, req, emu = ctx.u, ctx.req, ctx.emu
    cursor = delta.resume(emu.states, req, u.id, emu.tenant.seq)
    if cursor is None:
        select = parse_select(req, FOLDER_PROPS, "microsoft.graph.contactFolder")
        opts = {"select": sorted(select) if select is not None else None}
        cursor = delta.begin(emu.states, u.id, "contactFolders", emu.tenant.seq, opts)
    sel = cursor.options.get("select")
    select = frozenset(sel) if sel is not None else None

    def emit(seq: int, key: str, kind: str, c: delta.Cursor) -> list[dict[str, Any]] | None:
        if key == u.contact_root_id:
            return None
        f = u.contact_folders.get(key)
        if kind == "removed" or f is None:
            return None if c.initial(seq) else [{"id": key, "@removed": {"reason": "deleted"}}]
        return [render_folder(f, select)]

    link = f"{req.base_url}/users/{u.id}/contactFolders/delta"
    page = delta.run_page(
        emu.states, u.contact_folder_log, cursor, limit=delta.page_size(req), link=link, emit=emit
    )
    return Response(200, page.body(context(req, "Collection(contactFolder)")))


def contact_delta(ctx: Ctx) -> Response:
    u, req, emu = ctx.u, ctx.req, ctx.emu
    cursor = delta.resume(emu.states, req, u.id, emu.tenant.seq)
    if cursor is None:
        folder = _folder(ctx)
        select = parse_select(req, CONTACT_PROPS, "microsoft.graph.contact")
        opts = {
            "select": sorted(select) if select is not None else None,
            "expand": req.query.get("$expand", ""),
        }
        cursor = delta.begin(emu.states, u.id, folder.id, emu.tenant.seq, opts)
    found = u.contact_folders.get(cursor.collection)
    if found is None:
        raise delta.sync_state_not_found(cursor.generation, cursor.generation)
    folder = found
    sel = cursor.options.get("select")
    select = frozenset(sel) if sel is not None else None
    expand = parse_expand(Request("GET", "", {"$expand": cursor.options.get("expand", "")}, {}))

    def emit(seq: int, key: str, kind: str, c: delta.Cursor) -> list[dict[str, Any]] | None:
        contact = folder.contacts.get(key)
        if kind == "removed" or contact is None:
            if c.initial(seq):
                return None
            return [{"@odata.type": CONTACT_TYPE, "id": key, "@removed": {"reason": "deleted"}}]
        return [render_contact(contact, select, expand)]

    link = f"{req.base_url}/users/{u.id}/contactFolders/{folder.id}/contacts/delta"
    page = delta.run_page(emu.states, folder.log, cursor, limit=delta.page_size(req), link=link, emit=emit)
    return Response(200, page.body(context(req, "Collection(contact)")))


def routes(r: Router) -> None:
    r.add("GET", "/users/{user}/contactFolders/delta", folder_delta)
    r.add("GET", "/users/{user}/contactFolders", list_folders)
    r.add("POST", "/users/{user}/contactFolders", post_folder)
    r.add("GET", "/users/{user}/contactFolders/{cfolder}", get_folder)
    r.add("DELETE", "/users/{user}/contactFolders/{cfolder}", delete_folder)
    r.add("GET", "/users/{user}/contactFolders/{cfolder}/childFolders", list_folders)
    r.add("POST", "/users/{user}/contactFolders/{cfolder}/childFolders", post_folder)
    r.add("GET", "/users/{user}/contactFolders/{cfolder}/contacts/delta", contact_delta)
    r.add("GET", "/users/{user}/contacts/delta", contact_delta)
    for base in ("/users/{user}", "/users/{user}/contactFolders/{cfolder}"):
        r.add("GET", base + "/contacts", list_contacts)
        r.add("POST", base + "/contacts", post_contact)
        r.add("GET", base + "/contacts/{contact}", get_contact)
        r.add("PATCH", base + "/contacts/{contact}", patch_contact)
        r.add("DELETE", base + "/contacts/{contact}", delete)
        r.add("POST", base + "/contacts/{contact}/extensions", post_extension)
        r.add("GET", base + "/contacts/{contact}/extensions/{ext}", get_extension)
        r.add("PATCH", base + "/contacts/{contact}/extensions/{ext}", patch_extension)
