"""Participants and what the CRM knows of them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Address:
    """An e-mail participant as Graph gives it (`emailAddress: {name, address}`)."""

    address: str
    name: str = ""

    @property
    def normalized(self) -> str:
        return self.address.strip().lower()

    @property
    def domain(self) -> str:
        return self.normalized.rpartition("@")[2]


@dataclass(frozen=True)
class PersonRef:
    """A CRM person (contact, lead, candidate ...) matched by e-mail address. Never a company."""

    id: str
    kind: str = "contact"
    name: str = ""
    email: str = ""


@dataclass(frozen=True)
class CrmRef:
    """What a CRM record became: its id in the CRM (and, where the CRM has one, a version)."""

    id: str
    version: str = ""
