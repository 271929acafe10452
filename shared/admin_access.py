"""Who may call the admin API (`/api/manage/*`): an admin, never the key Graph holds.

Graph holds the webhook key: it travels in every subscription's notification URL and comes back from
`GET /subscriptions`. It is a function key of the two webhook functions only, and the admin
functions do not take Functions keys at all (they are `anonymous` to the Functions host, so no host,
function or webhook key opens them); this module decides, for every admin request:

- **App Service authentication on** (`WEBSITE_AUTH_ENABLED=True`, which App Service itself sets when
  authentication is enabled, as `infra/app/function-app.bicep` does with the webhook paths
  excluded): the caller signed in with Entra ID and App Service validated the token. App Service
  passes the caller's claims in `X-MS-CLIENT-PRINCIPAL` (base64 of the JSON
  `{"auth_typ": "aad", "claims": [{"typ": …, "val": …}], "name_typ": …, "role_typ": …}`) and
  removes any `X-MS-*` header a client sends, so the header is trusted only then. The caller needs
  the app role `ADMIN_ROLE` (a `roles` claim, or one of the principal's `role_typ`).
- **Otherwise** (local runs, a deployment without App Service authentication): `ADMIN_KEY`, in the
  `x-functions-key` header or the `code` query parameter (where Functions clients put keys),
  compared in constant time. The settings refuse an `ADMIN_KEY` equal to the webhook key; with no
  `ADMIN_KEY` the admin API is closed. A client-supplied `X-MS-CLIENT-PRINCIPAL` counts for nothing.

401: no valid credential. 403: signed in, without the role.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass

ADMIN_ROLE = "CrmSync.Admin"
PRINCIPAL_HEADER = "x-ms-client-principal"
KEY_HEADER = "x-functions-key"
KEY_PARAM = "code"
ROLE_CLAIMS = frozenset({"roles", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"})
MAX_PRINCIPAL_CHARS = 64 * 1024


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    status: int  # 200, 401 or 403
    reason: str


ALLOWED = Verdict(True, 200, "")


def check(
    headers: Mapping[str, str], params: Mapping[str, str], *, easy_auth: bool, admin_key: str
) -> Verdict:
    """May this request use the admin API? `headers` with lower-case names."""
    if easy_auth:
        principal = headers.get(PRINCIPAL_HEADER, "")
        if not principal:
            return Verdict(False, 401, "sign in with Entra ID (App Service authentication)")
        if ADMIN_ROLE not in roles(principal):
            return Verdict(False, 403, f"signed in, but without the app role {ADMIN_ROLE}")
        return ALLOWED
    if not admin_key:
        return Verdict(False, 401, "the admin API is closed: set ADMIN_KEY or App Service authentication")
    supplied = headers.get(KEY_HEADER) or params.get(KEY_PARAM) or ""
    if not hmac.compare_digest(supplied.encode("utf-8"), admin_key.encode("utf-8")):
        return Verdict(False, 401, "give the admin key (ADMIN_KEY) in x-functions-key or ?code=")
    return ALLOWED


def roles(principal: str) -> frozenset[str]:
    """The roles in an `X-MS-CLIENT-PRINCIPAL` value; none when it is not the documented shape."""
    if len(principal) > MAX_PRINCIPAL_CHARS:
        return frozenset()
    try:
        document = json.loads(base64.b64decode(principal, validate=True))
    except (binascii.Error, ValueError, RecursionError):
        return frozenset()
    if not isinstance(document, dict) or document.get("auth_typ") != "aad":
        return frozenset()
    claims = document.get("claims")
    role_types = set(ROLE_CLAIMS)
    if isinstance(document.get("role_typ"), str):
        role_types.add(document["role_typ"])
    return frozenset(
        str(claim["val"])
        for claim in (claims if isinstance(claims, list) else [])
        if isinstance(claim, dict) and claim.get("typ") in role_types and isinstance(claim.get("val"), str)
    )
