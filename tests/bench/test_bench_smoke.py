"""Every benchmark runs end to end at a tiny size (`python -m bench --tiny`), so none of them rots.
No timing is asserted; only that each ran and that its counts are what the design promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from emulators.process import ROOT


def test_every_benchmark_runs_at_a_tiny_size(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--jobs", "5", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert {"backfill", "idle_sweep", "latency", "rescan", "cold_start", "dataverse"} <= results.keys()

    backfill = results["backfill"]
    assert backfill["outcome"] == "done"
    assert backfill["journals_in_crm"] == backfill["stats"]["journaled"] > 0
    assert backfill["bare_read"]["items"] == 150
    assert backfill["graph_requests"] <= backfill["graph_requests_minimum"]

    sweep = results["idle_sweep"]
    assert sweep["per_stream_jobs"]["graph_requests_per_user"] == 2.0
    assert sweep["batch_probe"]["graph_requests_per_user"] <= 1.0  # users share $batches of 20
    assert sweep["batch_probe"]["jobs"] == sweep["batch_probe_again"]["jobs"] == 0
    assert sweep["after_one_new_message"]["jobs"] == ["user00000@contoso.test|mail:inbox"]
    assert sweep["after_one_new_message"]["journals_in_crm"] == 1

    latency = results["latency"]
    assert latency["missed"] == 0 and latency["subscriptions_created"] == 1

    rescan = results["rescan"]
    assert rescan["delta_per_cycle"]["items"] == 2
    assert rescan["rescan_per_cycle"]["items"] == 122

    assert results["cold_start"]["functions"] > 0

    dataverse = results["dataverse"]
    assert dataverse["outcome"] == "done"
    assert dataverse["journals_in_crm"] == dataverse["stats"]["journaled"] > 0
    # per Graph page: the people lookup, the email lookup and the writes, each one $batch; the owner once
    assert dataverse["dataverse_requests"] == 3 * dataverse["stats"]["pages"] + 1
