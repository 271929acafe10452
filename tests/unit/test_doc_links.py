"""Every reference to a file or a section inside the repository resolves, in code and in docs.

What is checked, in every text file of the repository (tracked or new, not ignored):

- nothing names a document beside the repository (`../shared/…`) or an absolute path of this machine
  (the checkout's own path, the home directory, `/work/`, `/root/`);
- a Markdown link to a file of the repository (`[text](docs/state.md#2-tables)`) names a file that
  exists, and its `#anchor` a heading of that file (GitHub's anchors);
- a section reference `docs/graph-behaviour.md §1.2` (several: `… §1.5, §7.9`) names a section that
  exists: a heading numbered `1.2`, or item 2 of the numbered list under heading `1`. In a Markdown
  file a `§n` with no file before it means that file; elsewhere it is an error;
- a section number written without `§` after a document (`graph-behaviour.md 1.2`) is an error;
- a document named anywhere (`README.md`, `docs/deploy.md`) exists, relative to the repository root or
  to the naming file's folder (a Python string that is only a file name is a path part, not a name);
- a repository path in backticks (`` `shared/sync/mail.py` ``, also inside a command) and a plain
  mention of a repository file with a known suffix exist (or are generated: ignored by git).

The scan skips this file, whose examples below are broken on purpose.
"""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
THIS = Path(__file__).resolve()

TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".json", ".toml", ".bicep", ".sh", ".ps1", ".txt", ".cfg"}
TEXT_NAMES = {"Makefile", "run", ".funcignore", ".gitignore"}
SKIPPED = {"package-lock.json"}

# Markdown: code fences, headings (numbered or not), numbered list items, links `[text](target "title")`
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
NUMBERED = re.compile(r"^(\d+(?:\.\d+)*)\.?\s")
LIST_ITEM = re.compile(r"^\s{0,3}(\d+)\.\s")
MD_LINK = re.compile(r"\[([^\]\n]*)\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")

# References: a document, its sections (`docs/x.md §1.2, §3`), a number without §, paths
DOC = r"[\w][\w./-]*\.md"
SECTION_NUMBER = re.compile(r"§\s?(\d+(?:\.\d+)*)")
SECTION_CHAIN = re.compile(rf"({DOC})((?:\s*(?:,|and|or|to|–|-)?\s*{SECTION_NUMBER.pattern})+)")
NUMBER_WITHOUT_MARK = re.compile(rf"({DOC})[,:]?\s+\(?(\d+\.\d+)\b")
MD_MENTION = re.compile(rf"(?<![\w/.-])({DOC})\b")

BACKTICKS = re.compile(r"`([^`\n]+)`")
PLAIN_PATH_SUFFIXES = r"(?:md|py|yaml|yml|json|bicep|sh|ps1|toml)"


def _forbidden() -> list[str]:
    """Built from parts, so that this file does not name them itself."""
    names = [".." + "/shared/", "/" + "work/", "/" + "root/", str(ROOT)]
    home = str(Path.home())
    if home not in ("", "/"):
        names.append(home.rstrip("/") + "/")
    return names


@cache
def repo_files() -> tuple[Path, ...]:
    """Tracked files and new ones not ignored by git (so a doc being written is checked too)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return tuple(sorted({ROOT / name for name in listed if (ROOT / name).is_file()}))


@cache
def top_level() -> frozenset[str]:
    return frozenset(path.relative_to(ROOT).parts[0] for path in repo_files())


def is_text(path: Path) -> bool:
    return path.name not in SKIPPED and (path.suffix in TEXT_SUFFIXES or path.name in TEXT_NAMES)


def ignored_by_git(relative: str) -> bool:
    return subprocess.run(["git", "check-ignore", "-q", relative], cwd=ROOT).returncode == 0


# ---------------------------------------------------------------------------------------------
# Markdown structure


def _lines_outside_fences(text: str) -> list[str]:
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def _blank_fences(text: str) -> str:
    """The text with fenced code blocks blanked out, offsets kept (code is not Markdown)."""
    out, fenced = [], False
    for line in text.splitlines(keepends=True):
        fence = bool(FENCE.match(line))
        out.append(" " * len(line.rstrip("\n")) + "\n" * line.endswith("\n") if fenced or fence else line)
        if fence:
            fenced = not fenced
    return "".join(out)


def _blank_links(text: str) -> str:
    """The text without its Markdown links, which are checked as links (their text names the target)."""
    return MD_LINK.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.strip().lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    found = set()
    for line in _lines_outside_fences(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return frozenset(found)


@cache
def sections(path: Path) -> frozenset[str]:
    """Numbered headings (`## 3. The sync contract`, `### 3.2 Checkpoint …`), and the items of a
    numbered list under a numbered heading (item 9 under `## 7. …` is `7.9`)."""
    found: set[str] = set()
    current = ""
    for line in _lines_outside_fences(path.read_text(encoding="utf-8")):
        heading = HEADING.match(line)
        if heading:
            number = NUMBERED.match(heading.group(2))
            current = number.group(1) if number else ""
            if current:
                found.add(current)
            continue
        item = LIST_ITEM.match(line)
        if item and current:
            found.add(f"{current}.{item.group(1)}")
    return frozenset(found)


# ---------------------------------------------------------------------------------------------
# The checks of one file


def _resolve_doc(source: Path, name: str) -> Path | None:
    """A document named in `source`: relative to the repository root or to the file's folder."""
    for base in (ROOT, source.parent):
        candidate = (base / name).resolve()
        if candidate.is_file() and candidate.is_relative_to(ROOT):
            return candidate
    return None


