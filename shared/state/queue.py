"""The `sync-jobs` queue over Azure Queue Storage (`azure.storage.queue.aio`).

A message's text is `Job.to_json()`, base64-encoded as the Functions queue trigger expects by default
(`TextBase64EncodePolicy`). After `maxDequeueCount` failed attempts the Functions host moves a message
to `sync-jobs-poison`; `ensure_queue` creates both queues.
"""

from __future__ import annotations

import math

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import AzureError, ResourceExistsError
from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from shared.errors import StateError
from shared.model import Job

JOBS_QUEUE = "sync-jobs"
POISON_QUEUE = "sync-jobs-poison"
MAX_DELAY_SECONDS = 7 * 24 * 3600  # Queue Storage's longest visibility timeout


class StorageJobQueue:
    """`JobQueue` over one `QueueServiceClient` (owned: closed by `aclose`; the credential is not)."""

    def __init__(self, service: QueueServiceClient, *, queue_name: str = JOBS_QUEUE) -> None:
        self._service = service
        self.queue_name = queue_name
        self.poison_queue_name = f"{queue_name}-poison"
        self._jobs = self.client(queue_name)

    @classmethod
    def from_connection_string(
        cls, connection_string: str, *, queue_name: str = JOBS_QUEUE
    ) -> StorageJobQueue:
        return cls(QueueServiceClient.from_connection_string(connection_string), queue_name=queue_name)

    @classmethod
    def from_service_uri(
        cls, queue_service_uri: str, credential: AsyncTokenCredential, *, queue_name: str = JOBS_QUEUE
    ) -> StorageJobQueue:
        return cls(QueueServiceClient(queue_service_uri, credential=credential), queue_name=queue_name)

    def client(self, queue_name: str) -> QueueClient:
        """A client for `queue_name` that reads and writes base64 text like the Functions host."""

        return self._service.get_queue_client(
            queue_name,
            message_encode_policy=TextBase64EncodePolicy(),
            message_decode_policy=TextBase64DecodePolicy(),
        )

    async def ensure_queue(self) -> None:
        for name in (self.queue_name, self.poison_queue_name):
            try:
                await self._service.create_queue(name)
            except ResourceExistsError:
                pass
            except AzureError as exc:
                raise StateError(f"creating queue {name} failed: {type(exc).__name__}") from exc

    async def enqueue(self, job: Job, delay_seconds: float = 0) -> None:
        delay = min(MAX_DELAY_SECONDS, math.ceil(max(0.0, delay_seconds)))
        try:
            await self._jobs.send_message(job.to_json(), visibility_timeout=delay or None)
        except AzureError as exc:
            raise StateError(f"enqueueing a job failed: {type(exc).__name__}") from exc

    async def aclose(self) -> None:
        await self._jobs.close()
        await self._service.close()
