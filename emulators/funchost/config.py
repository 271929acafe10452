"""What the host reads before it imports the app: app settings and host.json.

- App settings come from the `Values` of a `local.settings.json`-shaped file and are put into the
  process environment before the app is imported, as Core Tools does. A variable already in the
  environment wins over the file (Core Tools: "Skipping '…' from local settings as it's already
  defined in current environment variables").
- host.json is read from the script root. App settings named `AzureFunctionsJobHost__a__b` override
  `a.b` in it, as they do in Azure.
- Keys: `FUNCTIONS_MASTER_KEY` (admin level, and the admin API), `FUNCTIONS_HOST_KEY` (a host key:
  any function-level function) and `FUNCTIONS_KEY_<FunctionName>` (one function only). A key that is
  not set is a fresh random value for this run, shown nowhere: the level it guards stays closed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MASTER_KEY = "FUNCTIONS_MASTER_KEY"
HOST_KEY = "FUNCTIONS_HOST_KEY"
FUNCTION_KEY_PREFIX = "FUNCTIONS_KEY_"
_OVERRIDE_PREFIX = "azurefunctionsjobhost__"


class HostConfigError(RuntimeError):
    pass


def load_local_settings(path: Path, environ: MutableMapping[str, str]) -> list[str]:
    """Put the file's `Values` into `environ` (existing variables win). Returns the names applied."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("IsEncrypted"):
        raise HostConfigError(f"{path} is encrypted; decrypt it with Core Tools first")
    values = data.get("Values") or {}
    applied = []
    for name, value in values.items():
        if name in environ:
            logger.info("skipping %s from local settings: already set in the environment", name)
            continue
        environ[name] = "" if value is None else str(value)
        applied.append(name)
    return applied


def timespan_seconds(value: Any, what: str) -> float:
    """`hh:mm:ss[.fff]` or `d.hh:mm:ss` (host.json TimeSpan) → seconds."""
    m = re.fullmatch(r"(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2}(?:\.\d+)?)", str(value).strip())
    if not m:
        raise HostConfigError(f"host.json {what}: {value!r} is not a TimeSpan (hh:mm:ss)")
    days, hours, minutes = (int(g) if g else 0 for g in m.groups()[:3])
    return days * 86400 + hours * 3600 + minutes * 60 + float(m.group(4))


def _apply_overrides(doc: dict[str, Any], environ: Mapping[str, str]) -> None:
    for name, value in environ.items():
        if not name.lower().startswith(_OVERRIDE_PREFIX):
            continue
        path = name[len(_OVERRIDE_PREFIX) :].split("__")
        node = doc
        for part in path[:-1]:
            key = next((k for k in node if k.lower() == part.lower()), part)
            child = node.get(key)
            if not isinstance(child, dict):
                child = node[key] = {}
            node = child
        leaf = next((k for k in node if k.lower() == path[-1].lower()), path[-1])
        node[leaf] = value


def _get(section: Mapping[str, Any], name: str, default: Any) -> Any:
    return next((v for k, v in section.items() if k.lower() == name.lower()), default)


@dataclass(frozen=True)
class QueueOptions:
    """`extensions.queues` with the defaults of the Storage Queues extension 5.x."""

    batch_size: int = 16
    new_batch_threshold: int = 8
    max_dequeue_count: int = 5
    visibility_timeout: float = 0.0  # seconds before a failed message is visible again
    max_polling_interval: float = 60.0
    message_encoding: str = "base64"

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> QueueOptions:
        batch = int(_get(section, "batchSize", 16))
        if not 1 <= batch <= 32:
            raise HostConfigError("host.json extensions.queues.batchSize must be 1-32")
        options = cls(
            batch_size=batch,
            new_batch_threshold=int(_get(section, "newBatchThreshold", batch // 2)),
            max_dequeue_count=int(_get(section, "maxDequeueCount", 5)),
            visibility_timeout=timespan_seconds(
                _get(section, "visibilityTimeout", "00:00:00"), "visibilityTimeout"
            ),
            max_polling_interval=timespan_seconds(
                _get(section, "maxPollingInterval", "00:01:00"), "maxPollingInterval"
            ),
            message_encoding=str(_get(section, "messageEncoding", "base64")).lower(),
        )
        if options.max_dequeue_count < 1:
            raise HostConfigError("host.json extensions.queues.maxDequeueCount must be at least 1")
        if options.message_encoding not in {"base64", "none"}:
            raise HostConfigError("host.json extensions.queues.messageEncoding must be base64 or none")
        return options


@dataclass(frozen=True)
class HostConfig:
    queues: QueueOptions = field(default_factory=QueueOptions)
    route_prefix: str = "api"
    function_timeout: float | None = None

    @classmethod
    def load(cls, script_root: Path, environ: Mapping[str, str]) -> HostConfig:
        path = script_root / "host.json"
        doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        _apply_overrides(doc, environ)
        extensions = _get(doc, "extensions", {}) or {}
        http = _get(extensions, "http", {}) or {}
        timeout = _get(doc, "functionTimeout", None)
        return cls(
            queues=QueueOptions.from_section(_get(extensions, "queues", {}) or {}),
            route_prefix=str(_get(http, "routePrefix", "api")).strip("/"),
            function_timeout=timespan_seconds(timeout, "functionTimeout") if timeout else None,
        )


@dataclass(frozen=True)
class Keys:
    master: str
    host: str
    functions: Mapping[str, str]  # function name → its own key

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Keys:
        def key(name: str) -> str:
            value = environ.get(name, "").strip()
            if not value:
                logger.warning("%s is not set: a random key closes what it guards for this run", name)
            return value or secrets.token_urlsafe(32)

        functions = {
            name[len(FUNCTION_KEY_PREFIX) :]: value
            for name, value in environ.items()
            if name.startswith(FUNCTION_KEY_PREFIX) and value
        }
        return cls(master=key(MASTER_KEY), host=key(HOST_KEY), functions=functions)


def apply_settings_file(path: Path | None, script_root: Path) -> None:
    """Load `path` (or `local.settings.json` in the script root, if present) into os.environ."""
    if path is None:
        default = script_root / "local.settings.json"
        if not default.exists():
            return
        path = default
    applied = load_local_settings(path, os.environ)
    logger.info("loaded %d app settings from %s", len(applied), path)
