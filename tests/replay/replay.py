# SPDX-License-Identifier: BSD-3-Clause
"""Power-loss replay of a format driver's writes.

A seeded random guest workload runs in one vdisk-io session over
  driver=FMT,file.driver=blklogwrites,file.file.filename=IMG,file.log.filename=LOG
so every write, zero write, discard and flush the driver sends to its file
is in LOG (dm-log-writes format, tests/replay/dmlog.py).  After each guest
command the log is scanned, so we know which log entries each guest
command produced.  Then the image is rebuilt from the base image as a disk
could hold it after a power cut:
  - at every flush entry: every entry up to it (sampled when there are more
    flush entries than the budget);
  - at seeded random points between two flushes: everything up to the last
    flush, plus a random subset of the later entries applied in random order
    (a disk cache may drop or reorder unflushed writes).
Each state must open in qemu-img and vdisk, `qemu-img check` and
`vdisk check` must find no corruption (leaks and the dirty flag are fine;
a dirty lazy-refcounts image is checked after the repair QEMU does when it
opens one), and every sector must hold what the guest model allows: the
value it had at the last guest flush that completed within the state, or a
value a later guest write gave it.

Usage (library): run_variant(name, fmt, create_opts, workload_kind, seed,
budget) -> dict of counts; failures raise ReplayFailure.  Encrypted
formats (luks, qcow2 with encrypt.format=luks) pass enc=KEYOPT (the open
option naming the secret, "key-secret" or "encrypt.key-secret"): every
tool then gets --object secret,id=rsec,... and --image-opts with it, and
create_opts should name the secret too (KEYOPT=rsec).
"""
import os
import json
import random
import shutil
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dmlog  # noqa: E402

VDISK = os.environ.get("VDISK", "build/vdisk")
VDISK_IO = os.environ.get("VDISK_IO", "build/vdisk-io")
SECTOR = 512
# the passphrase of encrypted variants (enc=...): the secret "rsec"
SECRET_OBJ = "secret,id=rsec,data=replay-passphrase"


class ReplayFailure(Exception):
    pass


def run(cmd, check=False, **kw):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)
    if check and r.returncode:
        raise ReplayFailure("%s: exit %d: %s" % (" ".join(cmd), r.returncode,
                                                 r.stdout.decode(errors="replace")[-800:]))
    return r


