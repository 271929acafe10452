"""`make bench`: every benchmark on the local stack, each in its own process (so memory figures are its
own), at full size or tiny (`--tiny`, what the smoke test runs). Writes bench/results.json and prints it.

    python -m bench [--tiny] [--only backfill,idle_sweep,latency,rescan,cold_start,dataverse] [--jobs 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from emulators.process import ROOT

RESULTS = Path(__file__).resolve().parent / "results.json"

FULL: dict[str, list[str]] = {
    "backfill": ["--messages", "10000", "--days", "14"],
    "idle_sweep": ["--users", "1000"],
    "latency": ["--samples", "30", "--users", "3", "--idle", "1.0"],
    "rescan": ["--messages", "1000", "--cycles", "3", "--new-per-cycle", "5"],
    "cold_start": ["--runs", "5"],
    "dataverse": ["--messages", "10000", "--days", "14"],
}
TINY: dict[str, list[str]] = {
    "backfill": ["--messages", "150", "--days", "3"],
    "idle_sweep": ["--users", "4"],
    "latency": ["--samples", "2", "--users", "1", "--idle", "0.2"],
    "rescan": ["--messages", "120", "--cycles", "1", "--new-per-cycle", "2"],
    "cold_start": ["--runs", "1"],
    "dataverse": ["--messages", "150", "--days", "3"],
}


def run_one(name: str, args: list[str]) -> dict[str, Any]:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", *args], cwd=ROOT, capture_output=True, text=True
    )
    if proc.returncode != 0:
        return {"bench": name, "error": proc.stderr.strip().splitlines()[-20:], "returncode": proc.returncode}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["command"] = " ".join([".venv/bin/python -m", f"bench.{name}", *args])
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--jobs", type=int, default=1, help="benchmarks run at once (default 1)")
    args = parser.parse_args(argv)
    plan = TINY if args.tiny else FULL
    names = [n for n in args.only.split(",") if n] or list(plan)
    results: dict[str, Any] = {"size": "tiny" if args.tiny else "full"}
    if args.jobs > 1:  # at the price of figures that disturb each other: for the smoke test
        with ThreadPoolExecutor(args.jobs) as pool:
            done = pool.map(lambda n: run_one(n, plan[n]), names)
            results.update(zip(names, done, strict=True))
    for name in names:
        if name not in results:
            print(f"bench: running {name} …", file=sys.stderr, flush=True)
            results[name] = run_one(name, plan[name])
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    failed = [n for n in names if "error" in results[n]]
    if failed:
        for name in failed:  # the tail of each failed benchmark's stderr, so a failure can be diagnosed
            print(f"bench: {name}: " + "\n".join(results[name]["error"]), file=sys.stderr)
        print(f"bench: failed: {', '.join(failed)}", file=sys.stderr)
        raise SystemExit(1)
    return results


if __name__ == "__main__":
    main()
