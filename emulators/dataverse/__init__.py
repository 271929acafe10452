"""A local stand-in for the Microsoft Dataverse Web API (v9.2), the data platform of Dynamics 365.

python -m emulators.dataverse --port PORT [--db FILE] [--cert PEM --key PEM]

Faithful to the documented Web API where the product depends on it (docs/dataverse-behaviour.md lists
each behaviour with its source, and what is left out), held honest by Microsoft's own Python client
(`powerplatform-dataverse-client`) in `tests/emulators/dataverse/`. Served over HTTPS only, as
Dataverse is; the launcher makes a local test CA with `trustme`.

Modules: `schema` (tables, columns, lookups, keys, states), `store` (rows, versions, transactions,
SQLite), `query` ($filter, $select, $orderby, $expand), `records` (writes), `listing` (paging,
change tracking), `api` (resource paths), `batch` ($batch), `gate` (auth, service protection, faults,
counts), `app` (HTTP and the control API), `launcher` (start it from tests, the demo, benchmarks).
"""

from __future__ import annotations
