# SPDX-License-Identifier: BSD-3-Clause
"""A large write through vdisk-nbd into a qcow2 image, with the server
killed (SIGKILL) at a random moment: every byte written before the last
acknowledged flush reads back after a restart, and qemu-img check finds no
corruption (leaks are fine).  Several rounds on the same image, each
writing its own pattern.  NBD_KILL_BYTES (default 128M; 1G for the full
run), NBD_KILL_ROUNDS (default 4) and NBD_KILL_SEED (default 1) change the
workload.  Loopback (unix socket) only."""
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time

import nbd


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def size_arg(v):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(v[:-1]) * mult[v[-1]] if v[-1] in mult else int(v)


TOTAL = size_arg(os.environ.get("NBD_KILL_BYTES", "128M"))
ROUNDS = int(os.environ.get("NBD_KILL_ROUNDS", "4"))
SEED = int(os.environ.get("NBD_KILL_SEED", "1"))
CHUNK = 1 << 20
FLUSH_EVERY = 16 << 20
rng = random.Random(SEED)

tmp = tempfile.mkdtemp(prefix="nbd-kill.", dir=".")
img = os.path.join(tmp, "k.qcow2")
sock = os.path.abspath(os.path.join(tmp, "s.sock"))
subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", img, str(TOTAL)], check=True)


def start(*extra):
    if os.path.exists(sock):
        os.unlink(sock)
    p = subprocess.Popen([os.environ["VDISK_NBD"], "-k", sock, "-f", "qcow2", "-t", *extra,
                          img])
    end = time.monotonic() + 60
    while not os.path.exists(sock):
        if p.poll() is not None or time.monotonic() > end:
            fail("server did not start")
        time.sleep(0.02)
    return p


def pattern(rnd, off):
    return bytes([(rnd * 31 + off // CHUNK) % 251 + 1]) * CHUNK


states = 0
for rnd in range(1, ROUNDS + 1):
    srv = start()
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///?socket=" + sock)
    # a moment anywhere in the write (assuming at least 64 MiB/s)
    delay = rng.uniform(0.05, max(1.5, TOTAL / (64 << 20)))
    killer = threading.Timer(delay, lambda: os.kill(srv.pid, signal.SIGKILL))
    killer.start()
    flushed = 0
    off = 0
    try:
        while off < TOTAL:
            h.pwrite(pattern(rnd, off), off)
            off += CHUNK
            if off % FLUSH_EVERY == 0 or off == TOTAL:
                h.flush()
                flushed = off
    except nbd.Error:
        pass  # the server was killed under us
    killer.cancel()
    try:
        srv.kill()
    except ProcessLookupError:
        pass
    srv.wait()
    del h
    print("round %d: killed after %.2f s, %d MiB acknowledged as flushed, %d MiB sent"
          % (rnd, delay, flushed >> 20, off >> 20))
    # qemu-img check: no corruption (a crash may leak clusters)
    r = subprocess.run(["qemu-img", "check", img], capture_output=True, text=True)
    if r.returncode not in (0, 3) or "ERROR" in r.stdout + r.stderr:
        fail("round %d: qemu-img check: %s%s" % (rnd, r.stdout, r.stderr))
    srv = start("-r")
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///?socket=" + sock)
    for o in range(0, flushed, CHUNK):
        if h.pread(CHUNK, o) != pattern(rnd, o):
            fail("round %d: flushed data at %d MiB lost" % (rnd, o >> 20))
    h.shutdown()
    del h
    srv.terminate()
    srv.wait()
    states += 1
    # repair the leaks of the crash so that the next round starts clean
    subprocess.run(["qemu-img", "check", "-q", "-r", "leaks", img], capture_output=True)
print("ok: %d kills, flushed data intact each time" % states)
