"""A reference CRM implementing the project's CRM API (`docs/crm-api.yaml`) on SQLite.

python -m emulators.crm --port PORT [--db FILE] [--token T]

Modules: `validate` (request documents), `store` (SQLite), `gate` (auth, fault injection, request
counts), `page` (the HTML page at `/`), `app` (routes), `launcher` (start it from tests).
"""

from __future__ import annotations
