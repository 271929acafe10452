"""Every port the engine talks through, side by side: Microsoft Graph (`graph`), the CRM (`crm`), and
Table and Queue Storage (`state`). Ports are Protocols over the records in `shared/model`; adapters in
`shared/graph`, `shared/crm` and `shared/state` implement them, and each has a contract suite in
`tests/contract` that its in-memory fake passes too."""
