"""Who may call the admin API: the decision alone (`shared/admin_access.py`), for each credential."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from shared.admin_access import ADMIN_ROLE, check, roles

ADMIN_KEY, WEBHOOK_KEY = "a" * 43, "w" * 43
ROLE_URI = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"


def principal(*role_values: str, typ: str = "roles", auth_typ: str = "aad", **extra: Any) -> str:
    """An `X-MS-CLIENT-PRINCIPAL` value as App Service writes it: base64 of the claims JSON."""
    claims = [{"typ": "name", "val": "Ann Admin"}] + [{"typ": typ, "val": r} for r in role_values]
    document = {"auth_typ": auth_typ, "claims": claims, "name_typ": "name", "role_typ": ROLE_URI, **extra}
    return base64.b64encode(json.dumps(document).encode()).decode()


def without_easy_auth(headers: dict[str, str] | None = None, params: dict[str, str] | None = None) -> int:
    return check(headers or {}, params or {}, easy_auth=False, admin_key=ADMIN_KEY).status


def with_easy_auth(headers: dict[str, str]) -> int:
    return check(headers, {}, easy_auth=True, admin_key=ADMIN_KEY).status


def test_without_app_service_auth_only_the_admin_key_opens() -> None:
    assert without_easy_auth({"x-functions-key": ADMIN_KEY}) == 200
    assert without_easy_auth(params={"code": ADMIN_KEY}) == 200
    assert without_easy_auth({"x-functions-key": WEBHOOK_KEY}) == 401
    assert without_easy_auth(params={"code": WEBHOOK_KEY}) == 401
    assert without_easy_auth({"x-functions-key": ADMIN_KEY[:-1]}) == 401
    assert without_easy_auth() == 401


def test_without_app_service_auth_a_client_supplied_principal_counts_for_nothing() -> None:
    assert without_easy_auth({"x-ms-client-principal": principal(ADMIN_ROLE)}) == 401


def test_without_an_admin_key_the_admin_api_is_closed() -> None:
    verdict = check({"x-functions-key": ""}, {"code": ""}, easy_auth=False, admin_key="")
    assert (verdict.allowed, verdict.status) == (False, 401) and "ADMIN_KEY" in verdict.reason


def test_with_app_service_auth_the_admin_app_role_opens() -> None:
    assert with_easy_auth({"x-ms-client-principal": principal(ADMIN_ROLE)}) == 200
    assert with_easy_auth({"x-ms-client-principal": principal("Reader", ADMIN_ROLE)}) == 200
    assert with_easy_auth({"x-ms-client-principal": principal(ADMIN_ROLE, typ=ROLE_URI)}) == 200


@pytest.mark.parametrize(
    "value",
    [
        principal(),  # signed in, no role
        principal("CrmSync.Reader"),
        principal(ADMIN_ROLE.lower()),
        principal(ADMIN_ROLE, typ="groups"),
        principal(ADMIN_ROLE, auth_typ="github"),
        "not base64 at all!",
        base64.b64encode(b"[1, 2]").decode(),
        base64.b64encode(b"{" * 5000).decode(),
        "A" * 70_000,
    ],
)
def test_with_app_service_auth_anything_but_the_role_is_403(value: str) -> None:
    assert with_easy_auth({"x-ms-client-principal": value}) == 403


def test_with_app_service_auth_a_key_alone_is_not_enough() -> None:
    assert with_easy_auth({"x-functions-key": ADMIN_KEY}) == 401
    assert with_easy_auth({}) == 401


def test_roles_reads_the_documented_shape() -> None:
    assert roles(principal(ADMIN_ROLE, "Other")) == {ADMIN_ROLE, "Other"}
    assert roles(principal(ADMIN_ROLE, typ="custom", role_typ="custom")) == {ADMIN_ROLE}