class Session:
    """An interactive vdisk-io session: one command at a time."""

    def __init__(self, args):
        self.p = subprocess.Popen([VDISK_IO] + args, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.until_prompt()

    def until_prompt(self):
        buf = b""
        while not buf.endswith(b"vdisk-io> "):
            c = os.read(self.p.stdout.fileno(), 65536)
            if not c:
                raise ReplayFailure("vdisk-io ended: %s" % buf.decode(errors="replace")[-500:])
            buf += c
        return buf.decode(errors="replace")

    def cmd(self, line):
        self.p.stdin.write((line + "\n").encode())
        self.p.stdin.flush()
        out = self.until_prompt()
        if "failed" in out or "error" in out.lower():
            raise ReplayFailure("vdisk-io %r: %s" % (line, out[-500:]))
        return out

    def close(self):
        self.p.stdin.write(b"quit\n")
        self.p.stdin.flush()
        rest = self.p.stdout.read()
        rc = self.p.wait()
        if rc:
            raise ReplayFailure("vdisk-io exit %d: %s" % (rc, rest.decode(errors="replace")))


class EntryCounter:
    """Counts the entries of a growing log, reading only what is new."""

    def __init__(self, path, sector_size=512):
        self.path, self.s = path, sector_size
        self.cur, self.n = 1, 0

    def count(self):
        with open(self.path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            while (self.cur + 1) * self.s <= size:
                f.seek(self.cur * self.s)
                sector, nr, flags, _ = struct.unpack("<QQQQ", f.read(32))
                if sector == 0 and nr == 0 and flags == 0:
                    break
                nxt = self.cur + 1 + (0 if flags & dmlog.DISCARD else nr)
                if nxt * self.s > size:
                    break
                self.cur = nxt
                self.n += 1
        return self.n


def make_workload(kind, rng, size, n_ops):
    """Guest commands: ("write", off, len, pat) / ("zero", off, len, unmap) /
    ("cwrite", off, len, pat) / ("flush",).  Offsets/lengths in bytes,
    sector aligned.  Writes reuse a few hot regions so that overwrites,
    COW of partial clusters and rewrites of freed space happen often."""
    ops = []
    pat = 0
    hot = [rng.randrange(0, size // 65536) * 65536 for _ in range(6)]
    touched = set()  # 64k clusters written: compressed writes need fresh ones
    for i in range(n_ops):
        r = rng.random()
        if r < 0.15:
            ops.append(("flush",))
            continue
        if rng.random() < 0.6:
            base = rng.choice(hot) + rng.randrange(0, 128) * SECTOR
        else:
            base = rng.randrange(0, size // SECTOR) * SECTOR
        ln = rng.choice([1, 1, 2, 7, 8, 64, 128, 200]) * SECTOR
        ln = min(ln, size - base)
        if ln <= 0:
            continue
        pat = pat % 254 + 1
        if kind == "compressed" and r < 0.35:
            # compressed writes take whole clusters (64k) never written
            # (QEMU's and vdisk's qcow2 refuse to overwrite with them)
            free = [c for c in range(size // 65536) if c not in touched]
            if not free:
                continue
            c = rng.choice(free)
            touched.add(c)
            ops.append(("cwrite", c * 65536, 65536, pat))
            continue
        for c in range(base // 65536, (base + ln - 1) // 65536 + 1):
            touched.add(c)
        if kind == "zero" and r < 0.35:
            ops.append(("zero", base, ln, rng.random() < 0.5))
        else:
            ops.append(("write", base, ln, pat))
    ops.append(("flush",))
    return ops


def img_args(fmt, img, enc):
    """The tool arguments that open img: -f FMT IMG, or for an encrypted
    format (enc = its key option) the secret and --image-opts."""
    if not enc:
        return ["-f", fmt, img]
    return ["--object", SECRET_OBJ, "--image-opts",
            "driver=%s,%s=rsec,file.filename=%s" % (fmt, enc, img)]


def op_line(op):
    if op[0] == "write":
        return "write -P 0x%x %d %d" % (op[3], op[1], op[2])
    if op[0] == "cwrite":
        return "write -c -P 0x%x %d %d" % (op[3], op[1], op[2])
    if op[0] == "zero":
        return "write -z %s%d %d" % ("-u " if op[3] else "", op[1], op[2])
    return "flush"


def raw_of(tool, fmt, img, out, enc=None):
    prog = "qemu-img" if tool == "qemu" else VDISK
    run([prog, "convert", "-U"] + img_args(fmt, img, enc) + ["-O", "raw", out], check=True)
    with open(out, "rb") as f:
        return f.read()


def header_dirty_qcow2(path):
    with open(path, "rb") as f:
        h = f.read(104)
    if len(h) < 80 or h[:4] != b"QFI\xfb" or struct.unpack(">I", h[4:8])[0] < 3:
        return False
    return bool(struct.unpack(">Q", h[72:80])[0] & 1)


def header_dirty_parallels(path):
    with open(path, "rb") as f:
        h = f.read(48)
    return len(h) == 48 and h[44:48] == b"Ynot"


def check_json_corruptions(tool, fmt, img):
    r = run([tool, "check", "-U", "--output=json", "-f", fmt, img])
    out = r.stdout.decode(errors="replace")
    try:
        return json.loads(out[out.index("{"):]).get("corruptions", 0), out
    except ValueError:
        return None, out


def check_state(fmt, img, work, allowed_at, tag, enc=None):
    """allowed_at: (expected, ambiguous): the image content at the last
    completed guest flush, and for sectors written after it the set of
    values later writes gave them (either is fine there)."""
    target = img
    if fmt == "qcow2" and header_dirty_qcow2(img):
        # QEMU repairs a dirty lazy-refcounts image when it opens it
        target = os.path.join(work, "repaired.img")
        shutil.copyfile(img, target)
        r = run(["qemu-img", "check", "-q", "-r", "all"] + img_args(fmt, target, enc))
        if r.returncode not in (0, 3):
            raise ReplayFailure("%s: qemu-img check -r all exit %d: %s" %
                                (tag, r.returncode, r.stdout.decode(errors="replace")[-800:]))
    if fmt == "vhdx" and run(["qemu-img", "info", "-U", "-f", fmt, img]).returncode:
        # a pending metadata log: QEMU replays it on a read-write open
        # (check -r all); vdisk's replay of another copy must be identical
        target = os.path.join(work, "replayed.img")
        shutil.copyfile(img, target)
        mine = os.path.join(work, "replayed-vdisk.img")
        shutil.copyfile(img, mine)
        for tool, path in (("qemu-img", target), (VDISK, mine)):
            r = run([tool, "check", "-q", "-r", "all", "-f", fmt, path])
            if r.returncode not in (0, 3):
                raise ReplayFailure("%s: %s check -r all exit %d: %s" %
                                    (tag, tool, r.returncode,
                                     r.stdout.decode(errors="replace")[-800:]))
        r = run(["qemu-img", "compare", "-f", fmt, "-F", fmt, target, mine])
        if r.returncode:
            raise ReplayFailure("%s: vdisk's log replay differs from QEMU's: %s" %
                                (tag, r.stdout.decode(errors="replace")[-800:]))
        img = target
    if fmt == "parallels" and header_dirty_parallels(img):
        # a parallels image cut while open has its in-use flag set, which
        # both checks count as one corruption: nothing else may be wrong
        for tool in ("qemu-img", VDISK):
            n, out = check_json_corruptions(tool, fmt, img)
            if n != 1:
                raise ReplayFailure("%s: %s check of the unclean image: %s corruptions: %s"
                                    % (tag, tool, n, out[-800:]))
        target = None
    r = run(["qemu-img", "check", "-U"] + img_args(fmt, target, enc)) if target else None
    # 63: qemu-img has no check for this format (vpc): vdisk's below
    if r and r.returncode not in (0, 3, 63):
        raise ReplayFailure("%s: qemu-img check exit %d: %s" %
                            (tag, r.returncode, r.stdout.decode(errors="replace")[-800:]))
    r = run([VDISK, "check", "-U"] + img_args(fmt, target, enc)) if target else None
    if r and r.returncode not in (0, 3, 63):
        raise ReplayFailure("%s: vdisk check exit %d: %s" %
                            (tag, r.returncode, r.stdout.decode(errors="replace")[-800:]))
    expected, ambiguous = allowed_at
    for tool in ("qemu", "vdisk"):
        data = raw_of(tool, fmt, img, os.path.join(work, "state.raw"), enc)
        n = min(len(data), len(expected))
        step = 128 * SECTOR
        bad = []
        for o in range(0, n, step):
            if data[o:o + step] == expected[o:o + step]:
                continue
            for sec in range(o // SECTOR, min(n, o + step) // SECTOR):
                a = sec * SECTOR
                chunk = data[a:a + SECTOR]
                if chunk == expected[a:a + SECTOR]:
                    continue
                vals = ambiguous.get(sec)
                if vals and any(chunk == bytes([v]) * SECTOR for v in vals):
                    continue
                bad.append("sector %d (offset %d): bytes %s, expected %s%s" %
                           (sec, a, sorted(set(chunk))[:4], sorted(set(expected[a:a + SECTOR]))[:4],
                            " or one of %s" % sorted(vals) if vals else ""))
                if len(bad) >= 4:
                    break
            if len(bad) >= 4:
                break
        if bad:
            raise ReplayFailure("%s: %s reads data the guest did not have: %s" %
                                (tag, tool, "; ".join(bad)))


def apply_entry(f, log, e, rng):
    if e.kind() == "write":
        f.seek(e.offset)
        f.write(log.data(e))
    elif e.kind() == "discard":
        # a discarded range holds either its old bytes or zeroes
        if rng.random() < 0.5:
            f.seek(e.offset)
            f.write(b"\0" * e.length)


def run_variant(name, fmt, create_opts, kind, seed, budget, size=16 << 20, n_ops=120,
                prepare=None, workdir=None, ops=None, singles=False, enc=None):
    rng = random.Random("%s-%d" % (name, seed))
    # fsync-heavy sessions and many image copies: tmpfs when there is one
    # (the log's content does not depend on where it lives)
    if not workdir:
        parent = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) \
            else os.getcwd()
        workdir = os.path.join(parent, "vdisk-replay-%d-%s" % (os.getpid(), name))
    work = workdir
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    try:
        return _run_variant(name, fmt, create_opts, kind, seed, budget, size, n_ops,
                            prepare, work, ops, rng, singles, enc)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run_variant(name, fmt, create_opts, kind, seed, budget, size, n_ops, prepare, work,
                 ops, rng, singles, enc=None):
    base = os.path.join(work, "base.img")
    img = os.path.join(work, "img")
    logp = os.path.join(work, "log")
    copts = ["-o", create_opts] if create_opts else []
    objs = ["--object", SECRET_OBJ] if enc else []
    run([VDISK, "create", "-q", "-f", fmt] + objs + copts + [base, str(size)], check=True)
    if prepare:
        prepare(base)
    shutil.copyfile(base, img)
    open(logp, "wb").close()
    base_raw = raw_of("qemu", fmt, base, os.path.join(work, "base.raw"), enc)

    if ops is None:
        ops = make_workload(kind, rng, size, n_ops)
    # guest model: per sector, the value at each point
    model = {}            # sector -> current value (session writes only)
    history = []          # (entries_after, op)
    key = "%s=rsec," % enc if enc else ""
    sess = Session(["-t", "writeback"] + objs + ["--image-opts",
                    "driver=%s,%sfile.driver=blklogwrites,file.file.filename=%s,"
                    "file.log.filename=%s" % (fmt, key, img, logp)])
    counter = EntryCounter(logp)
    for op in ops:
        sess.cmd(op_line(op))
        history.append((counter.count(), op))
    sess.close()
    log = dmlog.Log(logp, scan=True)
    entries = log.entries
    # the guest flushes, by the log position where they had completed
    guest_flush_at = [(n, i) for i, (n, op) in enumerate(history) if op[0] == "flush"]

    def allowed_for(durable_end):
        """(expected, ambiguous) for a state whose entries [0, durable_end)
        are all on disk (plus possibly later ones)."""
        g = -1
        for n, i in guest_flush_at:
            if n <= durable_end:
                g = i
        expected = bytearray(base_raw)
        ambiguous = {}
        for i, (n, op) in enumerate(history):
            if op[0] == "flush":
                continue
            v = op[3] if op[0] in ("write", "cwrite") else 0
            if i <= g:
                expected[op[1]:op[1] + op[2]] = bytes([v]) * op[2]
            else:
                for sec in range(op[1] // SECTOR, (op[1] + op[2]) // SECTOR):
                    ambiguous.setdefault(sec, set()).add(v)
        return bytes(expected), ambiguous

    flush_idx = [e.index for e in entries if e.kind() == "flush"]
    states = []
    # at flushes (every one, or a sample within the budget)
    fl = flush_idx
    if len(fl) > budget // 2:
        fl = sorted(rng.sample(fl, budget // 2 - 1)) + [fl[-1]]
    for fi in fl:
        states.append(("flush@%d" % fi, fi + 1, []))
    # random points between flushes, with dropped / reordered writes
    bounds = [0] + [i + 1 for i in flush_idx] + [len(entries)]
    gaps = [(a, b) for a, b in zip(bounds, bounds[1:]) if b - a > 1]
    n_rand = max(0, budget - len(states))
    for k in range(n_rand):
        if not gaps:
            break
        a, b = rng.choice(gaps)
        cut = rng.randrange(a + 1, b + 1)
        extra = [i for i in range(a, cut) if rng.random() < 0.6]
        rng.shuffle(extra)
        states.append(("cut@%d+%d/%d" % (a, len(extra), cut - a), a, extra))

    if singles:
        # every unflushed entry alone on top of the last flush: the write a
        # cache kept while it dropped everything else
        for a, b in gaps:
            for i in range(a, b):
                if entries[i].kind() != "flush":
                    states.append(("single@%d+%d" % (a, i), a, [i]))

    cur = os.path.join(work, "durable.img")
    shutil.copyfile(base, cur)
    applied = 0
    states.sort(key=lambda s: s[1])
    stimg = os.path.join(work, "state.img")
    checked = 0
    for tag, durable_end, extra in states:
        with open(cur, "r+b") as f:
            while applied < durable_end:
                apply_entry(f, log, entries[applied], rng)
                applied += 1
        shutil.copyfile(cur, stimg)
        if extra:
            with open(stimg, "r+b") as f:
                for i in extra:
                    apply_entry(f, log, entries[i], rng)
        check_state(fmt, stimg, work, allowed_for(durable_end),
                    "%s seed %d state %s" % (name, seed, tag), enc)
        checked += 1
    log.close()
    return {"states": checked, "entries": len(entries), "flushes": len(flush_idx),
            "guest_ops": len(ops)}
