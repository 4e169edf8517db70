"""Webhook receivers of the benchmarks, on 127.0.0.1, each in forked processes.

``Receiver`` counts POSTs and responds 200 at once. ``RecordingReceiver``
records when each delivery arrived and can make one path hang. Times are
``time.monotonic()``, which on Linux is one clock for every process of the
machine, so the parent can compare them with its own.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.sharedctypes
import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

_FORK = multiprocessing.get_context("fork")


class Receiver:
    """Counting HTTP servers in ``processes`` forked children; stop with ``stop()``.

    The parent process binds one listening socket, and every child runs a
    ThreadingHTTPServer on it, so the kernel spreads connections over the
    children. The count and the time of the last POST sit in shared memory.
    With ``delay_s`` above 0, each POST sleeps that many seconds before its
    response and is counted when it responds; each connection has its own
    thread, so concurrent POSTs sleep in parallel.
    """

    def __init__(self, processes: int, delay_s: float = 0.0) -> None:
        self.processes = processes
        self.delay_s = delay_s
        self._count = _FORK.Value("q", 0)
        self._last = _FORK.Value("d", 0.0)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._children = [
            _FORK.Process(target=self._server.serve_forever, daemon=True) for _ in range(processes)
        ]
        for child in self._children:
            child.start()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        count = self._count
        last = self._last
        delay_s = self.delay_s

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.1 keeps the senders' connections open, as a real
            # receiver behind a keep-alive proxy would.
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if delay_s > 0:
                    time.sleep(delay_s)
                with count.get_lock():
                    count.value += 1
                    last.value = time.monotonic()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    @property
    def pids(self) -> list[int]:
        """The process ids of the serving children."""
        return [child.pid for child in self._children if child.pid is not None]

    @property
    def port(self) -> int:
        """The TCP port the children listen on."""
        return int(self._server.server_address[1])

    def url(self, path: str) -> str:
        """Return the URL of ``path`` on this receiver."""
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def reset(self) -> None:
        """Set the count and the last-POST time back to zero."""
        with self._count.get_lock():
            self._count.value = 0
            self._last.value = 0.0

    def snapshot(self) -> tuple[int, float]:
        """Return the number of POSTs received and the monotonic time of the last one."""
        with self._count.get_lock():
            return int(self._count.value), float(self._last.value)

    def wait_for(self, count: int, timeout_s: float) -> tuple[int, float]:
        """Wait until ``count`` POSTs arrived or ``timeout_s`` passed; return ``snapshot()``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            received, last = self.snapshot()
            if received >= count:
                return received, last
            time.sleep(0.01)
        return self.snapshot()

    def stop(self) -> None:
        """Terminate the children this receiver started and close the socket."""
        for child in self._children:
            child.terminate()
        for child in self._children:
            child.join(timeout=5)
        self._server.server_close()


#: One POST seen by a RecordingReceiver: the first segment of its path (the
#: system's slug), its webhook-id header and its monotonic arrival time.
Arrival = tuple[str, str, float]


class RecordingReceiver:
    """An HTTP server in one forked child that records each POST's arrival.

    POSTs to ``/<hanging_slug>/...`` wait ``delay_s`` seconds, set with
    ``set_delay``, before their 200 response; every other POST gets it at
    once. A POST is recorded when its body has been read, before any wait.
    """

    def __init__(self, hanging_slug: str) -> None:
        self._delay_s = _FORK.Value("d", 0.0)
        self._arrivals: multiprocessing.Queue[Arrival] = _FORK.Queue()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class(hanging_slug))
        self._server.daemon_threads = True
        self._child = _FORK.Process(target=self._server.serve_forever, daemon=True)
        self._child.start()

    def _handler_class(self, hanging_slug: str) -> type[BaseHTTPRequestHandler]:
        delay_s = self._delay_s
        arrivals = self._arrivals

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                arrived = time.monotonic()
                slug = self.path.strip("/").split("/", 1)[0]
                arrivals.put((slug, self.headers.get("webhook-id", ""), arrived))
                if slug == hanging_slug and delay_s.value > 0:
                    time.sleep(delay_s.value)
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except (BrokenPipeError, ConnectionResetError):
                    # The sender timed out and closed the connection meanwhile.
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def url(self, path: str) -> str:
        """Return the URL of ``path`` on this receiver."""
        port = int(self._server.server_address[1])
        return f"http://127.0.0.1:{port}/{path.lstrip('/')}"

    def set_delay(self, seconds: float) -> None:
        """Make POSTs to the hanging slug wait ``seconds`` from now on; 0 responds at once."""
        self._delay_s.value = seconds

    def drain(self) -> list[Arrival]:
        """Return the arrivals recorded since the last call, without waiting."""
        drained = []
        while True:
            try:
                drained.append(self._arrivals.get_nowait())
            except queue.Empty:
                return drained

    def wait_for(self, slug: str, event_ids: set[str], timeout_s: float) -> list[Arrival]:
        """Collect arrivals until every id in ``event_ids`` reached ``slug``.

        Stops after ``timeout_s`` seconds at most. Returns every arrival
        collected, of any slug, in the order recorded.
        """
        deadline = time.monotonic() + timeout_s
        collected: list[Arrival] = []
        missing = set(event_ids)
        while missing and time.monotonic() < deadline:
            try:
                arrival = self._arrivals.get(timeout=0.05)
            except queue.Empty:
                continue
            collected.append(arrival)
            if arrival[0] == slug:
                missing.discard(arrival[1])
        return collected + self.drain()

    def stop(self) -> None:
        """Terminate the child and close the socket."""
        self._child.terminate()
        self._child.join(timeout=5)
        self._server.server_close()


