"""BottleCRM (a real open-source CRM) on free loopback ports, for tests and `make demo CRM=bottlecrm`.

with bottlecrm() as crm:
    BottleCrmConnector(crm.base_url, crm.token)

Runs `scripts/bottlecrm.sh up` (its own Python 3.12 venv and PostgreSQL cluster, both cached under
`.cache/bottlecrm/`) and `down` afterwards. `BottleCrmUnavailable` means Python 3.12 or PostgreSQL
cannot be had on this machine; tests skip on it. `python -m emulators.bottlecrm` starts one and
prints its URL and token until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from emulators.process import ROOT

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
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30.0,
        )
        if response.status_code >= 400 and "already" not in response.text:
            response.raise_for_status()

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


def install(timeout: float = 1800.0) -> None:
    """Build the cached venv (and install PostgreSQL if needed) without starting anything."""
    done = _script("install", timeout=timeout)
    if done.returncode == UNAVAILABLE:
        raise BottleCrmUnavailable(done.stderr.strip().splitlines()[-1])
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
            raise BottleCrmUnavailable(done.stderr.strip().splitlines()[-1])
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
