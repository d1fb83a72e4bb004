#!/usr/bin/env python3
"""Fails, naming them, when processes started by this `make test` run are
still alive: they carry the run's HOOKLINE_TEST_RUN in their environment, or
run on a browser profile the tests made (Chromium may rewrite its environment
block). Waits a few seconds for processes that are exiting, then kills what
is left so a failed run leaves nothing behind either."""
import os
import signal
import sys
import time

run = os.environ.get("HOOKLINE_TEST_RUN")
if not run:
    sys.exit("leftovers: HOOKLINE_TEST_RUN is not set")
marker = b"HOOKLINE_TEST_RUN=" + run.encode()


def ancestors():
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                pid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def read(pid, name):
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read()
    except OSError:
        return b""


def leftovers():
    skip = ancestors()
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in skip:
            continue
        cmdline = read(entry, "cmdline")
        if not cmdline:  # a kernel thread or a process that just exited
            continue
        started_here = marker in read(entry, "environ").split(b"\0")
        if started_here or b".tmp-hookline-browser-" in cmdline:
            found[int(entry)] = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
    return found


deadline = time.monotonic() + 5
found = leftovers()
while found and time.monotonic() < deadline:
    time.sleep(0.2)
    found = leftovers()
if not found:
    print("leftovers: no process started by this run is still running")
    sys.exit(0)
print(f"leftovers: {len(found)} process(es) started by this run are still running:")
for pid, cmd in sorted(found.items()):
    print(f"  {pid} {cmd[:200]}")
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
sys.exit(1)
