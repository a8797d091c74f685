# SPDX-License-Identifier: BSD-3-Clause
"""Hostile clients against vdisk-nbd: junk, truncated handshakes, option
lengths near 4 GiB, bad magics, handshakes that never finish, dozens of
idle connections, oversized payloads, floods of requests whose replies
are never read.  After each, the server must still serve a well-behaved
client (python3-libnbd), and its memory must stay bounded."""
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time

import nbd

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REQ_MAGIC = 0x25609513
OPT_GO, OPT_STRUCTURED, OPT_EXTENDED = 7, 8, 11
LIMIT_S = 2


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


tmp = tempfile.mkdtemp(prefix="nbd-hostile.", dir=".")
img = os.path.join(tmp, "disk.raw")
with open(img, "wb") as f:
    f.write(b"\x5a" * (1 << 20))
    f.truncate(16 << 20)
sock = os.path.abspath(os.path.join(tmp, "s.sock"))
srv = subprocess.Popen([os.environ["VDISK_NBD"], "-k", sock, "-f", "raw", "-t", "-e", "0",
                        "--handshake-limit", str(LIMIT_S), img])
try:
    for _ in range(200):
        if os.path.exists(sock):
            break
        time.sleep(0.05)
    else:
        fail("server did not start")

    def alive(what):
        """A well-behaved client still gets served."""
        if srv.poll() is not None:
            fail("server died after %s (exit %s)" % (what, srv.returncode))
        h = nbd.NBD()
        h.connect_uri("nbd+unix:///?socket=" + sock)
        if h.pread(4096, 0) != b"\x5a" * 4096:
            fail("bad data after " + what)
        h.shutdown()

    def rss_kib():
        with open("/proc/%d/status" % srv.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def conn():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(sock)
        s.settimeout(LIMIT_S + 5)
        return s

    def recv_all(s, n):
        b = b""
        while len(b) < n:
            c = s.recv(n - len(b))
            if not c:
                raise EOFError("closed after %d of %d bytes" % (len(b), n))
            b += c
        return b

    def closed_by_server(s, what, within=LIMIT_S + 4):
        """The server must hang up on s (EOF or reset) within the limit."""
        s.settimeout(within)
        try:
            while s.recv(65536):
                pass
        except socket.timeout:
            fail("server kept the connection open: " + what)
        except ConnectionResetError:
            pass
        s.close()

    def greeting(s, flags=1):
        g = recv_all(s, 18)
        magic, opt, hflags = struct.unpack(">QQH", g)
        if magic != NBDMAGIC or opt != IHAVEOPT or not (hflags & 1):
            fail("bad greeting %r" % g)
        s.sendall(struct.pack(">I", flags))

    def option(s, opt, data=b""):
        s.sendall(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)
        replies = []
        while True:
            magic, o, typ, ln = struct.unpack(">QIII", recv_all(s, 20))
            replies.append((typ, recv_all(s, ln)))
            if typ == 1 or typ & 0x80000000:
                return replies

    def go(s, name=b""):
        r = option(s, OPT_GO, struct.pack(">I", len(name)) + name + struct.pack(">H", 0))
        if r[-1][0] != 1:
            fail("NBD_OPT_GO failed: %r" % r)

    alive("start")
    base_rss = rss_kib()

    # junk instead of client flags
    s = conn()
    recv_all(s, 18)
    s.sendall(os.urandom(4096))
    closed_by_server(s, "junk")
    alive("junk")

    # junk before even reading the greeting
    s = conn()
    s.sendall(b"GET / HTTP/1.0\r\n\r\n" * 100)
    closed_by_server(s, "http junk")
    alive("http junk")

    # truncated handshakes: hang up at every stage
    for cut in range(0, 20):
        s = conn()
        greeting(s)
        hdr = struct.pack(">QII", IHAVEOPT, OPT_GO, 10) + b"\x00\x00\x00\x04abcd"
        s.sendall(hdr[:cut])
        s.close()
    alive("truncated handshakes")

    # option lengths near 4 GiB: the server must not wait for (or allocate) them
    for opt in (OPT_GO, 3, 9, 10, 0xDEAD):
        s = conn()
        greeting(s)
        s.sendall(struct.pack(">QII", IHAVEOPT, opt, 0xFFFFFFF0) + b"x" * 100)
        closed_by_server(s, "option length near 4 GiB", within=2)
    alive("huge option lengths")

    # a valid big option length (1 MiB) that never arrives: the handshake
    # limit drops it
    s = conn()
    greeting(s)
    s.sendall(struct.pack(">QII", IHAVEOPT, 0xDEAD, 1 << 20) + b"y" * 1000)
    t0 = time.time()
    closed_by_server(s, "stalled option data")
    if time.time() - t0 > LIMIT_S + 3:
        fail("stalled option kept too long")

    # bad option magic, unknown client flags
    s = conn()
    greeting(s)
    s.sendall(struct.pack(">QII", 0x1122334455667788, OPT_GO, 0))
    closed_by_server(s, "bad option magic", within=2)
    s = conn()
    greeting(s, flags=0xFFFF)
    closed_by_server(s, "unknown client flags", within=2)
    alive("bad magics")

    # malformed options get errors, the connection stays usable
    s = conn()
    greeting(s)
    r = option(s, OPT_GO, struct.pack(">I", 0xFFFF) + b"ab")
    if r[-1][0] != 0x80000003:
        fail("malformed NBD_OPT_GO: expected NBD_REP_ERR_INVALID, got %r" % r)
    r = option(s, 9, struct.pack(">II", 0, 0x7FFFFFFF))
    if r[-1][0] != 0x80000003:
        fail("malformed LIST_META_CONTEXT: expected NBD_REP_ERR_INVALID, got %r" % r)
    r = option(s, 1234, b"z" * 5000)
    if r[-1][0] != 0x80000001:
        fail("unknown option: expected NBD_REP_ERR_UNSUP, got %r" % r)
    r = option(s, OPT_GO, struct.pack(">I", 3) + b"nop" + struct.pack(">H", 0))
    if r[-1][0] != 0x80000006:
        fail("unknown export: expected NBD_REP_ERR_UNKNOWN, got %r" % r)
    go(s)
    # transmission: a request with a bad magic is a hard disconnect
    s.sendall(struct.pack(">IHHQQI", 0x12345678, 0, 0, 1, 0, 512))
    closed_by_server(s, "bad request magic", within=2)
    alive("malformed options")

    # a write whose payload is far above the maximum: hang up, do not allocate
    s = conn()
    greeting(s)
    go(s)
    s.sendall(struct.pack(">IHHQQI", REQ_MAGIC, 0, 1, 1, 0, 0xFFFFFF00))
    closed_by_server(s, "oversized write payload", within=2)
    alive("oversized payload")

    # unknown command and unknown flags: an error reply, not a disconnect
    s = conn()
    greeting(s)
    go(s)
    s.sendall(struct.pack(">IHHQQI", REQ_MAGIC, 0, 77, 9, 0, 512))
    magic, err, cookie = struct.unpack(">IIQ", recv_all(s, 16))
    if (magic, err, cookie) != (0x67446698, 22, 9):
        fail("unknown command: got %x %d %d" % (magic, err, cookie))
    s.sendall(struct.pack(">IHHQQI", REQ_MAGIC, 0x4000, 0, 10, 0, 512))
    magic, err, cookie = struct.unpack(">IIQ", recv_all(s, 16))
    if (err, cookie) != (22, 10):
        fail("unknown flags: got %d %d" % (err, cookie))
    s.sendall(struct.pack(">IHHQQI", REQ_MAGIC, 0, 0, 11, 0, 512))
    magic, err, cookie = struct.unpack(">IIQ", recv_all(s, 16))
    if err or recv_all(s, 512) != b"\x5a" * 512:
        fail("read after errors failed")
    s.close()

    # a flood of 32 MiB reads whose replies are never read: bounded memory
    s = conn()
    greeting(s)
    go(s)
    s.setblocking(False)
    sent = 0
    for i in range(64):
        try:
            s.send(struct.pack(">IHHQQI", REQ_MAGIC, 0, 0, i, 0, 16 << 20))
            sent += 1
        except BlockingIOError:
            break
    time.sleep(1)
    grow = rss_kib() - base_rss
    if grow > 200 * 1024:
        fail("server memory grew by %d KiB with unread replies" % grow)
    s.close()
    alive("flood")

    # dozens of idle connections: others are still served, and the
    # handshake limit drops the idle ones
    idle = [conn() for _ in range(40)]
    alive("40 idle connections")
    t0 = time.time()
    for s in idle:
        closed_by_server(s, "idle connection")
    if time.time() - t0 > LIMIT_S + 4:
        fail("idle connections were not dropped by the handshake limit")
    alive("idle connections")

    # clients that negotiated and then went quiet are not dropped
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///?socket=" + sock)
    time.sleep(LIMIT_S + 0.5)
    if h.pread(512, 0) != b"\x5a" * 512:
        fail("quiet client lost its connection")
    h.shutdown()

    grow = rss_kib() - base_rss
    if grow > 100 * 1024:
        fail("server memory grew by %d KiB" % grow)
    if srv.poll() is not None:
        fail("server exited")
finally:
    srv.terminate()
    srv.wait(10)
print("ok")