def measure_ceiling(
    receiver: Receiver, body: bytes, *, requests_total: int, threads: int, timeout_s: float
) -> dict[str, Any]:
    """POST ``body`` from ``threads`` keep-alive sessions in a forked client process.

    Returns the requests per second the client and receiver reached
    together. The client shares the machine's cores with the receiver, so
    this is a lower bound of what the receiver alone could take.
    """
    result = _FORK.Queue()
    client = _FORK.Process(
        target=_ceiling_client,
        args=(receiver.url("/ceiling/"), body, requests_total, threads, timeout_s, result),
        daemon=True,
    )
    receiver.reset()
    client.start()
    outcome: dict[str, Any] = result.get(timeout=timeout_s + 30)
    client.join(timeout=5)
    received, _ = receiver.snapshot()
    outcome["received"] = received
    return outcome


def _ceiling_client(
    url: str, body: bytes, total: int, threads: int, timeout_s: float, result: Any
) -> None:
    per_thread = total // threads
    deadline = time.monotonic() + timeout_s
    sent_counts = [0] * threads
    error_counts = [0] * threads

    def post_many(index: int) -> None:
        with requests.Session() as session:
            session.trust_env = False
            headers = {"Content-Type": "application/json"}
            for _ in range(per_thread):
                if time.monotonic() > deadline:
                    return
                response = session.post(url, data=body, headers=headers, timeout=(5, 10))
                sent_counts[index] += 1
                if response.status_code != 200:
                    error_counts[index] += 1

    workers = [threading.Thread(target=post_many, args=(index,)) for index in range(threads)]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.monotonic() - started
    sent = sum(sent_counts)
    result.put(
        {
            "requests": sent,
            "seconds": elapsed,
            "per_second": sent / elapsed,
            "errors": sum(error_counts),
        }
    )


def measure_requests_loop(
    receiver: Any,
    deliveries: list[tuple[str, bytes]],
    *,
    rounds: int,
    processes: int,
    timeout_s: float,
) -> dict[str, Any]:
    """POST every (url, body) of ``deliveries`` ``rounds`` times from ``processes`` plain loops.

    Each forked process runs one thread with one keep-alive
    ``requests.Session`` and posts its share one after another, with no
    broker, queue or bookkeeping: the ceiling of a ``requests`` sender with
    as many processes as the workers. The figure is requests divided by the
    time from the start signal to the last POST the receiver counted.
    """
    start = _FORK.Event()
    total = rounds * len(deliveries)
    shares = [
        total // processes + (1 if index < total % processes else 0) for index in range(processes)
    ]
    clients = [
        _FORK.Process(
            target=_requests_loop, args=(deliveries, share, start, timeout_s), daemon=True
        )
        for share in shares
    ]
    for client in clients:
        client.start()
    receiver.reset()
    started = time.monotonic()
    start.set()
    received, last = receiver.wait_for(total, timeout_s)
    for client in clients:
        client.join(timeout=5)
    if received < total:
        raise RuntimeError(f"requests loop: only {received} of {total} POSTs arrived")
    seconds = last - started
    return {
        "requests": total,
        "processes": processes,
        "seconds": seconds,
        "per_second": total / seconds,
    }


def _requests_loop(
    deliveries: list[tuple[str, bytes]], count: int, start: Any, timeout_s: float
) -> None:
    start.wait(timeout_s)
    deadline = time.monotonic() + timeout_s
    headers = {"Content-Type": "application/json"}
    with requests.Session() as session:
        session.trust_env = False
        for index in range(count):
            if time.monotonic() > deadline:
                return
            url, body = deliveries[index % len(deliveries)]
            session.post(url, data=body, headers=headers, timeout=(5, 10)).content  # noqa: B018
