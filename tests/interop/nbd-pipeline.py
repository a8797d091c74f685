# SPDX-License-Identifier: BSD-3-Clause
"""Pipelining against vdisk-nbd's shared worker pool.

1. A raw-socket client sends batches of big (8 MiB) and small (4 KiB)
   reads in one write and reads the replies: every reply must carry the
   right data for its cookie, and replies must come out of order (a small
   read answered before a big one sent earlier) -- a server that serves
   one request at a time per connection never does that.
2. The same client sends writes and reads cut into random pieces (headers
   and payloads split across packets), then reads everything back; then
   4 clients send thousands of reads and never read the replies, and the
   first client must still be served.
3. python3-libnbd on 4 connections at once (multi-conn), each with up to
   32 requests in flight (random writes, zeroes, reads checked on
   completion, flushes; seeded), on a qcow2 image; afterwards
   `qemu-img compare` finds the image equal to the client's model and
   `qemu-img check` finds no error.
4. Part 3 again, smaller, over TLS (PSK).
NBD_PIPELINE_SEED changes the seed (default 1), NBD_PIPELINE_OPS the
requests per connection (default 1500)."""
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import nbd

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REP_MAGIC = 0x3E889045565A9
REQ_MAGIC = 0x25609513
SIMPLE_REPLY = 0x67446698
OPT_GO = 7
CMD_READ, CMD_WRITE = 0, 1
SEED = int(os.environ.get("NBD_PIPELINE_SEED", "1"))
OPS = int(os.environ.get("NBD_PIPELINE_OPS", "1500"))
MiB = 1 << 20
procs = []


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def sh(*cmd):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode:
        fail("%s: %s" % (" ".join(cmd), r.stdout.strip()))
    return r.stdout


def start(sock, *args):
    p = subprocess.Popen([os.environ["VDISK_NBD"], "-k", sock, "-t", "-e", "0"] + list(args))
    procs.append(p)
    end = time.monotonic() + 60
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(sock)
            s.close()
            return p
        except OSError:
            s.close()
        if p.poll() is not None or time.monotonic() > end:
            fail("server did not start: %r" % (args,))
        time.sleep(0.05)


def stop(p):
    p.terminate()
    p.wait(60)
    procs.remove(p)


def recv_all(s, n):
    b = bytearray()
    while len(b) < n:
        c = s.recv(min(n - len(b), 1 << 20))
        if not c:
            raise EOFError("closed after %d of %d bytes" % (len(b), n))
        b += c
    return bytes(b)


def raw_connect(sock):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(120)
    s.connect(sock)
    magic, opt, _flags = struct.unpack(">QQH", recv_all(s, 18))
    if magic != NBDMAGIC or opt != IHAVEOPT:
        fail("bad greeting")
    s.sendall(struct.pack(">I", 3))
    data = struct.pack(">I", 0) + struct.pack(">H", 0)
    s.sendall(struct.pack(">QII", IHAVEOPT, OPT_GO, len(data)) + data)
    while True:
        magic, _opt, rtype, ln = struct.unpack(">QIII", recv_all(s, 20))
        recv_all(s, ln)
        if magic != REP_MAGIC or rtype & 0x80000000:
            fail("NBD_OPT_GO failed (%#x)" % rtype)
        if rtype == 1:
            return s


def req(cmd, cookie, off, ln):
    return struct.pack(">IHHQQI", REQ_MAGIC, 0, cmd, cookie, off, ln)


