# SPDX-License-Identifier: BSD-3-Clause
"""python3-libnbd with strict mode off sends what a careful client never
would: oversize, unaligned, out of range, unknown flags, writes to a
read-only export, block status without contexts.  vdisk-nbd must answer
each with an error (or serve it correctly) and keep the connection."""
import errno
import os
import subprocess
import sys
import tempfile
import time

import nbd


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


tmp = tempfile.mkdtemp(prefix="nbd-strict.", dir=".")
img = os.path.join(tmp, "disk.raw")
data = bytes((i * 7) & 0xFF for i in range(1 << 20))
with open(img, "wb") as f:
    f.write(data)
    f.truncate(8 << 20)
SIZE = 8 << 20
procs = []


def start(name, *args):
    """A server on its own copy of the image (each holds its image's lock)."""
    sock = os.path.abspath(os.path.join(tmp, name))
    copy = os.path.join(tmp, name + ".raw")
    with open(img, "rb") as src, open(copy, "wb") as dst:
        dst.write(src.read())
    p = subprocess.Popen([os.environ["VDISK_NBD"], "-k", sock, "-f", "raw", "-t", "-e", "0"] +
                         list(args) + [copy])
    procs.append(p)
    for _ in range(200):
        if os.path.exists(sock):
            return "nbd+unix:///?socket=" + sock
        time.sleep(0.05)
    fail("server did not start")


def expect_err(what, fn, want):
    try:
        fn()
    except nbd.Error as e:
        got = e.errno
        # python3-libnbd reports the errno by name ("EINVAL")
        if isinstance(got, str):
            got = getattr(errno, got, None)
        if want is not None and got != want:
            fail("%s: errno %s (%s), want %s" % (what, e.errno, e.string, want))
        return
    fail("%s: succeeded" % what)


def check_alive(h, what):
    if h.pread(4096, 4096) != data[4096:8192]:
        fail("connection broken after " + what)


try:
    uri = start("rw.sock")
    h = nbd.NBD()
    h.set_strict_mode(0)
    h.connect_uri(uri)
    if h.get_size() != SIZE:
        fail("size %d" % h.get_size())

    expect_err("oversize read", lambda: h.pread(64 << 20, 0), errno.EINVAL)
    check_alive(h, "oversize read")
    expect_err("read past the end", lambda: h.pread(8192, SIZE - 4096), errno.EINVAL)
    check_alive(h, "read past the end")
    expect_err("read at a huge offset", lambda: h.pread(512, 1 << 62), errno.EINVAL)
    check_alive(h, "huge offset")
    expect_err("write past the end", lambda: h.pwrite(b"x" * 8192, SIZE - 4096), errno.ENOSPC)
    check_alive(h, "write past the end")
    expect_err("trim past the end", lambda: h.trim(8192, SIZE - 4096), errno.EINVAL)
    expect_err("zero past the end", lambda: h.zero(8192, SIZE - 4096), errno.ENOSPC)
    expect_err("cache past the end", lambda: h.cache(8192, SIZE - 4096), errno.EINVAL)
    check_alive(h, "range errors")

    # unknown and misplaced flags
    expect_err("read with NO_HOLE", lambda: h.pread(512, 0, nbd.CMD_FLAG_NO_HOLE), errno.EINVAL)
    expect_err("read with bit 12", lambda: h.pread(512, 0, 1 << 12), errno.EINVAL)
    expect_err("flush with REQ_ONE", lambda: h.flush(nbd.CMD_FLAG_REQ_ONE), errno.EINVAL)
    expect_err("write with DF", lambda: h.pwrite(b"y" * 512, 0, nbd.CMD_FLAG_DF), errno.EINVAL)
    check_alive(h, "bad flags")

    # block status without a negotiated context
    expect_err("block status without context",
               lambda: h.block_status(4096, 0, lambda *a: 0), errno.EINVAL)
    check_alive(h, "block status")

    # unaligned requests are served correctly (the core does read-modify-write)
    if h.pread(3, 4097) != data[4097:4100]:
        fail("unaligned read")
    h.pwrite(b"abc", 100001)
    if h.pread(5, 100000) != data[100000:100001] + b"abc" + data[100004:100005]:
        fail("unaligned write")
    # zero-length requests do no harm
    h.pwrite(b"", 0)
    check_alive(h, "unaligned")
    # FAST_ZERO and NO_HOLE are valid
    h.zero(65536, 1 << 20, nbd.CMD_FLAG_NO_HOLE)
    try:
        h.zero(65536, 2 << 20, nbd.CMD_FLAG_FAST_ZERO)
    except nbd.Error as e:
        if e.errno not in (errno.ENOTSUP, "ENOTSUP"):
            fail("fast zero: %s" % e)
    if h.pread(4096, 1 << 20) != b"\0" * 4096:
        fail("zeroed range does not read as zero")
    h.flush()
    h.shutdown()

    # read-only export
    uri = start("ro.sock", "-r")
    h = nbd.NBD()
    h.set_strict_mode(0)
    h.add_meta_context("base:allocation")
    h.connect_uri(uri)
    if not h.is_read_only():
        fail("-r export is not read-only")
    expect_err("write to read-only", lambda: h.pwrite(b"z" * 512, 0), errno.EPERM)
    expect_err("zero on read-only", lambda: h.zero(512, 0), errno.EPERM)
    expect_err("trim on read-only", lambda: h.trim(512, 0), errno.EPERM)
    check_alive(h, "read-only writes")
    seen = []
    h.block_status(SIZE, 0, lambda ctx, off, ents, err: seen.extend(ents) or 0)
    if not seen or sum(seen[0::2]) < 4096:
        fail("block status on read-only export: %r" % seen)
    # REQ_ONE: exactly one extent, never longer than asked
    seen = []
    h.block_status(1000, 0, lambda ctx, off, ents, err: seen.extend(ents) or 0,
                   nbd.CMD_FLAG_REQ_ONE)
    if len(seen) != 2 or seen[0] > 1000:
        fail("REQ_ONE answer %r" % seen)
    h.shutdown()

    # O_DIRECT: the minimum block size is advertised to clients that ask
    uri = start("direct.sock", "--cache=none")
    h = nbd.NBD()
    h.set_strict_mode(0)
    h.connect_uri(uri)
    mn = h.get_block_size(nbd.SIZE_MINIMUM)
    if mn not in (1, 512, 4096):
        fail("minimum block size %d" % mn)
    if h.pread(7, 3) != data[3:10]:
        fail("unaligned read with O_DIRECT")
    h.shutdown()
finally:
    for p in procs:
        p.terminate()
        p.wait(10)
print("ok")
