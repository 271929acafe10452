from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_indexing_the_function_app_does_not_import_the_graph_sdk() -> None:
    """msgraph takes about a second to import on a cold instance: load it on first use, not at indexing."""
    probe = (
        "import sys, function_app; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'msgraph', 'kiota_http'}))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
