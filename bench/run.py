"""Run the ue-flow benchmarks in one process and print a table.

Usage: .venv/bin/python bench/run.py [--quick]

Measures, side by side in one run on Redis at 127.0.0.1:6379:

- emit() against a bare Dramatiq actor.send of the same payload;
- end-to-end deliveries per second of ``dramatiq ue_flow`` workers against
  bare Dramatiq workers, both posting to a local receiver;
- the same against Celery workers posting with ``requests.post``, and a
  plain ``requests`` loop (the ceiling), all to nginx on 127.0.0.1 when it
  is installed, else to the Python receiver;
- deliveries per second to receivers that respond after 200 ms, against
  the bound set by the deliveries in flight;
- a healthy system's emit-to-delivered latency with and without a hanging
  peer;
- worker RSS across a long run (100,000 deliveries, 1,000 in quick mode);
- emit and end-to-end cost per event with 1, 10 and 100 systems.

Celery and nginx are optional: without them the Celery comparison is
skipped and the Python receiver replaces nginx, each with a message that
names the install command.

Results go to bench/results/ as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from bench.celery_bench import celery_missing, run_celery
from bench.common import REDIS_URL, ROOT, copy_config, load_example
from bench.emit_cost import measure_emit
from bench.fanout import measure_fanout
from bench.isolation import P99_RATIO_GOAL, measure_isolation
from bench.memory import RSS_LIMIT_MIB, measure_memory
from bench.nginx_receiver import fast_receiver
from bench.receiver import measure_ceiling, measure_requests_loop
from bench.slow import Setting, measure_slow
from bench.throughput import example_deliveries, run_bare, run_ue_flow
from ue_flow.envelope import envelope_body

RESULTS_DIR = ROOT / "bench" / "results"

#: The goals the benchmarks check: emit may cost at most 1.3 times a bare
#: actor.send, and throughput must reach at least 0.9 times bare Dramatiq's.
EMIT_RATIO_GOAL = 1.3
THROUGHPUT_RATIO_GOAL = 0.9

#: ue-flow must deliver at least twice as many deliveries per second as
#: Celery workers doing one requests.post per task.
CELERY_RATIO_GOAL = 2.0

#: The worker settings of the slow-receiver phases: Dramatiq's and
#: ue-flow's defaults, and more threads with max_in_flight raised to match.
SLOW_SETTINGS = [Setting("defaults", 8, None), Setting("t32_max_in_flight_32", 32, 32)]

#: The system counts of the fan-out benchmark.
FANOUT_SYSTEMS = [1, 10, 100]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; ``--quick`` shrinks every count for a run under a minute."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="small counts (200 events, fewer rounds) for CI"
    )
    parser.add_argument(
        "--events", type=int, help="events per end-to-end phase (default 2000, quick 200)"
    )
    parser.add_argument(
        "--processes", type=int, default=2, help="worker processes, dramatiq -p (default 2)"
    )
    parser.add_argument(
        "--threads", type=int, default=8, help="threads per worker process, dramatiq -t (default 8)"
    )
    parser.add_argument(
        "--receiver-processes",
        type=int,
        default=2,
        help="forked receiver processes sharing one socket (default 2)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        help="seconds one end-to-end phase may take (default 120, quick 30)",
    )
    parser.add_argument(
        "--isolation-rate",
        type=float,
        default=20.0,
        help="events per second emitted in each isolation phase (default 20)",
    )
    parser.add_argument(
        "--isolation-seconds",
        type=float,
        help="seconds each isolation phase emits for (default 15, quick 3)",
    )
    parser.add_argument(
        "--memory-deliveries",
        type=int,
        help="deliveries of the memory soak (default 100000, quick 1000)",
    )
    args = parser.parse_args(argv)
    args.isolation_seconds = args.isolation_seconds or (3.0 if args.quick else 15.0)
    args.events = args.events or (200 if args.quick else 2000)
    args.timeout = args.timeout or (30.0 if args.quick else 120.0)
    args.emit_calls = 200 if args.quick else 500
    args.emit_rounds = 3 if args.quick else 7
    # Full runs alternate ue-flow and bare in ABBA order to even out drift.
    args.phase_order = ["ue_flow", "bare"] if args.quick else ["ue_flow", "bare", "bare", "ue_flow"]
    args.ceiling_requests = 400 if args.quick else 2000
    if args.quick:
        args.phase_order = ["ue_flow", "bare", "celery"]
    else:
        args.phase_order = ["ue_flow", "bare", "celery", "celery", "bare", "ue_flow"]
    args.slow_seconds = 1.5 if args.quick else 10.0
    args.slow_settings = SLOW_SETTINGS[1:] if args.quick else SLOW_SETTINGS
    args.memory_deliveries = args.memory_deliveries or (1_000 if args.quick else 100_000)
    args.memory_sample_s = 0.5 if args.quick else 5.0
    args.memory_timeout = 60.0 if args.quick else 900.0
    args.fanout_systems = [1, 100] if args.quick else FANOUT_SYSTEMS
    args.fanout_deliveries = 200 if args.quick else 2000
    args.fanout_emit_calls = 20 if args.quick else 200
    args.fanout_emit_rounds = 3 if args.quick else 5
    return args


def machine() -> dict[str, Any]:
    """Describe the machine and the versions that bound the figures."""
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    server = redis.Redis.from_url(REDIS_URL).info("server")
    return {
        "nproc": int(subprocess.run(["nproc"], capture_output=True, text=True).stdout),
        "cpu": model,
        "python": platform.python_version(),
        "dramatiq": version("dramatiq"),
        "redis_py": version("redis"),
        "redis_server": server["redis_version"],
        "requests": version("requests"),
        "jsonschema_rs": version("jsonschema-rs"),
        "structlog": version("structlog"),
        "celery": _version_or_none("celery"),
        "kombu": _version_or_none("kombu"),
    }


def _version_or_none(distribution: str) -> str | None:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def source_state() -> dict[str, Any]:
    """Return the commit measured and the files changed on top of it, if any."""

    def git(*arguments: str) -> str:
        return subprocess.run(["git", *arguments], cwd=ROOT, capture_output=True, text=True).stdout

    # Porcelain lines start with a status column that may be a space, so
    # the output is split into lines without stripping it first.
    changed = git("status", "--porcelain", "--", "ue_flow", "config", "schemas").splitlines()
    return {"commit": git("rev-parse", "HEAD").strip(), "uncommitted_product_changes": changed}


def main(argv: list[str] | None = None) -> int:
    """Run every benchmark once, write the JSON result and print the table."""
    args = parse_args(argv)
    started = time.monotonic()
    receiver, receiver_description = fast_receiver(args.receiver_processes)
    work = Path(tempfile.mkdtemp(prefix="ue_flow_bench_"))
    config_dir = copy_config(work)
    environ = {
        "MITXONLINE_WEBHOOK_URL": receiver.url("/mitxonline/"),
        "LEARN_WEBHOOK_URL": receiver.url("/learn/"),
        "UE_FLOW_KEY_MITXONLINE": "bench-key-mitxonline",
        "UE_FLOW_KEY_LEARN": "bench-key-learn",
    }
    try:
        result = run_all(args, receiver, config_dir, environ, work)
    finally:
        receiver.stop()
    result["receiver"] = receiver_description

    result["wall_seconds"] = time.monotonic() - started
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"{stamp}{'-quick' if args.quick else ''}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print_table(result)
    print(f"\nresults: {path.relative_to(ROOT)}; wall time {result['wall_seconds']:.1f} s")
    return 0


def run_all(
    args: argparse.Namespace,
    receiver: Any,
    config_dir: Path,
    environ: dict[str, str],
    work: Path,
) -> dict[str, Any]:
    """Run every benchmark: emit, ceilings, end to end, slow, isolation, memory, fan-out."""
    print("emit cost ...", file=sys.stderr, flush=True)
    emit = measure_emit(config_dir, environ, calls=args.emit_calls, rounds=args.emit_rounds)

    print("receiver ceiling ...", file=sys.stderr, flush=True)
    payload = load_example()
    body = envelope_body("mitxonline", "bench-key", "postsale", payload["user"], payload["data"])
    ceiling = measure_ceiling(
        receiver, body, requests_total=args.ceiling_requests, threads=8, timeout_s=args.timeout
    )

    phases: dict[str, list[dict[str, Any]]] = {"ue_flow": [], "bare": [], "celery": []}
    runners = {"ue_flow": run_ue_flow, "bare": run_bare, "celery": run_celery}
    celery_skipped = celery_missing()
    if celery_skipped:
        print(f"skipping the Celery comparison: {celery_skipped}", file=sys.stderr, flush=True)
    for name in args.phase_order:
        if name == "celery" and celery_skipped:
            continue
        print(f"end to end: {name} ...", file=sys.stderr, flush=True)
        outcome = runners[name](
            receiver, config_dir, args.events, args.processes, args.threads, args.timeout, work
        )
        phases[name].append(outcome)

    print("plain requests loop ...", file=sys.stderr, flush=True)
    deliveries = [(url, body.encode()) for url, body in example_deliveries(receiver, config_dir)]
    requests_loop = measure_requests_loop(
        receiver, deliveries, rounds=args.events, processes=args.processes, timeout_s=args.timeout
    )

    slow = measure_slow(
        work,
        args.slow_settings,
        processes=args.processes,
        seconds=args.slow_seconds,
        timeout_s=args.timeout,
    )

    isolation = measure_isolation(
        work,
        rate=args.isolation_rate,
        seconds=args.isolation_seconds,
        processes=args.processes,
        threads=args.threads,
        timeout_s=args.timeout,
    )

    print(f"memory: {args.memory_deliveries} deliveries ...", file=sys.stderr, flush=True)
    memory = measure_memory(
        receiver,
        config_dir,
        work,
        deliveries=args.memory_deliveries,
        processes=args.processes,
        threads=args.threads,
        sample_every_s=args.memory_sample_s,
        timeout_s=args.memory_timeout,
    )

    fanout = measure_fanout(
        receiver,
        work,
        system_counts=args.fanout_systems,
        deliveries=args.fanout_deliveries,
        emit_calls=args.fanout_emit_calls,
        emit_rounds=args.fanout_emit_rounds,
        processes=args.processes,
        threads=args.threads,
        timeout_s=args.timeout,
    )

    ue_rate = statistics.median(p["per_second"] for p in phases["ue_flow"])
    bare_rate = statistics.median(p["per_second"] for p in phases["bare"])
    celery_rate = (
        statistics.median(p["per_second"] for p in phases["celery"]) if phases["celery"] else None
    )
    emit_us = emit["microseconds"]
    return {
        "mode": "quick" if args.quick else "full",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "source": source_state(),
        "settings": {
            "events": args.events,
            "worker_processes": args.processes,
            "worker_threads": args.threads,
            "receiver_processes": args.receiver_processes,
            "emit_calls_per_round": args.emit_calls,
            "emit_rounds": args.emit_rounds,
            "phase_order": args.phase_order,
        },
        "emit": emit,
        "emit_ratio": emit_us["emit"] / emit_us["bare_send"],
        "receiver_ceiling": ceiling,
        "end_to_end": phases,
        "deliveries_per_second": {
            "ue_flow": ue_rate,
            "bare": bare_rate,
            "celery": celery_rate,
            "requests_loop": requests_loop["per_second"],
        },
        "throughput_ratio": ue_rate / bare_rate,
        "celery_ratio": ue_rate / celery_rate if celery_rate else None,
        "celery_skipped": celery_skipped,
        "requests_loop": requests_loop,
        "requests_loop_fraction": ue_rate / requests_loop["per_second"],
        "slow_receivers": slow,
        "isolation": isolation,
        "memory": memory,
        "fanout": fanout,
        "goals": {
            "emit_ratio_max": EMIT_RATIO_GOAL,
            "throughput_ratio_min": THROUGHPUT_RATIO_GOAL,
            "celery_ratio_min": CELERY_RATIO_GOAL,
            "slow_bound_fraction_min": slow["bound_fraction_goal"],
            "rss_mib_max": RSS_LIMIT_MIB,
            "isolation_p99_ratio_max": P99_RATIO_GOAL,
        },
    }


def print_table(result: dict[str, Any]) -> None:
    """Print the figures of one run with their ratios and goals."""
    emit_us = result["emit"]["microseconds"]
    unconfigured = result["emit"]["structlog_unconfigured_microseconds"]
    emit_ratio = result["emit_ratio"]
    rates = result["deliveries_per_second"]
    throughput_ratio = result["throughput_ratio"]
    settings = result["settings"]

    print(
        f"\nue-flow benchmark ({result['mode']}), {result['machine']['nproc']} cores, "
        f"{result['machine']['cpu']}"
    )
    print(f"\n{'emit, per event':<46}{'us':>10}{'share of emit':>16}")
    for name, label in [
        ("emit", "Engine.emit (structlog at INFO)"),
        ("bare_send", "bare actor.send, same broker"),
        ("normalize", "  normalize alone"),
        ("validate", "  validate alone (jsonschema-rs)"),
        ("owners", "  routing owners() alone"),
        ("route_enqueue", "  route + messages + one script call"),
    ]:
        share = f"{emit_us[name] / emit_us['emit']:.0%}" if name != "bare_send" else ""
        print(f"{label:<46}{emit_us[name]:>10.1f}{share:>16}")
    print(f"{'Engine.emit, structlog unconfigured':<46}{unconfigured['emit']:>10.1f}")
    verdict = "met" if emit_ratio <= EMIT_RATIO_GOAL else "NOT met"
    print(f"emit / bare send: {emit_ratio:.2f}x (goal <= {EMIT_RATIO_GOAL}x: {verdict})")

    print(f"\n{'end to end, ' + str(settings['events']) + ' events':<46}{'deliveries/s':>14}")
    for name, label in [("ue_flow", "dramatiq ue_flow"), ("bare", "bare Dramatiq actor")]:
        each = ", ".join(f"{p['per_second']:.0f}" for p in result["end_to_end"][name])
        print(f"{label:<46}{rates[name]:>14.0f}   rounds: {each}")
    if result["end_to_end"]["celery"]:
        each = ", ".join(f"{p['per_second']:.0f}" for p in result["end_to_end"]["celery"])
        label = "Celery, requests.post per task"
        print(f"{label:<46}{rates['celery']:>14.0f}   rounds: {each}")
    loop_label = f"plain requests loop, {result['requests_loop']['processes']} processes"
    print(f"{loop_label:<46}{rates['requests_loop']:>14.0f}")
    ceiling = result["receiver_ceiling"]
    print(f"{'receiver ceiling (8-thread Python client)':<46}{ceiling['per_second']:>14.0f}")
    print(f"receiver: {result.get('receiver', 'n/a')}")
    verdict = "met" if throughput_ratio >= THROUGHPUT_RATIO_GOAL else "NOT met"
    print(f"ue-flow / bare: {throughput_ratio:.2f}x (goal >= {THROUGHPUT_RATIO_GOAL}x: {verdict})")
    if result["celery_ratio"] is not None:
        ratio = result["celery_ratio"]
        verdict = "met" if ratio >= CELERY_RATIO_GOAL else "NOT met"
        print(f"ue-flow / Celery: {ratio:.2f}x (goal >= {CELERY_RATIO_GOAL}x: {verdict})")
    else:
        print(f"ue-flow / Celery: skipped ({result['celery_skipped']})")
    print(f"ue-flow / plain requests loop: {result['requests_loop_fraction']:.2f}")

    print_slow(result["slow_receivers"])
    print_isolation(result["isolation"])
    print_memory(result["memory"])
    print_fanout(result["fanout"])


def print_slow(slow: dict[str, Any]) -> None:
    """Print deliveries per second to slow receivers against the in-flight bound."""
    print(f"\nslow receivers, {slow['delay_ms']:.0f} ms per response")
    header = ("setting", "in flight", "bound/s", "whole/s", "steady/s", "steady/bound")
    print(f"{header[0]:<28}" + "".join(f"{h:>{len(h) + 2}}" for h in header[1:]))
    for name, phase in slow["phases"].items():
        print(
            f"{name:<28}{phase['in_flight_bound']:>11}{phase['bound_per_second']:>9.0f}"
            f"{phase['per_second']:>9.0f}{phase['steady_per_second']:>10.0f}"
            f"{phase['steady_fraction_of_bound']:>14.2f}"
        )
    print(f"goal: steady/bound >= {slow['bound_fraction_goal']}")


def print_memory(memory: dict[str, Any]) -> None:
    """Print each worker process's RSS after warm-up and at the end."""
    print(
        f"\nmemory, {memory['deliveries']} deliveries in {memory['seconds']:.0f} s, "
        f"RSS after {memory['warm_up_deliveries']} (warm-up) and at the end"
    )
    print(f"{'process':<28}{'warm MiB':>10}{'end MiB':>10}{'max MiB':>10}{'growth MiB':>12}")
    for pid, summary in memory["processes"].items():
        label = f"{summary['role']} {pid}"
        print(
            f"{label:<28}{summary['warm_mib']:>10.1f}{summary['end_mib']:>10.1f}"
            f"{summary['max_mib']:>10.1f}{summary['growth_after_warm_up_mib']:>12.1f}"
        )
    print(f"goal: flat after warm-up and under {memory['rss_limit_mib']:.0f} MiB per process")


