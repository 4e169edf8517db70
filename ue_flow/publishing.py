"""Queuing several messages as one unit on Redis: all of them or none."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dramatiq
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from dramatiq.encoder import JSONEncoder

from .jsontext import compact_json_bytes

# Queues each message the way Dramatiq's own dispatch script does for its
# enqueue command: the body in the queue's ".msgs" hash under a Redis
# message id, and that id pushed on the queue's list. KEYS contains the
# list and the hash of each message in turn, and ARGV its id and body,
# then a marker key to set with the messages (or '') and its lifetime in ms.
# A marker that exists already means another call queued these messages.
# The script then queues nothing and returns 1, and otherwise returns 0.
# Redis does not undo the writes of a script that fails halfway, so the
# key types are checked before the first write. Redis 7 checks maxmemory
# once, when the script starts, so memory cannot stop it halfway either
# (tests/faults/test_attack_emit_oom.py checks this against the server).
_ENQUEUE_ALL = """
local marker, marker_ttl = ARGV[#ARGV - 1], ARGV[#ARGV]
if marker ~= '' and redis.call('exists', marker) == 1 then
    return 1
end
for i = 1, #KEYS, 2 do
    local list, hash = redis.call('type', KEYS[i]).ok, redis.call('type', KEYS[i + 1]).ok
    if (list ~= 'none' and list ~= 'list') or (hash ~= 'none' and hash ~= 'hash') then
        return redis.error_reply('WRONGTYPE queue keys ' .. KEYS[i] .. ' are not a list and a hash')
    end
end
for i = 1, #KEYS, 2 do
    redis.call('hset', KEYS[i + 1], ARGV[i], ARGV[i + 1])
    redis.call('rpush', KEYS[i], ARGV[i])
end
if marker ~= '' then
    redis.call('set', marker, '1', 'PX', marker_ttl)
end
return 0
"""


class TogetherQueue:
    """A queue writer that sends several messages to a Redis broker in one script call."""

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker
        self._enqueue_all = broker.client.register_script(_ENQUEUE_ALL)

    def is_marked(self, marker: str) -> bool:
        """True when ``marker``, set by ``enqueue``, exists."""
        return bool(self.broker.client.exists(marker))

    def enqueue(
        self, messages: Sequence[Message[Any]], *, marker: str = "", marker_ttl_ms: int = 0
    ) -> bool:
        """Queue new ``messages``: every one of them, or none when Redis fails.

        Each message is queued as ``broker.enqueue`` would queue it, with
        the enqueue hooks of the broker's middleware, so that a caller that
        retries after an error does not queue a second copy of some of them.
        ``marker``, when given, is set in the same call, so that it exists
        exactly when the messages were queued. When it exists already,
        nothing is queued and the result is False.
        """
        broker = self.broker
        keys: list[str] = []
        args: list[str | bytes] = []
        for message in messages:
            # Dramatiq gives each enqueue a fresh Redis message id because a
            # retried message keeps its message id; a new message's own id is
            # unique already.
            message.options["redis_message_id"] = message.message_id
            broker.emit_before("enqueue", message, None)
            queue = f"{broker.namespace}:{message.queue_name}"
            keys += [queue, f"{queue}.msgs"]
            args += [message.options["redis_message_id"], encode(message)]

        already_queued = self._enqueue_all(keys=keys, args=[*args, marker, marker_ttl_ms])
        if already_queued:
            return False
        for message in messages:
            broker.emit_after("enqueue", message, None)
        return True


def encode(message: Message[Any]) -> bytes:
    """Return ``message`` as Dramatiq's encoder would, as JSON when that encoder is JSON.

    Dramatiq's JSON encoder takes about 10 microseconds for a delivery
    message, most of emit's own work beside the Redis call, and
    ``compact_json_bytes`` writes the same JSON in under one. Workers decode it
    with ``json.loads`` either way.
    """
    if type(dramatiq.get_encoder()) is JSONEncoder:
        return compact_json_bytes(message.asdict())
    return message.encode()
