"""Celery app of the Celery baseline: ``celery -A bench.celery_app worker``.

It does what Unified Ecommerce does today: one task per delivery that
calls ``requests.post``, a new connection each time. Reads
BENCH_CELERY_BROKER (a redis:// URL), BENCH_CELERY_PREFIX (the key prefix
of every Redis key kombu writes, so that a run deletes only its own) and
BENCH_CELERY_QUEUE (the queue name, unique per run). Needs
``pip install 'celery[redis]'``.
"""

from __future__ import annotations

import os

import requests
from celery import Celery

#: The registered name of the delivery task.
DELIVER_TASK = "bench_celery_deliver"

app = Celery("bench_celery", broker=os.environ["BENCH_CELERY_BROKER"])
app.conf.update(
    broker_transport_options={"global_keyprefix": os.environ["BENCH_CELERY_PREFIX"]},
    broker_connection_retry_on_startup=True,
    task_default_queue=os.environ["BENCH_CELERY_QUEUE"],
    task_ignore_result=True,
    # Remote control would add a pub/sub channel and pidbox keys; the
    # benchmark sends no control commands.
    worker_enable_remote_control=False,
)


@app.task(name=DELIVER_TASK)
def deliver(url: str, body: str) -> None:
    """POST ``body`` to ``url`` with ``requests.post``; raise for anything but 2xx."""
    response = requests.post(
        url,
        data=body.encode("utf-8"),
        headers={"Content-Type": "application/json"},
        timeout=(5, 10),
        allow_redirects=False,
    )
    response.raise_for_status()
