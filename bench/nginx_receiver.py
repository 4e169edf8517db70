"""A fast webhook receiver: nginx from Debian's packages, run with a private config.

nginx responds to every request with ``return 200;`` and writes one access-log
line per request, holding ``$msec``, its wall-clock time in seconds with
millisecond resolution. The benchmark counts those lines to know how many
deliveries arrived and when the last one did. Install nginx with
``apt-get install -y nginx-light`` (or ``nginx``).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import free_port
from bench.receiver import Receiver

#: The directory Debian installs nginx in, searched after PATH.
NGINX_FALLBACK_PATH = "/usr/sbin/nginx"

#: How long nginx may take to listen after it starts, in seconds.
START_TIMEOUT_S = 10.0

#: How long nginx may take to exit after SIGQUIT before it is killed, in seconds.
STOP_TIMEOUT_S = 10.0

INSTALL_HINT = "install it with: apt-get update && apt-get install -y nginx-light"

# worker_processes matches the Python receiver's 2 processes. Every
# *_temp_path sits in the private directory, so that nginx writes nothing
# under /var. keepalive_requests is raised so that, like the Python
# receiver, nginx never closes a sender's keep-alive connection.
_CONFIG = """\
daemon off;
master_process on;
worker_processes {processes};
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{
    worker_connections 1024;
}}
http {{
    client_body_temp_path {directory}/body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
    log_format arrival '$msec';
    access_log {directory}/access.log arrival;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            return 200;
        }}
    }}
}}
"""


def find_nginx() -> str | None:
    """Return the path of the nginx executable, or None when it is not installed."""
    found = shutil.which("nginx")
    if found:
        return found
    return NGINX_FALLBACK_PATH if Path(NGINX_FALLBACK_PATH).exists() else None


class NginxReceiver:
    """An nginx master with ``processes`` workers on a free port of 127.0.0.1.

    Offers the same methods as ``bench.receiver.Receiver``. Arrival times
    are converted from nginx's wall clock to ``time.monotonic()``, at
    millisecond resolution.
    """

    def __init__(self, executable: str, processes: int) -> None:
        self.processes = processes
        self.directory = Path(tempfile.mkdtemp(prefix="ue_flow_bench_nginx_"))
        self._port = free_port()
        self._log_path = self.directory / "access.log"
        self._log_path.touch()
        config = _CONFIG.format(processes=processes, directory=self.directory, port=self._port)
        config_path = self.directory / "nginx.conf"
        config_path.write_text(config, encoding="utf-8")
        self._output = open(self.directory / "stderr.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [executable, "-c", str(config_path), "-p", str(self.directory)],
            stdout=self._output,
            stderr=subprocess.STDOUT,
        )
        self._offset = 0
        self._count = 0
        self._last_wall = 0.0
        self._baseline = 0
        self._wait_listening()

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self._port)) == 0:
                    return
            time.sleep(0.05)
        self.stop()
        errors = (self.directory / "error.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"nginx did not listen on 127.0.0.1:{self._port}:\n{errors}")

    @property
    def version(self) -> str:
        """The version line nginx prints, such as ``nginx/1.22.1``."""
        output = subprocess.run(
            [self.process.args[0], "-v"],
            capture_output=True,
            text=True,  # type: ignore[index]
        )
        return output.stderr.strip().removeprefix("nginx version: ")

    @property
    def pids(self) -> list[int]:
        """The process ids of the master and its workers."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        workers = [int(pid) for pid in children.read_text().split()] if children.exists() else []
        return [self.process.pid, *workers]

    @property
    def port(self) -> int:
        """The TCP port nginx listens on."""
        return self._port

    def url(self, path: str) -> str:
        """Return the URL of ``path`` on this receiver."""
        return f"http://127.0.0.1:{self._port}/{path.lstrip('/')}"

    def _read_new_lines(self) -> None:
        with open(self._log_path, "rb") as log:
            log.seek(self._offset)
            chunk = log.read()
        # A line being written may be incomplete; it is read on the next call.
        complete = chunk[: chunk.rfind(b"\n") + 1]
        if not complete:
            return
        self._offset += len(complete)
        lines = complete.split(b"\n")[:-1]
        self._count += len(lines)
        self._last_wall = max(self._last_wall, max(float(line) for line in lines))

    def reset(self) -> None:
        """Count from zero again: requests logged so far are ignored."""
        self._read_new_lines()
        self._baseline = self._count
        self._last_wall = 0.0

    def snapshot(self) -> tuple[int, float]:
        """Return the requests since ``reset()`` and the monotonic time of the last one."""
        self._read_new_lines()
        if self._last_wall == 0.0:
            return self._count - self._baseline, 0.0
        last = time.monotonic() - (time.time() - self._last_wall)
        return self._count - self._baseline, last

    def wait_for(self, count: int, timeout_s: float) -> tuple[int, float]:
        """Wait until ``count`` requests arrived or ``timeout_s`` passed; return ``snapshot()``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            received, last = self.snapshot()
            if received >= count:
                return received, last
            time.sleep(0.01)
        return self.snapshot()

    def stop(self) -> None:
        """Stop nginx (SIGQUIT, then SIGKILL after a timeout) and delete its directory."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._output.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def fast_receiver(processes: int) -> tuple[NginxReceiver | Receiver, str]:
    """Start nginx when installed, else the Python receiver; return it and its description."""
    executable = find_nginx()
    if executable is None:
        print(
            f"nginx not found, so the fast receiver is the Python one; {INSTALL_HINT}",
            file=sys.stderr,
            flush=True,
        )
        return Receiver(processes), f"Python ThreadingHTTPServer, {processes} processes"
    receiver = NginxReceiver(executable, processes)
    return receiver, f"{receiver.version}, {processes} worker processes, return 200"
