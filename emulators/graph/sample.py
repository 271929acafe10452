"""Seed files: load a JSON tenant into the store; generate realistic deterministic tenants."""

from __future__ import annotations

from typing import Any

from emulators.graph import mail
from emulators.graph.store import Tenant


def load(tenant: Tenant, seed: dict[str, Any]) -> None:
    for spec in seed.get("users", []):
        user = tenant.add_user(spec["userPrincipalName"], spec.get("displayName", ""), spec.get("id", ""))
        for f in spec.get("folders", []):
            parent = user.folder(f["parent"]).id if f.get("parent") else user.root_folder_id
            tenant.add_mail_folder(user, f["displayName"], parent)
        names = {f.display_name.lower(): f for f in user.folders.values()}
        for m in spec.get("messages", []):
            ref = m.get("folder") or "inbox"
            folder = names.get(ref.lower()) or user.folder(ref)
            mail.new_message(tenant, user, folder, {k: v for k, v in m.items() if k != "folder"})
