"""Synthetic fleets for the benchmarks: the simulator holding many jobs.

    python -m benchmarks.fleets --jobs 10000 --active 300 --latency 0.005

One target (the simulator's default account in `--region`) holding `--jobs` jobs, `--active` of
them non-terminal, every call delayed by `--latency` seconds. The simulator's URL is the first
line of stdout; it runs until interrupted or terminated.
"""

from __future__ import annotations

import argparse
import time

from exporter.simulator import DAY, Simulator, make_job


def add_synthetic_jobs(sim: Simulator, region: str, total: int, active: int) -> None:
    """`total` jobs, `active` of them non-terminal, the rest a COMPLETE/CANCELLED history."""
    now = time.time()
    for i in range(total):
        if i < active:
            status = ("RUNNING", "IDLE", "USER_PAUSED", "PAUSED")[i % 4]
            job = make_job(f"active{i:026d}", f"active-job-{i}", status,
                           job_type="SCHEDULED" if status == "IDLE" else "ONE_TIME",
                           schedule="daily", created_at=now - 3600 - i, objects_to_process=i,
                           last_run_time=now - 600,
                           paused_at=now - DAY if status == "USER_PAUSED" else None,
                           expires_at=now + 29 * DAY if status == "USER_PAUSED" else None,
                           tags={"team": f"team-{i % 7}"})
        else:
            job = make_job(f"hist{i:028d}", f"history-job-{i}",
                           "COMPLETE" if i % 5 else "CANCELLED",
                           created_at=now - DAY * (1 + i % 700),
                           last_run_time=now - DAY * (i % 700),
                           tags={"team": f"team-{i % 7}"})
        sim.put_job(region, job)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs in the one target")
    parser.add_argument("--active", type=int, default=300, help="non-terminal jobs among them")
    parser.add_argument("--region", default="eu-west-1")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added per call")
    args = parser.parse_args()
    sim = Simulator()
    add_synthetic_jobs(sim, args.region, args.jobs, min(args.active, args.jobs))
    sim.latency = args.latency
    print(sim.start(args.host, args.port), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        sim.stop()


if __name__ == "__main__":
    main()
