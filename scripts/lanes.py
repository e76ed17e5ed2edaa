#!/usr/bin/env python3
"""Runs the crate's test binaries in parallel lanes (scripts/test calls it).

    scripts/lanes.py LANES [-- ARGS...]

Builds the test binaries once (`cargo test --release --no-run`), then runs
them from a queue, longest expected first, on LANES workers. The binaries
that stop, pause or alarm the shared fault broker run one after the other
in one job, so they never see each other's faults. Each binary's output is
printed whole when it ends, followed by its wall time; the last line sums up.
Exits non-zero when a binary fails.

A binary that runs longer than KEA_TEST_TIMEOUT seconds (default 900, four
times the slowest expected) is stopped: its own stack traces (gdb, when the
machine has it), the processes it started and its output so far are printed,
and it counts as failed. A hang then fails the run in minutes and says
where, instead of holding CI until its own limit. Output goes to a file, not
a pipe, so that a daemon the binary starts cannot keep the run waiting for
the pipe to close.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

TIMEOUT = float(os.environ.get("KEA_TEST_TIMEOUT", "900"))

# Binaries that fault the shared fault broker (stop_app, SIGSTOP, alarms):
# one job, in this order. The others, configs and routing among them, use the
# shared broker only (their users, vhosts and connection lists under names
# of their own) and run in parallel lanes.
FAULT_GROUP = ["faults", "broker_cluster"]
# Expected wall times in seconds on the CI machine (2 cores), for the order
# of the queue only; a binary not listed counts as 60 s.
EXPECTED = {
    "cluster": 240, "faults": 170, "configs": 80, "routing": 90,
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


def descendants(pid):
    """The pids of every process below `pid` (from /proc)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def report_hang(pid):
    """What a hung test binary is doing: its processes and its threads' stacks."""
    lines = []
    pids = [pid] + descendants(pid)
    ps = subprocess.run(["ps", "-o", "pid,ppid,etimes,args", "-p", ",".join(map(str, pids))],
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                        errors="replace")
    lines.append("processes of the hung binary:\n" + ps.stdout)
    if shutil.which("gdb"):
        try:
            bt = subprocess.run(["gdb", "-p", str(pid), "-batch", "-ex", "thread apply all bt 20"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", timeout=120)
            frames = [l[:240] for l in bt.stdout.splitlines() if l.startswith(("Thread ", "#"))]
            lines.append("its threads:\n" + "\n".join(frames) + "\n")
        except subprocess.TimeoutExpired:
            lines.append("gdb did not answer within 120 s\n")
    return "".join(lines)


def kill_tree(pid):
    """SIGKILL to `pid`, its process group and every process below it."""
    for target in [pid] + descendants(pid):
        try:
            os.kill(target, signal.SIGKILL)
        except OSError:
            pass
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass


def run_bounded(cmd, limit):
    """Runs `cmd` with its output in a file; stops it after `limit` seconds.
    Returns the exit code (124 on a timeout) and the output."""
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        note = ""
        try:
            rc = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            note = f"\nTIMED OUT after {limit:.0f} s (KEA_TEST_TIMEOUT)\n"
            try:
                note += report_hang(proc.pid)
            except Exception as e:  # the report is best effort; the kill is not
                note += f"(no report: {e})\n"
            rc = 124
        finally:
            # Also on Ctrl-C or any error here: no binary outlives its lane.
            if proc.poll() is None:
                kill_tree(proc.pid)
                proc.wait()
        log.seek(0)
        return rc, log.read() + note


def restore_fault_broker():
    """After a fault binary was stopped mid-fault, the shared fault broker may
    be paused (SIGSTOP), stopped (stop_app) or under a memory alarm: undo all
    three so that the rest of its group runs against a working broker."""
    node = os.environ.get("KEA_FAULT_NODE")
    if not node:
        return
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rabbitmq")
    pids = subprocess.run([script, "pids", node], stdout=subprocess.PIPE, text=True).stdout
    for pid in pids.split():
        try:
            os.kill(int(pid), signal.SIGCONT)
        except (OSError, ValueError):
            pass
    for ctl in (["start_app"], ["set_vm_memory_high_watermark", "0.4"]):
        subprocess.run([script, "ctl", node] + ctl, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, env=dict(os.environ, KEA_CTL_TIMEOUT="60"))


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
                try:
                    rc, out = run_bounded([bins[name]] + args, TIMEOUT)
                except Exception as e:  # counted as a failure, never skipped
                    rc, out = 1, f"lanes.py could not run it: {e!r}\n"
                if rc == 124 and name in FAULT_GROUP:
                    restore_fault_broker()
                took = time.monotonic() - start
                with lock:
                    sys.stdout.write(f"\n===== {name} ({took:.0f} s, exit {rc})\n")
                    sys.stdout.write(out)
                    sys.stdout.flush()
                    results.append((name, took, rc))

    threads = [threading.Thread(target=worker) for _ in range(lanes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failed = [n for n, _, rc in results if rc != 0]
    ran = {n for n, _, _ in results}
    failed += [f"{n} (never ran)" for n in bins if n not in ran]
    print("\nwall time per binary: " + ", ".join(f"{n} {t:.0f}s" for n, t, _ in
                                                  sorted(results, key=lambda r: -r[1])))
    if failed:
        print("failed binaries: " + ", ".join(failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    os.environ.setdefault("RUST_BACKTRACE", "1")
    main()
