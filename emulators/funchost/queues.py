"""Queue triggers with the Storage Queues extension's semantics (host.json `extensions.queues`).

- Messages are received in batches of `batchSize`, hidden for `PROCESSING_VISIBILITY` while the
  function runs (renewed half-way, like the host's visibility renewal). A new batch is fetched
  when the messages still running drop to `newBatchThreshold`, so at most
  `batchSize + newBatchThreshold` run at once per function.
- Bodies are base64-decoded (`messageEncoding: base64`, the default); a body that does not decode
  goes straight to the poison queue.
- Success deletes the message. A failure makes it visible again after `visibilityTimeout`; the
  failure on the `maxDequeueCount`-th dequeue copies it to `<queue>-poison` and deletes it (so does
  a dequeue beyond `maxDequeueCount`, e.g. after a host crash mid-run).
- Polling backs off exponentially from 100 ms to `maxPollingInterval` while the queue is empty and
  polls again at once while it has messages; a queue output binding in this host writing to the
  queue resets the back-off (the host's fast path).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import math
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.functions.queue import QueueMessage as FunctionQueueMessage
from azure.storage.queue import QueueMessage as StorageMessage
from azure.storage.queue.aio import QueueClient

from emulators.funchost.config import QueueOptions
from emulators.funchost.indexing import FunctionSpec
from emulators.funchost.invoke import Invoker, QueueClients, trigger_annotation

logger = logging.getLogger(__name__)

PROCESSING_VISIBILITY = 600  # seconds a received message stays hidden while its function runs
MIN_POLLING_INTERVAL = 0.1


def poison_queue_name(queue: str) -> str:
    return f"{queue}-poison"


class QueueListener:
    def __init__(
        self,
        spec: FunctionSpec,
        invoker: Invoker,
        clients: QueueClients,
        options: QueueOptions,
        processing_visibility: int = PROCESSING_VISIBILITY,
    ) -> None:
        self.spec = spec
        self.invoker = invoker
        self.clients = clients
        self.options = options
        self.processing_visibility = processing_visibility
        self.in_flight: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()  # a run ended, or a message was sent to this queue here
        self._annotation = trigger_annotation(spec)
        clients.on_send.append(self._heard_send)

    def _heard_send(self, queue: str) -> None:
        if queue == self.spec.queue_name:
            self._changed.set()

    @property
    def queue(self) -> QueueClient:
        return self.clients.get(self.spec.connection, self.spec.queue_name)

    async def loop(self) -> None:
        delay = MIN_POLLING_INTERVAL
        while True:
            if len(self.in_flight) > self.options.new_batch_threshold:
                self._changed.clear()
                await self._changed.wait()
                continue
            try:
                messages = [
                    m
                    async for m in self.queue.receive_messages(
                        max_messages=self.options.batch_size,
                        messages_per_page=self.options.batch_size,
                        visibility_timeout=self.processing_visibility,
                    )
                ]
            except ResourceNotFoundError:
                messages = []  # the queue does not exist yet: it is empty
            except Exception as e:  # storage unreachable: keep polling, backing off
                logger.warning("queue %s: receive failed (%s)", self.spec.queue_name, type(e).__name__)
                messages = []
            for message in messages:
                task = asyncio.create_task(self._process(message))
                self.in_flight.add(task)
                task.add_done_callback(self._done)
            if messages:
                delay = MIN_POLLING_INTERVAL
                continue
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), delay)
            delay = (
                MIN_POLLING_INTERVAL
                if self._changed.is_set()
                else min(delay * 2, self.options.max_polling_interval)
            )

    def _done(self, task: asyncio.Task[None]) -> None:
        self.in_flight.discard(task)
        self._changed.set()

    async def drain(self, timeout: float) -> None:
        if self.in_flight:
            await asyncio.wait(self.in_flight, timeout=timeout)

    def _decode(self, content: str) -> bytes:
        if self.options.message_encoding == "base64":
            return base64.b64decode(content, validate=True)
        return content.encode("utf-8")

    def _argument(self, message: StorageMessage, body: bytes) -> Any:
        if self._annotation is str or self._annotation == "str":
            return body.decode("utf-8")
        if self._annotation is bytes or self._annotation == "bytes":
            return body
        return FunctionQueueMessage(  # type: ignore[no-untyped-call]
            id=message.id,
            body=body,
            dequeue_count=message.dequeue_count,
            insertion_time=message.inserted_on,
            expiration_time=message.expires_on,
            time_next_visible=message.next_visible_on,
            pop_receipt=message.pop_receipt,
        )

    async def _poison(self, message: StorageMessage, receipt: str) -> None:
        poison = poison_queue_name(self.spec.queue_name)
        await self.clients.send_raw(self.spec.connection, poison, message.content)
        await self.queue.delete_message(message.id, receipt)
        logger.warning(
            "message %s of queue %s moved to %s after %s dequeues",
            message.id,
            self.spec.queue_name,
            poison,
            message.dequeue_count,
        )

    async def _renew(self, message: StorageMessage, receipt: list[str]) -> None:
        """Keep the message hidden while the function runs; `receipt[0]` follows each new pop receipt."""
        while True:
            await asyncio.sleep(self.processing_visibility / 2)
            updated = await self.queue.update_message(
                message.id, receipt[0], visibility_timeout=self.processing_visibility
            )
            receipt[0] = str(updated.pop_receipt)

    async def _process(self, message: StorageMessage) -> None:
        receipt = [str(message.pop_receipt)]
        try:
            if (message.dequeue_count or 0) > self.options.max_dequeue_count:
                await self._poison(message, receipt[0])
                return
            try:
                body = self._decode(message.content)
            except (binascii.Error, ValueError):
                logger.warning("message %s of queue %s is not valid base64", message.id, self.spec.queue_name)
                await self._poison(message, receipt[0])
                return
            renewal = asyncio.create_task(self._renew(message, receipt))
            try:
                await self.invoker.invoke(
                    self.spec, self._argument(message, body), "New queue message detected"
                )
                succeeded = True
            except Exception:
                succeeded = False  # logged by the invoker
            finally:
                renewal.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await renewal  # a failed renewal only means the message may be seen again
            if succeeded:
                await self.queue.delete_message(message.id, receipt[0])
            elif (message.dequeue_count or 0) >= self.options.max_dequeue_count:
                await self._poison(message, receipt[0])
            else:
                await self.queue.update_message(
                    message.id, receipt[0], visibility_timeout=math.ceil(self.options.visibility_timeout)
                )
        except Exception:
            # storage trouble: the message reappears after its processing visibility and is retried
            logger.exception("queue %s: could not complete message %s", self.spec.queue_name, message.id)
