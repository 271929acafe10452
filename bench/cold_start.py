"""Cold start: a fresh interpreter imports `function_app` and indexes its functions (what the Python
worker does before the first invocation), measured inside the child process, median of several runs.

    python -m bench.cold_start [--runs 5]      (prints JSON)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from typing import Any

from emulators.process import ROOT

CHILD = """
import json, sys, time
t0 = time.perf_counter()
import function_app
t1 = time.perf_counter()
functions = function_app.app.get_functions()
t2 = time.perf_counter()
heavy = ("msgraph", "azure.data.tables", "azure.storage.queue", "azure.identity")
heavy = sorted(m for m in heavy if m in sys.modules)
print(json.dumps({"import_s": t1 - t0, "index_s": t2 - t1, "functions": len(functions), "heavy": heavy}))
"""


def run(runs: int) -> dict[str, Any]:
    samples = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-X", "frozen_modules=on", "-c", CHILD],
            cwd=ROOT, capture_output=True, text=True, check=True,
        )  # fmt: skip
        samples.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {
        "bench": "cold_start",
        "runs": runs,
        "import_ms": round(statistics.median(s["import_s"] for s in samples) * 1000, 1),
        "index_ms": round(statistics.median(s["index_s"] for s in samples) * 1000, 1),
        "total_ms": round(statistics.median(s["import_s"] + s["index_s"] for s in samples) * 1000, 1),
        "functions": samples[0]["functions"],
        "heavy_modules_loaded_at_import": samples[0]["heavy"],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    result = run(parser.parse_args(argv).runs)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
