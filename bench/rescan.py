"""The seeds' design against ours, on the same mailbox: every cycle the Influence sync agent re-scans the
last `DaysBack` days of each folder ("Go Back … e.g. 14" days); this product reads the folder's delta
link and gets only what changed.

    python -m bench.rescan [--messages 1000] [--cycles 3] [--new-per-cycle 5]      (prints JSON)

Both sides send the same `$select`/`$expand`/Prefer set as the product's reader (page size 100), over
plain HTTP so that response bytes can be counted. Figures are per cycle, after the first full read.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from bench.stack import local_stack, mailbox
from shared.graph.mail import EXPAND, SELECT

PAGE = 100
PREFER = f'odata.maxpagesize={PAGE}, IdType="ImmutableId", outlook.body-content-type="html"'


def _follow(http: httpx.Client, url: str, params: dict[str, str] | None) -> tuple[int, int, int, str]:
    """Read every page from `url`: (requests, bytes, items, deltaLink)."""
    requests = size = items = 0
    response = http.get(url, params=params)
    while True:
        response.raise_for_status()
        requests += 1
        size += len(response.content)
        body = response.json()
        items += len(body.get("value", []))
        if "@odata.nextLink" not in body:
            return requests, size, items, str(body.get("@odata.deltaLink", ""))
        response = http.get(body["@odata.nextLink"])


def run(messages: int, cycles: int, new_per_cycle: int, days: int = 14) -> dict[str, Any]:
    seed = mailbox(messages, days, seed=11)
    upn = seed["users"][0]["userPrincipalName"]
    since = (datetime.now(UTC) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")
    common = {"$select": ",".join(SELECT), "$expand": ",".join(EXPAND)}
    with local_stack(seed, budget=0) as stack:
        headers = {"Authorization": "Bearer bench", "Prefer": PREFER}
        with httpx.Client(base_url=stack.graph.base_url, headers=headers, timeout=60) as http:
            folder = f"/users/{upn}/mailFolders/inbox/messages"
            first = _follow(http, f"{folder}/delta", {**common, "$filter": f"receivedDateTime ge {since}"})
            delta_link = first[3]
            rescan: list[tuple[int, int, int]] = []
            delta: list[tuple[int, int, int]] = []
            for cycle in range(cycles):
                for n in range(new_per_cycle):
                    stack.graph.control.deliver(
                        upn,
                        {"from": {"address": "ann@fabrikam.example"}, "to": [{"address": upn}],
                         "subject": f"Cycle {cycle} message {n}", "bodyHtml": "<p>New</p>"},
                    )  # fmt: skip
                params = {**common, "$filter": f"receivedDateTime ge {since}", "$top": str(PAGE)}
                requests, size, items, _ = _follow(http, folder, params)
                rescan.append((requests, size, items))
                requests, size, items, delta_link = _follow(http, delta_link, None)
                delta.append((requests, size, items))

    def per_cycle(rows: list[tuple[int, int, int]]) -> dict[str, float]:
        return {
            "graph_requests": round(sum(r[0] for r in rows) / len(rows), 1),
            "bytes": round(sum(r[1] for r in rows) / len(rows)),
            "items": round(sum(r[2] for r in rows) / len(rows), 1),
        }

    ours, theirs = per_cycle(delta), per_cycle(rescan)
    return {
        "bench": "rescan_vs_delta",
        "messages_in_window": messages,
        "days_back": days,
        "new_per_cycle": new_per_cycle,
        "cycles": cycles,
        "initial_round": {"graph_requests": first[0], "bytes": first[1], "items": first[2]},
        "rescan_per_cycle": theirs,
        "delta_per_cycle": ours,
        "requests_ratio": round(theirs["graph_requests"] / max(1, ours["graph_requests"]), 1),
        "bytes_ratio": round(theirs["bytes"] / max(1, ours["bytes"]), 1),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--new-per-cycle", type=int, default=5)
    args = parser.parse_args(argv)
    result = run(args.messages, args.cycles, args.new_per_cycle)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
