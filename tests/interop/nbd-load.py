# SPDX-License-Identifier: BSD-3-Clause
"""vdisk-nbd under load and abuse, on a unix socket (loopback only):
1000 concurrent connections that finish the handshake and stay idle: the
server must hold them with at most 64 threads and 64 MiB of RSS (idle
connections share one worker pool and hold no thread), opening them must
not take much longer than the same connections take against qemu-nbd
when it is installed (at most three times its time plus two seconds, for
the noise of a loaded machine); then each reads once, and the server must still have at most
64 threads; clients that
hang up in the middle of a request header or of a write payload; clients
that send their request one byte at a time.  After each phase the server
serves a well-behaved client, and once every abusive client is gone the
server's descriptors come back to where they were.  NBD_LOAD_CONNS changes
the number of connections (default 1000)."""
import os
import resource
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REP_MAGIC = 0x3E889045565A9
REQ_MAGIC = 0x25609513
SIMPLE_REPLY = 0x67446698
OPT_GO = 7
CMD_READ, CMD_WRITE = 0, 1
CONNS = int(os.environ.get("NBD_LOAD_CONNS", "1000"))
DEADLINE_S = 120
MAX_THREADS = 64
MAX_RSS_KIB = 64 * 1024


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


# room for CONNS client sockets here and CONNS+ in the server
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
want = CONNS * 2 + 256
if hard != resource.RLIM_INFINITY and hard < want:
    print("RLIMIT_NOFILE hard limit %d < %d needed" % (hard, want))
    sys.exit(77)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))

tmp = tempfile.mkdtemp(prefix="nbd-load.", dir=".")
img = os.path.join(tmp, "disk.raw")
with open(img, "wb") as f:
    for i in range(16):
        f.write(bytes([i + 1]) * (1 << 20))
sock = os.path.abspath(os.path.join(tmp, "s.sock"))


def wait_socket(p, path):
    end = time.monotonic() + DEADLINE_S
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return s
        except OSError:
            s.close()
        if p.poll() is not None or time.monotonic() > end:
            fail("server did not start: %s" % p.args[0])
        time.sleep(0.05)


def open_idle(path, n):
    """n connections through the handshake; (sockets, seconds)."""
    t0 = time.monotonic()
    out = []
    for i in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(DEADLINE_S)
        s.connect(path)
        handshake(s)
        out.append(s)
    return out, time.monotonic() - t0



