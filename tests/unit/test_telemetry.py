"""Telemetry never records request URLs: Graph delta links carry tokens, CRM and Table URLs carry
message ids and user names. The Azure Monitor distro instruments httpx, urllib3 and the Azure SDK by
default; `shared.telemetry.configure` must turn them off. Each case runs in a fresh interpreter,
because instrumentation is process-global."""

from __future__ import annotations

import subprocess
import sys
import textwrap

PROBE = textwrap.dedent(
    """
    import sys
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor
    conn = "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=http://127.0.0.1:9/"
    if sys.argv[1] == "ours":
        from shared.telemetry import configure
        configure(conn)
    else:
        from azure.monitor.opentelemetry import configure_azure_monitor
        configure_azure_monitor(connection_string=conn, disable_offline_storage=True)
    print("instrumented", HTTPXClientInstrumentor().is_instrumented_by_opentelemetry,
          URLLib3Instrumentor().is_instrumented_by_opentelemetry)
    """
)


def instrumented(which: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, which], capture_output=True, text=True, timeout=120, check=True
    )
    return next(line for line in result.stdout.splitlines() if line.startswith("instrumented"))


def test_the_distro_would_record_http_urls_by_default() -> None:
    assert instrumented("default") == "instrumented True True"


def test_our_telemetry_records_no_http_urls() -> None:
    assert instrumented("ours") == "instrumented False False"


TAG = textwrap.dedent(
    """
    import sys
    from shared.telemetry import use_log_hash_key, user_tag
    if sys.argv[1]:
        use_log_hash_key(sys.argv[1])
    print("tag", user_tag("Ann.Lee@Contoso.com "))
    """
)


def tag_in_a_fresh_process(key: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", TAG, key], capture_output=True, text=True, timeout=120, check=True
    )
    return next(line for line in result.stdout.splitlines() if line.startswith("tag")).split()[1]


def test_user_tags_are_keyed_so_hashing_the_user_list_does_not_reverse_them() -> None:
    import hashlib
    import hmac

    upn = "ann.lee@contoso.com"
    unkeyed = hashlib.sha256(upn.encode()).hexdigest()[:12]  # anyone with the user list could match it
    keyed = tag_in_a_fresh_process("deployment-secret-1")

    assert keyed == hmac.new(b"deployment-secret-1", upn.encode(), hashlib.sha256).hexdigest()[:12]
    assert keyed != unkeyed
    assert tag_in_a_fresh_process("deployment-secret-1") == keyed  # stable across instances
    assert tag_in_a_fresh_process("deployment-secret-2") != keyed


def test_without_a_key_the_tag_is_random_per_process_never_the_plain_hash() -> None:
    import hashlib

    first, second = tag_in_a_fresh_process(""), tag_in_a_fresh_process("")
    assert first != second
    assert hashlib.sha256(b"ann.lee@contoso.com").hexdigest()[:12] not in (first, second)
