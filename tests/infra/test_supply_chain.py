"""The dependency locks: every package the app or the tools install is pinned with its hashes, the
locks cover the whole dependency tree (nothing comes in unpinned), they match the direct pins in the
`.in` files, and `make install` installs in hash-checking mode."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.infra.bicep_source import ROOT

LOCKS = {"requirements.txt": "requirements.in", "requirements-dev.txt": "requirements-dev.in"}
ENTRY = re.compile(
    r"^(?P<req>[A-Za-z0-9][^\\\n]*?)(?P<rest>(?:[ \t]*\\\n[ \t]+--hash=sha256:[0-9a-f]{64})*)[ \t]*$", re.M
)


def _locked(name: str) -> dict[str, tuple[Requirement, int]]:
    return _entries((ROOT / name).read_text())


def _entries(text: str) -> dict[str, tuple[Requirement, int]]:
    """name -> (the pinned requirement, how many hashes) of a lock file's text."""
    entries: dict[str, tuple[Requirement, int]] = {}
    for match in ENTRY.finditer(text):
        requirement = Requirement(match["req"])
        entries[canonicalize_name(requirement.name)] = (requirement, match["rest"].count("--hash=sha256:"))
    return entries


def _direct(name: str) -> dict[str, Requirement]:
    found: dict[str, Requirement] = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            found |= _direct(line.removeprefix("-r ").strip())
        elif line:
            requirement = Requirement(line)
            found[canonicalize_name(requirement.name)] = requirement
    return found


@pytest.mark.parametrize("lock", LOCKS)
def test_every_locked_package_is_pinned_exactly_with_hashes(lock: str) -> None:
    lines = [
        line
        for line in (ROOT / lock).read_text().splitlines()
        if line.strip() and not line.lstrip().startswith(("#", "--hash="))
    ]
    entries = _locked(lock)
    assert len(entries) == len(lines) >= 50, "every requirement line is an entry the pattern reads"
    for name, (requirement, hashes) in entries.items():
        [spec] = requirement.specifier
        assert spec.operator == "==" and "*" not in spec.version, f"{lock}: {requirement}"
        assert hashes >= 1, f"{lock}: {name} has no hash"


@pytest.mark.parametrize(("lock", "source"), LOCKS.items())
def test_the_lock_keeps_the_direct_pins_of_its_source(lock: str, source: str) -> None:
    locked = _locked(lock)
    for name, requirement in _direct(source).items():
        assert name in locked, f"{source} pins {name}, {lock} does not: run make lock"
        assert locked[name][0].specifier == requirement.specifier, f"{name}: run make lock"


def test_the_dev_lock_holds_the_runtime_lock_unchanged() -> None:
    runtime, dev = _locked("requirements.txt"), _locked("requirements-dev.txt")
    assert {n: str(r.specifier) for n, (r, _) in runtime.items()} == {
        n: str(dev[n][0].specifier) for n in runtime
    }


def test_the_runtime_lock_is_closed_under_dependencies() -> None:
    """Every dependency (of every extra asked for) of every locked runtime package, as its installed
    metadata declares it for this platform, is itself in the lock: nothing is installed unpinned."""
    locked = _locked("requirements.txt")
    environment: dict[str, str] = dict(default_environment())
    missing: list[str] = []
    for name, (requirement, _) in locked.items():
        extras = {""} | set(requirement.extras)
        for dependency in metadata.requires(name) or []:
            needed = Requirement(dependency)
            applies = needed.marker is None or any(
                needed.marker.evaluate(environment | {"extra": extra}) for extra in extras
            )
            if applies and canonicalize_name(needed.name) not in locked:
                missing.append(f"{name} needs {needed}")
            elif (
                applies
                and needed.extras
                and not needed.extras <= locked[canonicalize_name(needed.name)][0].extras
            ):
                missing.append(f"{name} needs {needed}: the lock must name the extra (pip's hash mode)")
    assert missing == []


def test_make_install_checks_hashes_and_make_lock_makes_the_locks() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install -q --disable-pip-version-check --require-hashes -r requirements-dev.txt" in makefile
    assert "--generate-hashes --no-strip-extras" in makefile
    assert re.search(r"^lock: ", makefile, re.M)
    for lock in LOCKS:
        assert f"-o {lock}" in makefile
    readme = (ROOT / "README.md").read_text()
    assert "make lock" in readme


def test_the_installed_environment_is_the_locked_one() -> None:
    """make install installed exactly the locked versions (a stale .venv would hide a broken lock)."""
    wrong = {
        name: (str(requirement.specifier), metadata.version(name))
        for name, (requirement, _) in _locked("requirements-dev.txt").items()
        if requirement.marker is None or requirement.marker.evaluate()
        if not requirement.specifier.contains(metadata.version(name), prereleases=True)
    }
    assert wrong == {}


def test_the_pattern_reads_a_lock_entry_as_pip_does(tmp_path: Path) -> None:
    sample = tmp_path / "requirements.txt"
    sample.write_text(
        f"httpx[http2]==0.28.1 \\\n    --hash=sha256:{'a' * 64} \\\n    --hash=sha256:{'b' * 64}\n"
        "    # via msgraph-core\n"
    )
    [(requirement, hashes)] = _entries(sample.read_text()).values()
    assert str(requirement) == "httpx[http2]==0.28.1" and hashes == 2
