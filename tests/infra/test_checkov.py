"""checkov over infra/: no failed check, no parsing error, and every suppression is a
`#checkov:skip=CKV_...:reason` comment inside the resource it suppresses, with its reason, and used.

checkov runs from its own pinned tool venv (scripts/checkov-venv.sh: built once, ~1-2 min; a
no-op afterwards) because its dependency pins clash with the project's. One checkov run scans infra/
and a deliberately insecure control file, so the test also proves the harness can see a failure."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.infra.bicep_source import INFRA, ROOT

INSECURE_CONTROL = """\
resource sa 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'stinsecurecontrol'
  location: 'westeurope'
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    minimumTlsVersion: 'TLS1_0'
    allowBlobPublicAccess: true
    supportsHttpsTrafficOnly: false
  }
}
"""
SKIP_COMMENT = re.compile(r"//\s*checkov:skip=(CKV2?_[A-Z]+_\d+):?(.*)$")


@pytest.fixture(scope="module")
def checkov_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    built = subprocess.run(
        [str(ROOT / "scripts" / "checkov-venv.sh")], capture_output=True, text=True, check=False, timeout=900
    )
    assert built.returncode == 0, built.stderr[-3000:]
    checkov = ROOT / built.stdout.strip().splitlines()[-1]
    control_dir = tmp_path_factory.mktemp("checkov-control")
    (control_dir / "insecure.bicep").write_text(INSECURE_CONTROL)
    # --file per file: checkov merges several --directory roots wrongly (it rescans the first one).
    files = [*sorted(INFRA.rglob("*.bicep")), control_dir / "insecure.bicep"]
    run = subprocess.run(
        [
            str(checkov),
            "--framework",
            "bicep",
            "--output",
            "json",
            "--compact",
            "--skip-download",
            *(arg for path in files for arg in ("--file", str(path))),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        cwd=ROOT,
    )
    assert run.returncode in (0, 1), run.stderr[-3000:]
    reports = _json_documents(run.stdout)
    results: dict[str, list[dict[str, Any]]] = {
        "passed": [],
        "failed": [],
        "skipped": [],
        "parsing_errors": [],
    }
    for report in reports:
        for kind in ("passed", "failed", "skipped"):
            results[kind] += report["results"][f"{kind}_checks"]
        results["parsing_errors"] += report["results"].get("parsing_errors", [])
    return results


def _json_documents(text: str) -> list[dict[str, Any]]:
    decoder = json.JSONDecoder()
    documents: list[dict[str, Any]] = []
    position = 0
    while position < len(text.rstrip()):
        document, end = decoder.raw_decode(text, position)
        documents += document if isinstance(document, list) else [document]
        position = end
        while position < len(text) and text[position].isspace():
            position += 1
    return documents


def _in_infra(check: dict[str, Any]) -> bool:
    return Path(check["file_abs_path"]).resolve().is_relative_to(INFRA)


def test_the_control_file_fails_so_the_scan_can_fail(checkov_report: dict[str, list[dict[str, Any]]]) -> None:
    control = {c["check_id"] for c in checkov_report["failed"] if not _in_infra(c)}
    assert {"CKV_AZURE_44", "CKV_AZURE_3"} <= control, control  # TLS 1.2, HTTPS only


def test_no_failed_check_and_no_parsing_error_in_infra(
    checkov_report: dict[str, list[dict[str, Any]]],
) -> None:
    assert checkov_report["parsing_errors"] == []
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']})"
        for c in checkov_report["failed"]
        if _in_infra(c)
    ]
    assert failed == []
    assert sum(_in_infra(c) for c in checkov_report["passed"]) >= 20


def test_every_suppression_sits_in_its_resource_with_a_reason(
    checkov_report: dict[str, list[dict[str, Any]]],
) -> None:
    skipped = [c for c in checkov_report["skipped"] if _in_infra(c)]
    used: set[tuple[Path, int]] = set()
    for check in skipped:
        path = Path(check["file_abs_path"])
        first, last = check["file_line_range"]
        lines = path.read_text().splitlines()
        comments = [
            (number, match)
            for number in range(first, last + 1)
            if (match := SKIP_COMMENT.search(lines[number - 1])) and match.group(1) == check["check_id"]
        ]
        assert comments, f"{check['check_id']} on {check['resource']} is suppressed without a comment in it"
        number, match = comments[0]
        reason = match.group(2).strip()
        assert len(reason) >= 30, (
            f"{path.name}:{number}: {check['check_id']} needs a real reason, got {reason!r}"
        )
        used.add((path, number))
    written = {
        (path, number)
        for path in INFRA.rglob("*.bicep")
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if SKIP_COMMENT.search(line)
    }
    assert written - used == set(), "suppressions that suppress nothing"
