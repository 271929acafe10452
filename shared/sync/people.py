"""Who in the CRM the participants of a page are: one lookup for a page's addresses, in chunks."""

from __future__ import annotations

from collections.abc import Sequence

from shared.model import PersonRef
from shared.ports.crm import CrmPort

CHUNK = 200  # addresses per CRM request


async def people_by_address(crm: CrmPort, addresses: Sequence[str]) -> dict[str, list[PersonRef]]:
    found: dict[str, list[PersonRef]] = {}
    for start in range(0, len(addresses), CHUNK):
        found.update(await crm.find_people(addresses[start : start + CHUNK]))
    return found
