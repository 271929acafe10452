"""host.json agrees with the code and with the issue: a worker that notices a job within seconds, the
same dequeue limit the worker writes into the user's status, base64 messages as `StorageJobQueue`
sends them, and no log category verbose enough to carry tokens or personal data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from azure.storage.queue import TextBase64EncodePolicy

from emulators.funchost.config import timespan_seconds
from functions import worker
from shared.state.queue import StorageJobQueue

HOST = json.loads((Path(__file__).parents[2] / "host.json").read_text())
QUEUES: dict[str, Any] = HOST["extensions"]["queues"]


def test_the_worker_dequeue_limit_matches_host_json() -> None:
    assert QUEUES["maxDequeueCount"] == worker.MAX_DEQUEUE_COUNT


def test_an_idle_queue_is_polled_every_few_seconds() -> None:
    assert 0.1 <= timespan_seconds(QUEUES["maxPollingInterval"], "maxPollingInterval") <= 5


def test_a_failed_job_is_retried_after_a_short_visibility_timeout() -> None:
    assert 5 <= timespan_seconds(QUEUES["visibilityTimeout"], "visibilityTimeout") <= 120


def test_messages_are_base64_like_the_jobs_the_app_enqueues() -> None:
    queue = StorageJobQueue.from_connection_string("UseDevelopmentStorage=true")
    assert QUEUES["messageEncoding"] == "base64"
    assert isinstance(queue.client("sync-jobs")._message_encode_policy, TextBase64EncodePolicy)


def test_the_function_timeout_outlasts_a_lease_and_is_bounded() -> None:
    from shared.sync.runner import LEASE_SECONDS

    timeout = timespan_seconds(HOST["functionTimeout"], "functionTimeout")
    assert LEASE_SECONDS < timeout <= 30 * 60


def test_no_log_category_is_verbose_enough_to_carry_request_details() -> None:
    levels = HOST["logging"]["logLevel"]
    assert not {name for name, level in levels.items() if level in {"Trace", "Debug"}}
    assert levels["Azure.Core"] in {"Warning", "Error", "None"}  # the host's storage SDK logs URLs
