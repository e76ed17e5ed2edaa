#!/usr/bin/env python3
"""Runs the crate's test binaries in parallel lanes (scripts/test calls it).

    scripts/lanes.py LANES [-- ARGS...]

Builds the test binaries once (`cargo test --release --no-run`), then runs
them from a queue, longest expected first, on LANES workers. The binaries
that stop, pause or alarm the shared fault broker run one after the other
in one job, so they never see each other's faults. Each binary's output is
printed whole when it ends, followed by its wall time; the last line sums up.
Exits non-zero when a binary fails.
"""

import json
import os
import subprocess
import sys
import threading
import time

# Binaries that fault the shared fault broker (stop_app, SIGSTOP, alarms):
# one job, in this order.
FAULT_GROUP = ["faults", "configs", "routing", "broker_cluster"]
# Expected wall times in seconds on the CI machine (2 cores), for the order
# of the queue only; a binary not listed counts as 60 s.
EXPECTED = {
    "cluster": 240, "faults": 150, "configs": 120, "routing": 90,
    "outbox": 120, "paused_writes": 120, "fallback": 100, "limits": 90,
    "hardening": 60, "commands": 60, "values": 90, "broker_cluster": 180,
}


def binaries():
    out = subprocess.run(
        ["cargo", "test", "--release", "--no-run", "--message-format=json"],
        stdout=subprocess.PIPE, check=True, text=True).stdout
    found = []
    for line in out.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("reason") == "compiler-artifact" and msg.get("executable") \
                and msg.get("profile", {}).get("test"):
            kinds = msg["target"]["kind"]
            name = "unit" if "lib" in kinds or "cdylib" in kinds else msg["target"]["name"]
            found.append((name, msg["executable"]))
    return found


def main():
    lanes = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    args = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    bins = dict(binaries())
    jobs = [[b for b in FAULT_GROUP if b in bins]]
    jobs += [[b] for b in sorted(bins) if b not in FAULT_GROUP]
    jobs = [j for j in jobs if j]
    jobs.sort(key=lambda j: -sum(EXPECTED.get(b, 60) for b in j))
    lock = threading.Lock()
    results = []

    def worker():
        while True:
            with lock:
                if not jobs:
                    return
                job = jobs.pop(0)
            for name in job:
                start = time.monotonic()
                proc = subprocess.run([bins[name]] + args, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, errors="replace")
                took = time.monotonic() - start
                with lock:
                    sys.stdout.write(f"\n===== {name} ({took:.0f} s, exit {proc.returncode})\n")
                    sys.stdout.write(proc.stdout)
                    sys.stdout.flush()
                    results.append((name, took, proc.returncode))

    threads = [threading.Thread(target=worker) for _ in range(lanes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failed = [n for n, _, rc in results if rc != 0]
    print("\nwall time per binary: " + ", ".join(f"{n} {t:.0f}s" for n, t, _ in
                                                  sorted(results, key=lambda r: -r[1])))
    if failed:
        print("failed binaries: " + ", ".join(failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    os.environ.setdefault("RUST_BACKTRACE", "1")
    main()
