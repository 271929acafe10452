"""The layers hold (docs/architecture.md §2): the import-linter contracts in pyproject.toml pass on the
code as it is and fail on a back-edge; the pure plans load no SDK."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLANS = sorted(p.stem for p in (ROOT / "shared" / "sync").glob("*_plan.py"))


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-c",
        "from importlinter.cli import lint_imports_command; lint_imports_command()",
    ]
    return subprocess.run([*command, "--no-cache"], cwd=root, capture_output=True, text=True, check=False)


def test_the_layer_contracts_hold() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_back_edge_breaks_a_contract(tmp_path: Path) -> None:
    """A copy of the tree where an adapter imports the sync layer: the contracts catch it."""
    copy = tmp_path / "tree"
    copy.mkdir()
    for name in ("shared", "functions", "emulators"):
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    adapter = copy / "shared" / "graph" / "mail.py"
    adapter.write_text(adapter.read_text() + "\nfrom shared.sync import mail_plan  # a back-edge\n")
    result = lint_imports(copy)
    assert result.returncode != 0
    assert "shared.graph.mail -> shared.sync.mail_plan" in result.stdout


@pytest.mark.parametrize("plan", PLANS)
def test_a_plan_loads_no_sdk(plan: str) -> None:
    sdks = ("msgraph", "kiota_abstractions", "azure", "httpx")
    code = (
        f"import sys; import shared.sync.{plan}; "
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {sdks!r}); "
        "print(loaded); sys.exit(1 if loaded else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"importing shared.sync.{plan} loads {result.stdout}{result.stderr}"
