"""A Microsoft Graph v1.0 subset (mail, contacts, calendar, To Do, mailbox settings, subscriptions,
$batch) served over HTTP, in memory, faithful to docs/graph-behaviour.md; its manual is
emulators/graph/README.md. A stand-in for the outside world: nothing under shared/ or functions/ imports it.

python -m emulators.graph --port PORT [--seed FILE]
"""

from __future__ import annotations