def recv_all(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError("closed after %d of %d bytes" % (len(b), n))
        b += c
    return b


def handshake(s):
    magic, opt, _flags = struct.unpack(">QQH", recv_all(s, 18))
    if magic != NBDMAGIC or opt != IHAVEOPT:
        raise ValueError("bad greeting")
    s.sendall(struct.pack(">I", 3))  # fixed newstyle, no zeroes
    data = struct.pack(">I", 0) + struct.pack(">H", 0)  # export "", no info requests
    s.sendall(struct.pack(">QII", IHAVEOPT, OPT_GO, len(data)) + data)
    while True:
        magic, _opt, rtype, ln = struct.unpack(">QIII", recv_all(s, 20))
        if magic != REP_MAGIC:
            raise ValueError("bad option reply magic")
        recv_all(s, ln)
        if rtype == 1:  # ACK
            return
        if rtype & 0x80000000:
            raise ValueError("option error %#x" % rtype)


def connect():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(DEADLINE_S)
    s.connect(sock)
    return s


def read_req(handle, off, ln):
    return struct.pack(">IHHQQI", REQ_MAGIC, 0, CMD_READ, handle, off, ln)


def check_read(s, handle, off, ln):
    magic, err, h = struct.unpack(">IIQ", recv_all(s, 16))
    if magic != SIMPLE_REPLY or err != 0 or h != handle:
        raise ValueError("bad reply magic=%#x err=%d handle=%d" % (magic, err, h))
    data = recv_all(s, ln)
    want = bytes([off // (1 << 20) + 1]) * ln
    if data != want:
        raise ValueError("bad data at %d" % off)


srv = subprocess.Popen([os.environ["VDISK_NBD"], "-k", sock, "-f", "raw", "-t", "-e", "0", img])


def status(key):
    with open("/proc/%d/status" % srv.pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def nfds():
    return len(os.listdir("/proc/%d/fd" % srv.pid))


def alive(what):
    if srv.poll() is not None:
        fail("server died after %s (exit %s)" % (what, srv.returncode))
    s = connect()
    handshake(s)
    s.sendall(read_req(7, 3 << 20, 4096))
    check_read(s, 7, 3 << 20, 4096)
    s.close()


def settle(base, what):
    """Wait until the server closed everything it opened for the clients."""
    end = time.monotonic() + DEADLINE_S
    while nfds() > base:
        if time.monotonic() > end:
            fail("%s: server still has %d descriptors (was %d)" % (what, nfds(), base))
        time.sleep(0.05)


try:
    wait_socket(srv, sock).close()
    alive("start")
    base_fds = nfds()
    rss0 = status("VmRSS")

    # --- CONNS idle connections, all through the handshake
    conns, t_open = open_idle(sock, CONNS)
    rss1 = status("VmRSS")
    threads = status("Threads")
    alive("%d idle connections" % CONNS)
    if threads > MAX_THREADS:
        fail("%d threads for %d idle connections (at most %d)" % (threads, CONNS, MAX_THREADS))
    # sanitizers' shadow memory is not the server's: under ASan only the
    # growth counts, under TSan (shadow of 4 to 8 times every byte) nothing
    rss_held = rss1 - rss0 if os.environ.get("VDISK_SANITIZED") else rss1
    if rss_held > MAX_RSS_KIB and not os.environ.get("TSAN_OPTIONS"):
        fail("RSS %d KiB with %d idle connections (at most %d)" % (rss_held, CONNS, MAX_RSS_KIB))
    # every connection reads once, all requests sent before any reply is read
    for i, s in enumerate(conns):
        s.sendall(read_req(i, (i % 16) << 20, 4096))
    for i, s in enumerate(conns):
        check_read(s, i, (i % 16) << 20, 4096)
    threads_busy = status("Threads")
    if threads_busy > MAX_THREADS:
        fail("%d threads after %d connections each read (at most %d)"
             % (threads_busy, CONNS, MAX_THREADS))
    for s in conns:
        s.close()
    conns = []
    settle(base_fds, "after %d connections" % CONNS)
    per_conn = (rss1 - rss0) / CONNS
    print("%d connections held (opened in %.2f s), server threads %d (%d after a read on "
          "each), RSS %d -> %d KiB: %.1f KiB per idle connection"
          % (CONNS, t_open, threads, threads_busy, rss0, rss1, per_conn))

    # --- the same connections against qemu-nbd, for the time to open them
    qemu_nbd = shutil.which("qemu-nbd")
    if qemu_nbd:
        qsock = os.path.abspath(os.path.join(tmp, "q.sock"))
        q = subprocess.Popen([qemu_nbd, "-k", qsock, "-f", "raw", "-t", "-e", "0", "-r", img],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_socket(q, qsock).close()
            qconns, q_open = open_idle(qsock, CONNS)
            with open("/proc/%d/status" % q.pid) as f:
                qst = dict(l.split(":", 1) for l in f)
            for s in qconns:
                s.close()
        finally:
            q.terminate()
            q.wait(30)
        print("qemu-nbd: %d connections opened in %.2f s, threads %s, RSS %s"
              % (CONNS, q_open, qst["Threads"].strip(), qst["VmRSS"].strip()))
        # loose: both run on a machine shared with other jobs; sanitized
        # builds are several times slower by design
        if not os.environ.get("VDISK_SANITIZED") and t_open > 3 * q_open + 2:
            fail("opening %d connections took %.2f s, qemu-nbd %.2f s" % (CONNS, t_open, q_open))

    # --- hang up mid-request: half a header, a write without all its payload
    for k in range(50):
        s = connect()
        handshake(s)
        if k % 2:
            s.sendall(read_req(1, 0, 4096)[:11])
        else:
            s.sendall(struct.pack(">IHHQQI", REQ_MAGIC, 0, CMD_WRITE, 1, 8 << 20, 1 << 20))
            s.sendall(b"\x77" * (1000 * k + 1))
        s.close()
    settle(base_fds, "after clients hung up mid-request")
    alive("clients hanging up mid-request")

    # --- slow clients: the request one byte at a time, a few at once
    slow = []
    for k in range(8):
        s = connect()
        handshake(s)
        slow.append(s)
    req = [read_req(100 + k, (k % 16) << 20, 65536) for k in range(8)]
    for b in range(len(req[0])):
        for k, s in enumerate(slow):
            s.sendall(req[k][b:b + 1])
        if b % 4 == 0:
            alive("slow clients (byte %d)" % b)  # others are served meanwhile
    for k, s in enumerate(slow):
        check_read(s, 100 + k, (k % 16) << 20, 65536)
        s.close()
    settle(base_fds, "after slow clients")
    alive("slow clients")
    # nothing was written: the writes above never had their payload
    with open(img, "rb") as f:
        f.seek(8 << 20)
        if f.read(1 << 20) != bytes([9]) * (1 << 20):
            fail("an incomplete write request changed the image")
    print("ok")
finally:
    srv.terminate()
    try:
        srv.wait(timeout=30)
    except subprocess.TimeoutExpired:
        srv.kill()
        srv.wait()
