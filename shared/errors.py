"""The project's error tree. Adapters translate foreign exceptions into it; the engine sees only these.

SyncError
  ConfigError              settings invalid; .problems lists every one
  UserConfigError          one SyncUsers row is invalid; .problems; the user is skipped
  GraphError               Microsoft Graph failed; .status, .code, .retry_after
    GraphThrottled         429/503/504: wait .retry_after (seconds) and retry later
    DeltaExpired           410 / syncStateNotFound: drop the link, start a fresh round
    MailboxDenied          403 ErrorAccessDenied: park the mailbox, do not retry in a loop
    GraphNotFound          404
    OutlookChanged         412: an Outlook item changed after the version a write was based on
  CrmError                 a CRM call failed; .retryable
    CrmRetryableError      5xx, 429, timeouts: the item is retried
    CrmRejectedError       4xx: the CRM refuses this item; recorded with its reason, retried later
  StateError               Table/Queue storage failed
    ConcurrencyError       an ETag-conditional write lost (someone else wrote first)
  MassChangeRefused        a run would delete/change more than the threshold; user marked for review
  BadNotification          a webhook body is not a notification collection: answer 400
    TooLarge               over the size cap: answer 413

Every message is made `printable()` (one line, no control or format characters, at most
`ERROR_CHARS`) when the error is made: adapters put a CRM's or Graph's own words into these messages,
and from here they reach `LastError`, `SyncIssues.Reason`, the status page and the terminal.
"""

from __future__ import annotations

from typing import Any

from shared.printable import ERROR_CHARS, printable


class SyncError(Exception):
    """Base of every error this project raises on purpose."""

    def __init__(self, message: Any = "", *args: Any) -> None:
        super().__init__(printable(str(message), ERROR_CHARS), *args)


class ConfigError(SyncError):
    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = list(problems or [])
        detail = "; ".join(self.problems)
        super().__init__(f"{message}: {detail}" if detail else message)


class UserConfigError(ConfigError):
    pass


class GraphError(SyncError):
    def __init__(
        self, message: str, *, status: int = 0, code: str = "", retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after = retry_after


class GraphThrottled(GraphError):
    pass


class DeltaExpired(GraphError):
    pass


class MailboxDenied(GraphError):
    pass


class GraphNotFound(GraphError):
    pass


class OutlookChanged(GraphError):
    """412: the item changed in Outlook after the version our write was based on."""


class CrmError(SyncError):
    retryable = False

    def __init__(self, message: str, *, status: int = 0, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class CrmRetryableError(CrmError):
    retryable = True


class CrmRejectedError(CrmError):
    retryable = False


class StateError(SyncError):
    pass


class ConcurrencyError(StateError):
    pass


class MassChangeRefused(SyncError):
    def __init__(self, message: str, *, planned: int, threshold: int) -> None:
        super().__init__(message)
        self.planned = planned
        self.threshold = threshold


class BadNotification(SyncError):
    """A webhook body is not a notification collection; answer 400."""


class TooLarge(BadNotification):
    """The body is over the size cap; answer 413."""
