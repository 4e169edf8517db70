"""Scheduled retries: a Redis sorted set per queue, moved to the queue when due.

Dramatiq's own delayed messages wait in the memory of the worker that
fetched them, unacknowledged, for as long as the delay. Scheduled retries
here wait in Redis instead, so hours-long backoffs cost workers no memory
and survive any worker's restart.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import dramatiq
import redis
from dramatiq import Message
from dramatiq.broker import MessageProxy

#: How long a scheduler owns the retries it claimed before another may
#: claim them again, in milliseconds. A scheduler that dies between
#: claiming and enqueueing loses nothing: the claim runs out and the
#: retry is moved again, possibly twice, which at-least-once allows.
CLAIM_LEASE_MS = 60_000

#: The maximum number of retries moved per queue in one pass.
CLAIM_BATCH = 500

# Claims the due members by pushing their score past the lease, atomically,
# so that two schedulers never move the same retry at once.
_CLAIM_SCRIPT = """
local due = redis.call('zrangebyscore', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, member in ipairs(due) do
    redis.call('zadd', KEYS[1], ARGV[2], member)
end
return due
"""

#: Message options that belong to one trip through the broker only.
_TRANSIENT_OPTIONS = ("redis_message_id", "eta", "traceback", "requeue_timestamp")


class RetryScheduler:
    """Scheduled retries of every queue under one key prefix."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self._claim = client.register_script(_CLAIM_SCRIPT)

    def key(self, queue_name: str) -> str:
        """Return the sorted set of ``queue_name``'s scheduled retries."""
        return f"{self.namespace}:scheduled:{queue_name}"

    def schedule(
        self, message: Message[Any] | MessageProxy, due_ms: int, options: dict[str, object]
    ) -> None:
        """Store a copy of ``message`` with ``options`` to be queued at ``due_ms``.

        The copy gets a new message id, so that a retry is never mistaken
        for the attempt it follows; the event id travels in its arguments.
        """
        kept = {
            key: value for key, value in message.options.items() if key not in _TRANSIENT_OPTIONS
        }
        retry: Message[Any] = dramatiq.Message(
            queue_name=message.queue_name.removesuffix(".DQ"),
            actor_name=message.actor_name,
            args=message.args,
            kwargs=message.kwargs,
            options={**kept, **options},
            message_id=str(uuid.uuid4()),
            message_timestamp=message.message_timestamp,
        )
        self.client.zadd(self.key(retry.queue_name), {retry.encode(): due_ms})

    def move_due(
        self,
        broker: dramatiq.Broker,
        queue_names: Iterable[str],
        now_ms: int,
        lease_ms: int = CLAIM_LEASE_MS,
    ) -> int:
        """Enqueue every retry due by ``now_ms``; return how many were moved.

        Claimed retries that a dead scheduler did not move are claimed
        again after ``lease_ms`` milliseconds.
        """
        moved = 0
        for queue_name in queue_names:
            key = self.key(queue_name)
            due = self._claim(keys=[key], args=[now_ms, now_ms + lease_ms, CLAIM_BATCH])
            for member in due:
                broker.enqueue(Message.decode(member))
                self.client.zrem(key, member)
                moved += 1
        return moved

    def take_all(self, queue_name: str) -> list[Message[Any]]:
        """Remove and return every scheduled retry of ``queue_name``."""
        key = self.key(queue_name)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.zrange(key, 0, -1)
            pipe.delete(key)
            members, _ = pipe.execute()
        return [Message.decode(member) for member in members]

    def count(self, queue_name: str) -> int:
        """Return how many retries of ``queue_name`` are waiting."""
        return int(self.client.zcard(self.key(queue_name)))