def print_fanout(fanout: dict[str, Any]) -> None:
    """Print emit and end-to-end cost per event and per delivery for each system count."""
    print("\nfan-out, post_sale with one line per system")
    header = ("systems", "emit us", "events", "ms/event", "us/delivery", "deliveries/s")
    print(f"{header[0]:<10}" + "".join(f"{h:>{len(h) + 2}}" for h in header[1:]))
    for phase in fanout["phases"].values():
        print(
            f"{phase['systems']:<10}{phase['emit_us_per_event']:>9.0f}{phase['events']:>8}"
            f"{phase['ms_per_event']:>10.1f}{phase['us_per_delivery']:>13.0f}"
            f"{phase['deliveries_per_second']:>14.0f}"
        )


def print_isolation(isolation: dict[str, Any]) -> None:
    """Print the healthy system's latency in each isolation phase and the ratios."""
    print(
        f"\nisolation, {isolation['events_per_phase']} events per phase at "
        f"{isolation['rate_per_second']:.0f}/s, mitxonline emit-to-delivered"
    )
    print(f"{'phase':<46}{'p50 ms':>10}{'p99 ms':>10}{'missing':>9}")
    for name, phase in isolation["phases"].items():
        print(
            f"{name:<46}{_milliseconds(phase['p50_ms']):>10}{_milliseconds(phase['p99_ms']):>10}"
            f"{phase['healthy_missing']:>9}"
        )
    ratio = isolation["p99_ratio"]
    goal = isolation["p99_ratio_goal"]
    verdict = "met" if ratio is not None and ratio <= goal else "NOT met"
    shown = f"{ratio:.2f}x" if ratio is not None else "n/a (deliveries missing)"
    print(f"p99 hanging / baseline: {shown} (goal <= {goal}x: {verdict})")
    breaker_off = isolation["p99_ratio_breaker_off"]
    if breaker_off is not None:
        print(f"p99 hanging_breaker_off / baseline: {breaker_off:.2f}x")
    learn = isolation["phases"]["hanging"]["delivery_settings"]["learn"]
    print(
        f"learn: max_in_flight {learn['max_in_flight']}, read timeout "
        f"{learn['read_timeout_ms']} ms, circuit opens after "
        f"{learn['circuit_breaker']['failure_threshold']} failures for "
        f"{learn['circuit_breaker']['cooldown_ms']} ms; workers -p "
        f"{isolation['worker_processes']} -t {isolation['worker_threads']}"
    )


def _milliseconds(value: float | None) -> str:
    return f"{value:.0f}" if value is not None else "n/a"


if __name__ == "__main__":
    sys.exit(main())
