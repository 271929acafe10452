"""The reference CRM's routes: the public API of `docs/crm-api.yaml` and the control API `/_crm/...`."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from emulators.crm import page, validate
from emulators.crm.activities import Appointments, Journals
from emulators.crm.db import Database
from emulators.crm.gate import Controls, Fault, Gate
from emulators.crm.people import People
from emulators.crm.tasks import Tasks
from emulators.crm.validate import ApiError

VERSION = "1.2.0"
MAX_BULK = 100  # journals per POST /journals/bulk


class Crm:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.people = People(db)
        self.journals = Journals(db, self.people)
        self.appointments = Appointments(db, self.people)
        self.tasks = Tasks(db, self.people)


async def _body(request: Request) -> dict[str, Any]:
    try:
        data = json.loads(await request.body() or b"null")
    except ValueError:
        raise ApiError(400, "badRequest", "the body is not valid JSON") from None
    return validate.body_object(data)


def _ref(ref: dict[str, Any]) -> JSONResponse:
    return JSONResponse(ref, status_code=201 if ref.get("created") else 200)


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit", "500")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise ApiError(400, "badRequest", "'limit' must be an integer from 1 to 1000")
    return int(raw)


def _owner(request: Request) -> str:
    owner = request.query_params.get("owner")
    if not owner:
        raise ApiError(400, "badRequest", "'owner' is required")
    return owner


def api_routes(crm: Crm, controls: Controls | None = None) -> list[Route]:
    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": VERSION})

    async def list_people(request: Request) -> Response:
        return JSONResponse({"people": crm.people.all(request.query_params.get("owner"))})

    async def lookup(request: Request) -> Response:
        addresses = (await _body(request)).get("addresses")
        if (
            not isinstance(addresses, list)
            or not all(isinstance(a, str) for a in addresses)
            or len(addresses) > 500
        ):
            raise ApiError(400, "badRequest", "'addresses' must be a list of at most 500 strings")
        return JSONResponse({"matches": crm.people.lookup(addresses)})

    async def journals(request: Request) -> Response:
        return JSONResponse({"journals": crm.journals.all(request.query_params.get("owner"))})

    async def journal(request: Request) -> Response:
        key = request.path_params["key"]
        if request.method == "PUT":
            return _ref(crm.journals.put(key, await _body(request)))
        return JSONResponse(crm.journals.get(key))

    async def journals_bulk(request: Request) -> Response:
        items = (await _body(request)).get("journals")
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_BULK:
            raise ApiError(400, "badRequest", f"'journals' must be a list of 1 to {MAX_BULK} journals")
        # each item meets the faults a `PUT /journals/{key}` of its own would meet (their delays side by
        # side, as concurrent PUTs), and is counted as a journal write
        keys = [str(item.get("key") or "") if isinstance(item, dict) else "" for item in items]
        faults = [controls.take_fault("PUT", f"/journals/{key}") if controls else None for key in keys]
        if controls is not None:
            controls.journal_writes += len(items)
        delay = max((f.delay_seconds for f in faults if f is not None), default=0.0)
        if delay:
            await asyncio.sleep(delay)
        results = []
        for item, fault in zip(items, faults, strict=True):
            if fault is None or fault.status is None or fault.apply_then_fail:
                result = crm.journals.put_item(item)
            if fault is not None and fault.status is not None:
                code = "throttled" if fault.status == 429 else "injected"
                error = {"status": fault.status, "code": code, "message": fault.message}
                if fault.retry_after is not None:
                    error["retryAfter"] = fault.retry_after
                result = {"key": str(item.get("key") or "") if isinstance(item, dict) else "", "error": error}
            results.append(result)
        return JSONResponse({"results": results})

    async def appointments(request: Request) -> Response:
        if request.method == "POST":
            return _ref(crm.appointments.create(await _body(request)))
        return JSONResponse({"appointments": crm.appointments.all(request.query_params.get("owner"))})

    async def appointment_by_key(request: Request) -> Response:
        key = request.path_params["key"]
        if request.method == "PUT":
            return _ref(crm.appointments.put(key, await _body(request)))
        if request.method == "DELETE":
            crm.appointments.delete(key)
            return Response(status_code=204)
        return JSONResponse(crm.appointments.get("key", key))

    async def cancel(request: Request) -> Response:
        return _ref(crm.appointments.cancel(request.path_params["key"]))

    async def appointment_changes(request: Request) -> Response:
        query = request.query_params
        return JSONResponse(crm.appointments.changes(_owner(request), query.get("cursor"), _limit(request)))

    async def appointment(request: Request) -> Response:
        row_id = request.path_params["id"]
        if request.method == "PATCH":
            return _ref(crm.appointments.patch(row_id, await _body(request)))
        return JSONResponse(crm.appointments.get("id", row_id))

    async def contacts(request: Request) -> Response:
        return _ref(crm.people.create({**(await _body(request)), "kind": "contact"}))

    async def contact_by_key(request: Request) -> Response:
        return _ref(crm.people.put_by_key(request.path_params["key"], await _body(request)))

    async def contact_changes(request: Request) -> Response:
        query = request.query_params
        return JSONResponse(crm.people.changes(_owner(request), query.get("cursor"), _limit(request)))

    async def contact(request: Request) -> Response:
        row_id = request.path_params["id"]
        if request.method == "PATCH":
            if_owner = request.query_params.get("owner")
            return _ref(crm.people.patch(row_id, await _body(request), if_owner=if_owner))
        if request.method == "DELETE":
            crm.people.delete(row_id, if_owner=request.query_params.get("owner"))
            return Response(status_code=204)
        return JSONResponse(crm.people.get(row_id))

    async def tasks(request: Request) -> Response:
        return _ref(crm.tasks.create(await _body(request)))

    async def task_by_key(request: Request) -> Response:
        return _ref(crm.tasks.put_by_key(request.path_params["key"], await _body(request)))

    async def task_changes(request: Request) -> Response:
        query = request.query_params
        return JSONResponse(crm.tasks.changes(_owner(request), query.get("cursor"), _limit(request)))

    async def task(request: Request) -> Response:
        row_id = request.path_params["id"]
        if request.method == "PATCH":
            return _ref(crm.tasks.patch(row_id, await _body(request)))
        if request.method == "DELETE":
            crm.tasks.delete(row_id)
            return Response(status_code=204)
        return JSONResponse(crm.tasks.get(row_id))

    return [
        Route("/health", health, methods=["GET"]),
        Route("/people", list_people, methods=["GET"]),
        Route("/people/lookup", lookup, methods=["POST"]),
        Route("/journals", journals, methods=["GET"]),
        Route("/journals/bulk", journals_bulk, methods=["POST"]),
        Route("/journals/{key:path}", journal, methods=["GET", "PUT"]),
        Route("/appointments", appointments, methods=["GET", "POST"]),
        Route("/appointments/changes", appointment_changes, methods=["GET"]),
        Route("/appointments/by-key/{key:path}/cancel", cancel, methods=["POST"]),
        Route("/appointments/by-key/{key:path}", appointment_by_key, methods=["GET", "PUT", "DELETE"]),
        Route("/appointments/{id}", appointment, methods=["GET", "PATCH"]),
        Route("/contacts", contacts, methods=["POST"]),
        Route("/contacts/changes", contact_changes, methods=["GET"]),
        Route("/contacts/by-key/{key:path}", contact_by_key, methods=["PUT"]),
        Route("/contacts/{id}", contact, methods=["GET", "PATCH", "DELETE"]),
        Route("/tasks", tasks, methods=["POST"]),
        Route("/tasks/changes", task_changes, methods=["GET"]),
        Route("/tasks/by-key/{key:path}", task_by_key, methods=["PUT"]),
        Route("/tasks/{id}", task, methods=["GET", "PATCH", "DELETE"]),
    ]


def control_routes(crm: Crm, controls: Controls) -> list[Route]:
    async def home(request: Request) -> Response:
        return HTMLResponse(
            page.render(crm.people.all(include_companies=True), crm.journals.all(), crm.appointments.all())
        )

    async def people(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse(
                {"people": crm.people.all(request.query_params.get("owner"), include_companies=True)}
            )
        body = await _body(request)
        docs = body["people"] if isinstance(body.get("people"), list) else [body]
        return JSONResponse(
            {"refs": [crm.people.create(validate.body_object(d)) for d in docs]}, status_code=201
        )

    async def person(request: Request) -> Response:
        row_id = request.path_params["id"]
        if request.method == "DELETE":
            crm.people.delete(row_id)
            return Response(status_code=204)
        return _ref(crm.people.patch(row_id, await _body(request)))

    async def journals(request: Request) -> Response:
        return JSONResponse({"journals": crm.journals.all(request.query_params.get("owner"))})

    async def appointments(request: Request) -> Response:
        if request.method == "POST":
            return _ref(crm.appointments.create(await _body(request)))
        return JSONResponse({"appointments": crm.appointments.all(request.query_params.get("owner"))})

    async def appointment(request: Request) -> Response:
        return _ref(crm.appointments.patch(request.path_params["id"], await _body(request)))

    async def all_tasks(request: Request) -> Response:
        if request.method == "POST":
            return _ref(crm.tasks.create(await _body(request)))
        return JSONResponse({"tasks": crm.tasks.all(request.query_params.get("owner"))})

    async def one_task(request: Request) -> Response:
        row_id = request.path_params["id"]
        if request.method == "DELETE":
            crm.tasks.delete(row_id)
            return Response(status_code=204)
        return _ref(crm.tasks.patch(row_id, await _body(request)))

    async def faults(request: Request) -> Response:
        if request.method == "POST":
            body = await _body(request)
            try:
                controls.faults.append(Fault.from_json(body))
            except (KeyError, TypeError, ValueError) as exc:
                raise ApiError(400, "badRequest", f"bad fault: {exc}") from None
        elif request.method == "DELETE":
            controls.faults.clear()
        return JSONResponse({"faults": [vars(f) for f in controls.faults]})

    async def stats(request: Request) -> Response:
        if request.method == "DELETE":
            controls.clear_stats()
        return JSONResponse(controls.stats())

    async def reset(request: Request) -> Response:
        crm.db.reset()
        controls.faults.clear()
        controls.clear_stats()
        return JSONResponse({"reset": True})

    return [
        Route("/", home, methods=["GET"]),
        Route("/_crm/people", people, methods=["GET", "POST"]),
        Route("/_crm/people/{id}", person, methods=["PATCH", "DELETE"]),
        Route("/_crm/journals", journals, methods=["GET"]),
        Route("/_crm/appointments", appointments, methods=["GET", "POST"]),
        Route("/_crm/appointments/{id}", appointment, methods=["PATCH"]),
        Route("/_crm/tasks", all_tasks, methods=["GET", "POST"]),
        Route("/_crm/tasks/{id}", one_task, methods=["PATCH", "DELETE"]),
        Route("/_crm/faults", faults, methods=["GET", "POST", "DELETE"]),
        Route("/_crm/stats", stats, methods=["GET", "DELETE"]),
        Route("/_crm/reset", reset, methods=["POST"]),
    ]


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse({"error": {"code": exc.code, "message": exc.message}}, status_code=exc.status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "notFound", 405: "methodNotAllowed"}.get(exc.status_code, "error")
    return JSONResponse({"error": {"code": code, "message": exc.detail}}, status_code=exc.status_code)


def create_app(token: str, db_path: str = ":memory:") -> Starlette:
    crm = Crm(Database(db_path))
    controls = Controls(token)
    api = api_routes(crm, controls)
    return Starlette(
        routes=[*api, *control_routes(crm, controls)],
        middleware=[Middleware(Gate, controls=controls, routes=api)],
        exception_handlers={ApiError: _api_error, HTTPException: _http_error},
    )
