"""Sample running worker processes with py-spy and list where their time goes.

Usage: .venv/bin/python bench/profile_workers.py PY_SPY [ue_flow|bare] [--events N] [--top N]

PY_SPY is the path of a py-spy executable, installed apart from the
project (for example in its own venv), because py-spy is not a dependency.
The script starts one worker pool like the end-to-end benchmark, with its
fast receiver, sends the events, samples every worker process for a few
seconds while they deliver, and prints the functions with the most
samples, inclusive and self.
"""

from __future__ import annotations

import argparse
import collections
import logging
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import throughput
from bench.common import copy_config
from bench.nginx_receiver import fast_receiver
from ue_flow.logs import configure_logging

#: How long py-spy samples each worker process, in seconds.
SAMPLE_SECONDS = 5


def main() -> int:
    """Profile one worker pool and print the top functions."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("py_spy", help="path of the py-spy executable")
    parser.add_argument("target", choices=["ue_flow", "bare"], nargs="?", default="ue_flow")
    parser.add_argument("--events", type=int, default=6000, help="events to send (default 6000)")
    parser.add_argument(
        "--wall",
        action="store_true",
        help="sample every thread, waiting ones included, instead of only the GIL holder",
    )
    parser.add_argument("--top", type=int, default=30, help="functions to list (default 30)")
    args = parser.parse_args()

    configure_logging(logging.INFO)
    work = Path(tempfile.mkdtemp(prefix="ue_flow_profile_"))
    config_dir = copy_config(work)
    receiver, _ = fast_receiver(2)
    outputs: list[Path] = []
    original = throughput.WorkerPool.wait_ready

    def wait_then_sample(pool: throughput.WorkerPool) -> None:
        # Start the samplers once the workers are ready, just before the
        # benchmark sends its events, in a thread so that sending goes on.
        original(pool)
        children = subprocess.run(
            ["pgrep", "-P", str(pool.process.pid)], capture_output=True, text=True
        ).stdout.split()
        for pid in children:
            output = work / f"profile-{pid}.txt"
            outputs.append(output)
            # --gil keeps only samples of threads holding the GIL: CPU spent in
            # Python, not time spent waiting for Redis or HTTP responses.
            mode = "--idle" if args.wall else "--gil"
            command = [
                args.py_spy,
                "record",
                "--pid",
                pid,
                "--duration",
                str(SAMPLE_SECONDS),
                "--format",
                "raw",
                "--nonblocking",
                mode,
                "--output",
                str(output),
            ]
            threading.Thread(
                target=subprocess.run, args=(command,), kwargs={"capture_output": True}
            ).start()
        time.sleep(0.5)

    throughput.WorkerPool.wait_ready = wait_then_sample  # type: ignore[method-assign]
    runner = throughput.run_ue_flow if args.target == "ue_flow" else throughput.run_bare
    try:
        outcome = runner(receiver, config_dir, args.events, 2, 8, 120.0, work)
    finally:
        receiver.stop()
    time.sleep(SAMPLE_SECONDS)
    print(f"{args.target}: {outcome['per_second']:.0f} deliveries/s while sampled")
    print_top(outputs, args.top)
    return 0


def print_top(outputs: list[Path], count: int = 30) -> None:
    """Print the functions with the most samples in py-spy's raw (collapsed) files."""
    inclusive: collections.Counter[str] = collections.Counter()
    self_time: collections.Counter[str] = collections.Counter()
    total = 0
    for output in outputs:
        if not output.exists():
            continue
        for line in output.read_text(encoding="utf-8").splitlines():
            stack, _, samples = line.rpartition(" ")
            number = int(samples)
            frames = stack.split(";")
            total += number
            for frame in set(frames):
                inclusive[frame] += number
            self_time[frames[-1]] += number

    print(f"{total} samples; inclusive share, then self share")
    for frame, samples in inclusive.most_common(count):
        print(f"{samples / total:6.1%}  {frame}")
    print()
    for frame, samples in self_time.most_common(count):
        print(f"{samples / total:6.1%}  {frame}")


if __name__ == "__main__":
    sys.exit(main())
