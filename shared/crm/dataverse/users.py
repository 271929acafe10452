"""Dynamics 365 users (`systemuser` rows): who owns what the connector writes, and which addresses of
a message or meeting are colleagues (their activity parties are bound to the systemuser).

An owner (the mailbox's `CrmOwner`, by default its UPN) is the systemuser whose primary e-mail
(`internalemailaddress`) or user name (`domainname`) it is. An owner with no systemuser is refused
(`CrmRejectedError`) unless the connector provisions users (tests and the demo), which creates one
through the Web API. Answers are kept for the process's life: users change rarely, and a job that
meets a new one reads it once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from shared.crm.dataverse import wire
from shared.crm.dataverse.batch import BatchBody, PartResult
from shared.crm.dataverse.webapi import WebApi
from shared.errors import CrmRejectedError, CrmRetryableError

LOOKUP_CHUNK = 50  # addresses per query (each query goes inside a $batch: no URL length worry)


class Users:
    def __init__(self, api: WebApi, *, provision: bool = False) -> None:
        self._api = api
        self._provision = provision
        self._owners: dict[str, str] = {}  # owner (lower-cased) -> systemuserid
        self.names: dict[str, str] = {}  # systemuserid -> the owner as the sync names it
        self._addresses: dict[str, str | None] = {}  # address (lower-cased) -> systemuserid or None
        self._lock = asyncio.Lock()

    async def owner_id(self, owner: str) -> str:
        wanted = owner.strip().lower()
        if not wanted:
            raise CrmRejectedError("no owner given: every Dataverse row belongs to a user")
        if wanted in self._owners:
            return self._owners[wanted]
        async with self._lock:
            if wanted not in self._owners:
                self._owners[wanted] = await self._find_or_make(wanted)
                self.names.setdefault(self._owners[wanted], wanted)
        return self._owners[wanted]

    async def _find_or_make(self, owner: str) -> str:
        query = f"internalemailaddress eq {wire.literal(owner)} or domainname eq {wire.literal(owner)}"
        data = await self._api.json(
            "GET",
            "systemusers",
            "GET systemusers",
            params={"$select": "systemuserid,internalemailaddress,domainname", "$filter": query},
        )
        rows = sorted(data.get("value") or [], key=lambda r: str(r["systemuserid"]))
        if rows:
            return str(rows[0]["systemuserid"])
        if not self._provision or "@" not in owner:
            raise CrmRejectedError(
                "the owner is not a user of this Dynamics 365 environment (add them, or set CrmOwner to the "
                "e-mail or user name of a Dynamics 365 user)"
            )
        body = {
            "firstname": owner.split("@")[0],
            "lastname": owner.split("@")[1],
            "internalemailaddress": owner,
            "domainname": owner,
            "accessmode": 0,
        }
        response = await self._api.send("POST", "systemusers", "POST systemusers", json=body, resend=False)
        assert response is not None
        return response.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")

    async def owner_of(self, user_id: str) -> str:
        """The owner a systemuser is, as the sync names it (its e-mail when it never owned for us)."""
        if user_id in self.names:
            return self.names[user_id]
        row = await self._api.json(
            "GET",
            f"systemusers({user_id})",
            "GET systemusers({id})",
            params={"$select": "internalemailaddress,domainname"},
            missing_ok=True,
        )
        name = str((row or {}).get("internalemailaddress") or (row or {}).get("domainname") or "").lower()
        self.names[user_id] = name
        return name

    def known(self) -> dict[str, str]:
        """address -> systemuserid, for the addresses read so far."""
        return {a: u for a, u in self._addresses.items() if u}

    def queries(self, addresses: Iterable[str], body: BatchBody) -> list[tuple[int, list[str]]]:
        """Add to `body` the reads that find the systemusers among addresses not yet known; returns
        (result index, addresses) per read, for `take`."""
        unknown = sorted({a.strip().lower() for a in addresses if a.strip()} - set(self._addresses))
        reads = []
        for start in range(0, len(unknown), LOOKUP_CHUNK):
            chunk = unknown[start : start + LOOKUP_CHUNK]
            index = body.get(
                wire.url(
                    self._api.root,
                    "systemusers",
                    select="systemuserid,internalemailaddress",
                    filter=wire.among("internalemailaddress", chunk),
                )
            )
            reads.append((index, chunk))
        return reads

    def take(self, reads: list[tuple[int, list[str]]], results: list[PartResult]) -> None:
        for index, chunk in reads:
            result = results[index]
            rows = result.body
            if result.status >= 400 or not isinstance(rows, dict):
                raise CrmRetryableError("Dataverse did not answer the user lookup")
            found = {
                str(r.get("internalemailaddress") or "").lower(): str(r["systemuserid"])
                for r in rows["value"]
            }
            for address in chunk:
                self._addresses[address] = found.get(address)