def _path_tokens(span: str) -> list[str]:
    tokens = []
    for raw in re.split(r"[\s=]+", span):
        token = raw.strip(".,;:()[]\"'")
        token = token.split("::")[0]
        token = re.sub(r":\d+$", "", token)
        if "/" not in token or token.startswith(("/", "~", "http:", "https:")):
            continue
        if any(c in token for c in "{}<>*…$%?@|"):
            continue
        if token.split("/")[0] not in top_level():
            continue
        tokens.append(token)
    return tokens


def problems(source: Path, text: str) -> list[str]:
    """Every unresolved reference in `text`, the contents of `source` (a path inside the repository)."""
    found: list[str] = []
    is_markdown = source.suffix == ".md"

    for name in _forbidden():
        if name in text:
            found.append(f"names {name!r}, which is outside the repository")

    chained: list[tuple[int, int]] = []
    if is_markdown:
        for match in MD_LINK.finditer(_blank_fences(text)):
            label, target = match.groups()
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: …
                continue
            name, _, anchor = target.partition("#")
            linked = (source.parent / name).resolve() if name else source
            if not linked.exists() or not linked.is_relative_to(ROOT):
                found.append(f"link to a missing file: {target}")
                continue
            if anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                found.append(f"link to a missing heading: {target}")
            if linked.suffix == ".md":  # `[§1.2](graph-behaviour.md#12-messages)`: a section of the target
                chained.append(match.span())
                found += [
                    f"no section {number} in {linked.relative_to(ROOT)}: {match.group(0)}"
                    for number in SECTION_NUMBER.findall(label)
                    if number not in sections(linked)
                ]

    for match in SECTION_CHAIN.finditer(text):
        chained.append(match.span())
        doc = _resolve_doc(source, match.group(1))
        if doc is None:
            continue  # reported below, as a document that does not exist
        for number in SECTION_NUMBER.findall(match.group(2)):
            if number not in sections(doc):
                found.append(f"no section {number} in {doc.relative_to(ROOT)}: {match.group(0)}")
    for match in SECTION_NUMBER.finditer(text):
        if any(start <= match.start() < end for start, end in chained):
            continue
        if not is_markdown:
            found.append(f"a section reference with no document: {match.group(0)}")
        elif match.group(1) not in sections(source):
            found.append(f"no section {match.group(1)} in this file")

    for match in NUMBER_WITHOUT_MARK.finditer(text):
        found.append(f"a section of {match.group(1)} written without §: {match.group(0)}")

    prose = _blank_links(text) if is_markdown else text
    for match in MD_MENTION.finditer(prose):
        before, after = prose[match.start() - 1 : match.start()], prose[match.end() : match.end() + 1]
        if source.suffix == ".py" and before and before in "\"'" and before == after:
            continue  # a path part in code (`ROOT / "docs" / "deploy.md"`), not a reference
        if _resolve_doc(source, match.group(1)) is None:
            found.append(f"names a document that does not exist: {match.group(1)}")

    mentioned = {token for span in BACKTICKS.findall(text) for token in _path_tokens(span)}
    plain = re.findall(rf"(?<![\w/.`-])([\w.-]+/[\w./-]*\.{PLAIN_PATH_SUFFIXES})\b", prose)
    mentioned |= {token for token in plain if token.split("/")[0] in top_level()}
    for token in sorted(mentioned):
        if not (ROOT / token).exists() and not ignored_by_git(token.rstrip("/")):
            found.append(f"names a path that does not exist: {token}")
    return found