def pattern(off, ln):
    """Contents of the raw image: MiB i holds bytes i + 1."""
    out = bytearray()
    while ln:
        n = min(ln, MiB - off % MiB)
        out += bytes([off // MiB + 1]) * n
        off += n
        ln -= n
    return bytes(out)


tmp = os.path.abspath(tempfile.mkdtemp(prefix="nbd-pipeline.", dir="."))
try:
    # ------------------------------------------------ 1. out-of-order replies
    raw = os.path.join(tmp, "pattern.raw")
    with open(raw, "wb") as f:
        for i in range(64):
            f.write(bytes([i + 1]) * MiB)
    rsock = os.path.join(tmp, "r.sock")
    rsrv = start(rsock, "-f", "raw", raw)
    s = raw_connect(rsock)
    rnd = random.Random(SEED)
    reordered = 0
    for batch in range(20):
        want = {}
        out = b""
        for k in range(16):
            big_off = rnd.randrange(0, 56) * MiB + rnd.randrange(0, 256) * 4096
            small_off = rnd.randrange(0, 64 * MiB // 4096) * 4096
            want[2 * k] = (big_off, 8 * MiB)
            want[2 * k + 1] = (small_off, 4096)
            out += req(CMD_READ, 2 * k, big_off, 8 * MiB) + req(CMD_READ, 2 * k + 1, small_off, 4096)
        s.sendall(out)
        order = []
        for _ in range(len(want)):
            magic, err, cookie = struct.unpack(">IIQ", recv_all(s, 16))
            if magic != SIMPLE_REPLY or err or cookie not in want:
                fail("bad reply magic=%#x err=%d cookie=%d" % (magic, err, cookie))
            off, ln = want.pop(cookie)
            if recv_all(s, ln) != pattern(off, ln):
                fail("wrong data for cookie %d (offset %d, %d bytes)" % (cookie, off, ln))
            order.append(cookie)
        # a small read answered before a big one sent earlier
        reordered += sum(1 for i, c in enumerate(order)
                         if c % 2 and any(b % 2 == 0 and b < c for b in order[i + 1:]))
        if reordered >= 3 and batch >= 2:
            break
    print("raw client: %d replies overtook earlier requests in %d batches" % (reordered, batch + 1))
    if not reordered:
        fail("every reply came in request order: requests are not served in parallel")

    # ------------------------------------- 2. requests split at random points
    wrote = {}
    stream = b""
    cookie = 1000
    for k in range(64):
        off = k * MiB + rnd.randrange(0, 16) * 4096
        ln = rnd.choice([512, 4096, 65536, 300 * 1024])
        data = bytes(rnd.getrandbits(8) for _ in range(64)) * (ln // 64)
        wrote[cookie] = (off, data)
        stream += req(CMD_WRITE, cookie, off, ln) + data
        cookie += 1
    pos = 0
    while pos < len(stream):
        n = rnd.choice([1, 3, 11, 27, 29, 500, 4099, 70000])
        s.sendall(stream[pos:pos + n])
        pos += n
    for _ in range(len(wrote)):
        magic, err, c = struct.unpack(">IIQ", recv_all(s, 16))
        if magic != SIMPLE_REPLY or err or c not in wrote:
            fail("bad write reply magic=%#x err=%d cookie=%d" % (magic, err, c))
    stream = b"".join(req(CMD_READ, c, off, len(d)) for c, (off, d) in wrote.items())

    # The replies (up to 19 MiB) are read while the requests are still being
    # sent: a server may stop reading requests while its replies wait, so a
    # client that only sends would deadlock with it (the NBD protocol asks
    # clients to read replies while they send).
    def send_split():
        for pos in range(0, len(stream), 13):
            s.sendall(stream[pos:pos + 13])

    sender = threading.Thread(target=send_split, daemon=True)
    sender.start()
    for _ in range(len(wrote)):
        magic, err, c = struct.unpack(">IIQ", recv_all(s, 16))
        if magic != SIMPLE_REPLY or err or c not in wrote:
            fail("bad read reply magic=%#x err=%d cookie=%d" % (magic, err, c))
        off, data = wrote.pop(c)
        if recv_all(s, len(data)) != data:
            fail("split write at %d did not read back" % off)
    sender.join()
    print("raw client: 64 writes split at random points read back")

    # clients that send reads and never read the replies: each blocks a
    # few workers in send; the others are still served
    def threads_of(p):
        with open("/proc/%d/status" % p.pid) as f:
            return int([l for l in f if l.startswith("Threads:")][0].split()[1])

    hogs = []
    for k in range(4):
        h = raw_connect(rsock)
        h.setblocking(False)
        for i in range(100000):
            try:
                h.send(req(CMD_READ, i, (i % 64) * MiB, 65536))
            except BlockingIOError:
                break
        hogs.append(h)
    t0 = time.monotonic()
    s.sendall(req(CMD_READ, 7, 5 * MiB, 4096))
    magic, err, c = struct.unpack(">IIQ", recv_all(s, 16))
    if (magic, err, c) != (SIMPLE_REPLY, 0, 7) or recv_all(s, 4096) != pattern(5 * MiB, 4096):
        fail("bad reply while other clients do not read theirs")
    nthreads = threads_of(rsrv)
    print("4 clients not reading their replies: another client served in %.2f s; "
          "server threads %d" % (time.monotonic() - t0, nthreads))
    if nthreads > 4 * 16 + 64:
        fail("%d threads with 4 clients not reading" % nthreads)
    for h in hogs:
        h.close()
    s.sendall(req(CMD_READ, 8, 6 * MiB, 4096))
    magic, err, c = struct.unpack(">IIQ", recv_all(s, 16))
    if (magic, err, c) != (SIMPLE_REPLY, 0, 8) or recv_all(s, 4096) != pattern(6 * MiB, 4096):
        fail("bad reply after the clients not reading left")
    s.close()
    stop(rsrv)

    # ------------------------------------------ 3./4. libnbd, 4 connections
    def stress(sock, region, ops, seed, model, tls_psk=None):
        """One connection: ops random requests, up to 32 in flight, inside
        region (start, length); model is the bytearray of the whole image."""
        r = random.Random(seed)
        h = nbd.NBD()
        if tls_psk:
            h.set_tls(nbd.TLS_REQUIRE)
            h.set_tls_psk_file(tls_psk)
            h.set_tls_username("alice")
        h.connect_unix(sock)
        base, size = region
        inflight = {}  # cookie -> (kind, off, ln, buffer or data)
        done = 0
        issued = 0

        def overlaps(off, ln):
            return any(o < off + ln and off < o + n for _, o, n, _ in inflight.values())

        while done < ops:
            while issued < ops and len(inflight) < 32:
                ln = r.choice([512, 4096, 4096, 65536, 200 * 1024, MiB])
                off = base + r.randrange(0, (size - ln) // 512) * 512
                if overlaps(off, ln):
                    break
                kind = r.random()
                if kind < 0.4:
                    data = bytes(r.getrandbits(8) for _ in range(256)) * (ln // 256) \
                        if ln >= 256 else bytes(r.getrandbits(8) for _ in range(ln))
                    c = h.aio_pwrite(data, off)
                    inflight[c] = ("write", off, ln, data)
                elif kind < 0.5:
                    flags = 0 if r.random() < 0.5 else nbd.CMD_FLAG_NO_HOLE
                    c = h.aio_zero(ln, off, flags=flags)
                    inflight[c] = ("zero", off, ln, None)
                elif kind < 0.52:
                    c = h.aio_flush()
                    inflight[c] = ("flush", 0, 0, None)
                else:
                    buf = nbd.Buffer(ln)
                    c = h.aio_pread(buf, off)
                    inflight[c] = ("read", off, ln, buf)
                issued += 1
            h.poll(-1)
            for c in list(inflight):
                if not h.aio_command_completed(c):
                    continue
                kind, off, ln, obj = inflight.pop(c)
                done += 1
                if kind == "write":
                    model[off:off + ln] = obj
                elif kind == "zero":
                    model[off:off + ln] = bytes(ln)
                elif kind == "read":
                    got = obj.to_bytearray()
                    if got != model[off:off + ln]:
                        raise AssertionError("read at %d+%d returned wrong data" % (off, ln))
        h.flush()
        h.shutdown()

    def run_stress(img, sock, extra, conns, ops, seed, tls_psk=None):
        size = 64 * MiB
        model = bytearray(size)
        p = start(sock, "-f", "qcow2", *extra, img)
        errors = []

        def one(i):
            try:
                stress(sock, (i * size // conns, size // conns), ops, seed * 100 + i, model,
                       tls_psk)
            except Exception as e:  # reported below
                errors.append("connection %d: %s" % (i, e))

        t0 = time.monotonic()
        ts = [threading.Thread(target=one, args=(i,)) for i in range(conns)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        secs = time.monotonic() - t0
        stop(p)
        if errors:
            fail("; ".join(errors))
        ref = img + ".model"
        with open(ref, "wb") as f:
            f.write(model)
        out = sh("qemu-img", "compare", "-f", "raw", "-F", "qcow2", ref, img)
        if "identical" not in out:
            fail("image differs from the model: " + out)
        sh("qemu-img", "check", img)
        return secs

    img = os.path.join(tmp, "disk.qcow2")
    sh("qemu-img", "create", "-q", "-f", "qcow2", img, "64M")
    secs = run_stress(img, os.path.join(tmp, "q.sock"), [], 4, OPS, SEED)
    print("libnbd: 4 connections x %d requests (32 in flight each) in %.1f s; "
          "qemu-img compare: identical" % (OPS, secs))

    keys = os.path.join(tmp, "keys.psk")
    sh("psktool", "-u", "alice", "-p", keys)
    pskdir = os.path.join(tmp, "pskdir")
    os.mkdir(pskdir)
    with open(keys) as f, open(os.path.join(pskdir, "keys.psk"), "w") as g:
        g.write(f.read())
    img2 = os.path.join(tmp, "tls.qcow2")
    sh("qemu-img", "create", "-q", "-f", "qcow2", img2, "64M")
    secs = run_stress(img2, os.path.join(tmp, "t.sock"),
                      ["--object", "tls-creds-psk,id=tls0,endpoint=server,dir=" + pskdir,
                       "--tls-creds", "tls0"], 2, max(OPS // 3, 50), SEED + 1, keys)
    print("libnbd over TLS: 2 connections x %d requests in %.1f s; qemu-img compare: "
          "identical" % (max(OPS // 3, 50), secs))
    print("ok")
finally:
    for p in procs:
        p.kill()
        p.wait()
