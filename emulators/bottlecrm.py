"""BottleCRM (a real open-source CRM) on free loopback ports, for tests and `make demo CRM=bottlecrm`.

with bottlecrm() as crm:
    BottleCrmConnector(crm.base_url, crm.token)

Runs `scripts/bottlecrm.sh up` (its own Python 3.12 venv and PostgreSQL cluster, both cached under
`~/.cache/outlook-crm-sync/bottlecrm/`, shared by every clone on the machine) and `down` afterwards.
`BottleCrmUnavailable` means Python 3.12 or PostgreSQL cannot be had on this machine; tests skip on
it. `python -m emulators.bottlecrm` starts one and prints its URL and token until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from emulators.process import ROOT
from shared.crm.bottlecrm import journal_record

SCRIPT = ROOT / "scripts" / "bottlecrm.sh"
UNAVAILABLE = 3  # the script's exit status for "cannot be had here"


class BottleCrmUnavailable(RuntimeError):
    """Python 3.12 or PostgreSQL is missing and cannot be installed here."""


@dataclass(frozen=True)
class BottleCrm:
    base_url: str
    token: str
    admin_email: str
    run_dir: Path
    pg_port: int

    def add_user(self, email: str, role: str = "USER") -> None:
        """Invite a user into the organisation (owners must be users; the demo adds its mailboxes)."""
        response = httpx.post(
            f"{self.base_url}/api/users/",
            json={"email": email, "role": role},
            headers=self._auth,
            timeout=30.0,
        )
        if response.status_code >= 400 and "already" not in response.text:
            response.raise_for_status()

    def add_person(self, email: str, *, name: str = "", owner: str = "") -> str:
        """A contact, as a CRM user would add it (the owner is invited as a user first)."""
        first, _, last = (name or email.split("@")[0]).partition(" ")
        body: dict[str, Any] = {"first_name": first, "last_name": last or "-", "email": email}
        if owner:
            self.add_user(owner)
            users = self._get("/api/users/get-teams-and-users/")["profiles"]
            body["assigned_to"] = [p["id"] for p in users if p["user_details"]["email"] == owner.lower()]
        response = httpx.post(f"{self.base_url}/api/contacts/", json=body, headers=self._auth, timeout=30.0)
        response.raise_for_status()
        return str(response.json()["id"])

    def journals(self) -> list[dict[str, Any]]:
        """One entry per e-mail (its interactions, one per person, taken together), shaped like the
        reference CRM's `GET /_crm/journals` rows: key, subject, direction, owner, seenBy, sender,
        receivedAt, people."""
        rows = json.loads(
            self.sql(
                "SELECT coalesce(json_agg(json_build_array(body, subject, direction)), '[]') FROM interaction"
            )
        )
        out: dict[str, dict[str, Any]] = {}
        for body, subject, direction in rows:
            record = journal_record(body)
            if record is None:
                continue
            key = str(record["key"]).partition("|")[0]
            entry = out.setdefault(key, {
                "key": key, "subject": subject, "direction": direction, "owner": record.get("owner", ""),
                "seenBy": record.get("seen", []), "receivedAt": record.get("received") or record.get("sent"),
                "sender": {"address": (record.get("from") or ["", ""])[0]}, "people": [],
            })  # fmt: skip
            for pid, kind, pname, pemail in record.get("people", []):
                entry["people"].append({"id": pid, "kind": kind, "name": pname, "email": pemail})
        return list(out.values())

    def _get(self, path: str) -> Any:
        response = httpx.get(f"{self.base_url}{path}", headers=self._auth, timeout=30.0)
        response.raise_for_status()
        return response.json()

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def sql(self, statement: str) -> str:
        """Run SQL in the CRM's database (tests: reset between tests, inspect end states)."""
        psql = Path((self.run_dir / "pgbin").read_text().strip()) / "psql"
        args = [str(psql), "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "postgres", "-d", "bottlecrm"]
        done = subprocess.run(
            [*args, "-v", "ON_ERROR_STOP=1", "-Atqc", statement],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr.strip()}")
        return done.stdout


def _script(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    bash = shutil.which("bash") or "/bin/bash"
    return subprocess.run(
        [bash, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def _reason(stderr: str) -> str:
    lines = stderr.strip().splitlines() or ["(no reason given)"]
    return lines[-1].removeprefix("bottlecrm: unavailable: ")


def install(timeout: float = 1800.0) -> None:
    """Build the cached venv (and install PostgreSQL if needed) without starting anything."""
    done = _script("install", timeout=timeout)
    if done.returncode == UNAVAILABLE:
        raise BottleCrmUnavailable(_reason(done.stderr))
    if done.returncode != 0:
        raise RuntimeError(f"scripts/bottlecrm.sh install failed:\n{done.stderr[-2000:]}")


@contextlib.contextmanager
def bottlecrm(timeout: float = 1800.0) -> Iterator[BottleCrm]:
    """A running BottleCRM with an organisation and a personal access token; stopped at the end.
    The first run on a machine builds the cache (minutes); later runs start in seconds."""
    run_dir = Path(tempfile.mkdtemp(prefix="bottlecrm-"))
    try:
        done = _script("up", str(run_dir), str(os.getpid()), timeout=timeout)
        if done.returncode == UNAVAILABLE:
            raise BottleCrmUnavailable(_reason(done.stderr))
        if done.returncode != 0:
            raise RuntimeError(f"scripts/bottlecrm.sh up failed:\n{done.stderr[-2000:]}")
        values = dict(
            line.split("=", 1) for line in (run_dir / "bottlecrm.env").read_text().splitlines() if "=" in line
        )
        yield BottleCrm(
            base_url=values["BOTTLECRM_BASE_URL"],
            token=values["BOTTLECRM_TOKEN"],
            admin_email=values["BOTTLECRM_ADMIN_EMAIL"],
            run_dir=run_dir,
            pg_port=int(values["BOTTLECRM_PG_PORT"]),
        )
    finally:
        _script("down", str(run_dir), timeout=120)
        shutil.rmtree(run_dir, ignore_errors=True)


def main() -> None:
    import signal
    import sys

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # so that `down` runs
    with bottlecrm() as crm:
        sys.stdout.write(f"BOTTLECRM_BASE_URL={crm.base_url}\nBOTTLECRM_TOKEN={crm.token}\n")
        sys.stdout.write("Ctrl-C stops it\n")
        sys.stdout.flush()
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
