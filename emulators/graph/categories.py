"""Master categories: POST/GET /users/{id}/outlook/masterCategories (a category is applied by putting its
displayName in an item's `categories`)."""

from __future__ import annotations

import uuid

from emulators.graph.odata import context
from emulators.graph.protocol import GraphError, Response
from emulators.graph.routing import Ctx, Router

COLORS = {"none"} | {f"preset{i}" for i in range(25)}


def list_categories(ctx: Ctx) -> Response:
    return Response(
        200, {"@odata.context": context(ctx.req, "masterCategories"), "value": ctx.u.master_categories}
    )


def create_category(ctx: Ctx) -> Response:
    body = ctx.req.json()
    name = str(body.get("displayName") or "")
    color = str(body.get("color") or "none")
    if not name:
        raise GraphError(400, "ErrorInvalidParameter", "displayName is required.")
    if color not in COLORS:
        raise GraphError(400, "ErrorInvalidParameter", f"Invalid color '{color}'.")
    if any(c["displayName"].lower() == name.lower() for c in ctx.u.master_categories):
        raise GraphError(409, "ErrorDuplicateMasterCategory", f"A category named '{name}' already exists.")
    category = {"id": str(uuid.uuid4()), "displayName": name, "color": color}
    ctx.u.master_categories.append(category)
    return Response(201, category)


def delete_category(ctx: Ctx) -> Response:
    before = len(ctx.u.master_categories)
    ctx.u.master_categories[:] = [c for c in ctx.u.master_categories if c["id"] != ctx.params["id"]]
    if len(ctx.u.master_categories) == before:
        raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
    return Response(204)


def routes(r: Router) -> None:
    r.add("GET", "/users/{user}/outlook/masterCategories", list_categories)
    r.add("POST", "/users/{user}/outlook/masterCategories", create_category)
    r.add("DELETE", "/users/{user}/outlook/masterCategories/{id}", delete_category)
