"""Broker module of the baseline workers: ``dramatiq bench.bare_worker``.

Reads BENCH_REDIS_URL and BENCH_NAMESPACE, the Redis key prefix of one run.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench.bare import declare_bare_actors

broker = RedisBroker(url=os.environ["BENCH_REDIS_URL"], namespace=os.environ["BENCH_NAMESPACE"])
dramatiq.set_broker(broker)
declare_bare_actors(broker)