# ---------------------------------------------------------------------------------------------
# The repository


def _checked_files() -> list[Path]:
    return [path for path in repo_files() if is_text(path) and path != THIS]


@pytest.mark.parametrize("path", _checked_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_reference_in_the_repository_resolves(path: Path) -> None:
    assert problems(path, path.read_text(encoding="utf-8")) == []


def test_the_scan_covers_code_docs_and_configuration() -> None:
    names = {str(p.relative_to(ROOT)) for p in _checked_files()}
    assert {"README.md", "docs/architecture.md", "shared/sync/mail.py", "infra/main.bicep"} <= names
    assert ".github/workflows/ci.yml" in names


# ---------------------------------------------------------------------------------------------
# The checks themselves fail on broken references

README = ROOT / "README.md"
CODE = ROOT / "shared" / "example.py"


def test_a_link_to_a_missing_file_or_heading_is_reported() -> None:
    assert problems(README, "See [the guide](docs/nowhere.md).") == [
        "link to a missing file: docs/nowhere.md"
    ]
    assert problems(README, "See [state](docs/state.md#no-such-heading).") == [
        "link to a missing heading: docs/state.md#no-such-heading"
    ]
    assert problems(README, "See [state](docs/state.md) and [the web](https://example.com/x.md).") == []


def test_a_section_that_does_not_exist_is_reported() -> None:
    assert problems(CODE, "# as docs/graph-behaviour.md §1.2 says") == []
    assert problems(CODE, "# docs/graph-behaviour.md §1.5, §7.9, §8.9–§8.10") == []
    assert problems(CODE, "# docs/graph-behaviour.md §1.2, §99.1") == [
        "no section 99.1 in docs/graph-behaviour.md: docs/graph-behaviour.md §1.2, §99.1"
    ]
    assert problems(CODE, "# docs/missing.md §1") == [
        "names a document that does not exist: docs/missing.md",
        "names a path that does not exist: docs/missing.md",
    ]
    assert problems(CODE, "# see §4") == ["a section reference with no document: §4"]
    assert problems(CODE, "# docs/graph-behaviour.md 1.2") == [
        "a section of docs/graph-behaviour.md written without §: docs/graph-behaviour.md 1.2"
    ]
    assert problems(CODE, "# graph-behaviour.md §1.2") == [
        "names a document that does not exist: graph-behaviour.md"  # in code, names start at the root
    ]


def test_a_missing_path_in_backticks_or_in_plain_text_is_reported() -> None:
    assert problems(CODE, "`shared/sync/mail.py` and `.venv/bin/pytest tests/unit -q`") == []
    assert problems(CODE, "`shared/sync/nothing.py`") == [
        "names a path that does not exist: shared/sync/nothing.py"
    ]
    assert problems(CODE, "run `.venv/bin/pytest tests/nowhere -x`") == [
        "names a path that does not exist: tests/nowhere"
    ]
    assert problems(CODE, "see shared/nowhere.py") == ["names a path that does not exist: shared/nowhere.py"]
    # not repository paths: URLs, placeholders, generated files, other machines' paths
    assert problems(CODE, "`https://example.com/shared/x.py` `shared/{name}.py` `bench/results.json`") == []


def test_paths_outside_the_repository_are_reported() -> None:
    outside = ".." + "/shared/design.md"
    assert problems(CODE, f"# see {outside}") == [
        f"names {'..' + '/shared/'!r}, which is outside the repository"
    ]
    machine = "/" + "work/main/shared/x.py"
    assert problems(CODE, f"# {machine}")[0] == f"names {'/' + 'work/'!r}, which is outside the repository"


def test_github_anchors() -> None:
    assert slug("1.2 Messages") == "12-messages"
    assert slug("3. The sync contract") == "3-the-sync-contract"
    assert slug("Graph emulator (`emulators/graph`)") == "graph-emulator-emulatorsgraph"
    assert slug("Outlook ↔ CRM sync") == "outlook--crm-sync"
