# SPDX-License-Identifier: BSD-3-Clause
"""Error-injection matrix in the style of qemu-iotest 026.

For every format (qcow2, qed, vdi, vpc, parallels, vmdk, vhdx), every blkdebug event, errno EIO
and ENOSPC, once=on and once=off: a write workload runs through vdisk-io
over blkdebug:CONFIG:IMAGE.  Then:
  - every request that failed reported the injected errno;
  - after the image is closed, `qemu-img check` finds no corruption
    (leaks are fine) and `vdisk check` agrees; a vhdx image whose metadata
    write failed after its log entry was written keeps a pending log, which
    the read-only check refuses ("needs to be replayed"): that is the
    designed recovery, so `qemu-img check -r all` replays it first and the
    checks and read-backs below then run on the replayed image;
  - with once=on, every write that reported success reads back (qemu-io
    read -P; with the error always on, the flush that would make a write
    durable fails too); an event of the open itself must fail the open;
  - the image is usable afterwards: a new write reads back.
With VDISK_MATRIX_FULL=1 every event name runs with both errnos, and for
qcow2 qemu-io's own blkdebug runs the same workload on the same rules; the
events whose outcome (which requests failed) differs are listed (places
where the two qcow2 drivers order their writes differently; informational).
Without it (make check) each format runs every second event it announces
(VDISK_MATRIX_STRIDE=1: all of them), one case per event, taking
EIO/ENOSPC x once/always in turn.

Env: VDISK_MATRIX_FORMATS (default "qcow2 qed vdi vpc parallels vmdk vhdx"),
VDISK_MATRIX_EVENTS (restrict to these names).  Prints a summary line per
format.
"""
import json
import os
import subprocess
import sys

VDISK = os.environ.get("VDISK", "build/vdisk")
VDISK_IO = os.environ.get("VDISK_IO", "build/vdisk-io")
SRC = os.environ.get("VDISK_SRC", ".")

QEMU_EVENTS = """l1_update l1_grow_alloc_table l1_grow_write_table l1_grow_activate_table
l2_load l2_update l2_update_compressed l2_alloc_cow_read l2_alloc_write read_aio
read_backing_aio read_compressed write_aio write_compressed vmstate_load vmstate_save
cow_read cow_write reftable_load reftable_grow reftable_update refblock_load
refblock_update refblock_update_part refblock_alloc refblock_alloc_hookup
refblock_alloc_write refblock_alloc_write_blocks refblock_alloc_write_table
refblock_alloc_switch_table cluster_alloc cluster_alloc_bytes cluster_free flush_to_os
flush_to_disk pwritev_rmw_head pwritev_rmw_after_head pwritev_rmw_tail
pwritev_rmw_after_tail pwritev pwritev_zero pwritev_done empty_image_prepare
l1_shrink_write_table l1_shrink_free_l2_clusters cor_write cluster_alloc_space""".split()
VDISK_EVENTS = "header_update bat_update block_bitmap_update footer_update".split()

CORE = "flush_to_os flush_to_disk pwritev pwritev_zero pwritev_done".split()
# the events each driver announces (events.h; docs/reliability.md)
FORMAT_EVENTS = {
    "qcow2": """l1_update l1_grow_alloc_table l1_grow_write_table l1_grow_activate_table
        l2_load l2_update l2_update_compressed l2_alloc_cow_read l2_alloc_write read_aio
        read_compressed write_aio write_compressed cow_read cow_write reftable_load
        reftable_grow reftable_update refblock_load refblock_update refblock_update_part
        refblock_alloc refblock_alloc_hookup refblock_alloc_write refblock_alloc_write_blocks
        refblock_alloc_write_table refblock_alloc_switch_table cluster_alloc
        cluster_alloc_bytes cluster_free""".split() + CORE,
    "qed": """l1_update l2_load l2_update l2_alloc_write read_aio write_aio cow_read cow_write
        cluster_alloc header_update""".split() + CORE,
    "vdi": "header_update bat_update cluster_alloc write_aio read_aio".split() + CORE,
    "vpc": """cluster_alloc footer_update bat_update block_bitmap_update write_aio
        read_aio""".split() + CORE,
    # header_update: the in-use flag at open and close; bat_update: the BAT
    # entries written at flush and close
    "parallels": "header_update cluster_alloc bat_update write_aio read_aio".split() + CORE,
    # monolithicSparse (zeroed_grain=on): header_update is the descriptor's
    # new CID at the first write; l2_alloc_write, l1_update (a new grain
    # table), write_compressed, read_compressed and footer_update
    # (streamOptimized) and cow_read (a backing file) do not fire here.
    # Ordered so that make check's stride of 2 takes the ones that do.
    "vmdk": """l2_update l2_alloc_write write_aio write_compressed cluster_alloc l1_update
        header_update read_compressed l2_load cow_read read_aio footer_update""".split() + CORE,
    # header_update: the headers (a new log GUID at the first write, and
    # clean at close); bat_update: the in-place write of a logged BAT sector
    # (first: make check then runs it with EIO once, which left every later
    # allocating write failing with ENOTSUP before the fix)
    "vhdx": "bat_update cluster_alloc header_update write_aio".split() + CORE,
}

ERRNOS = {5: ("EIO", "Input/output error"), 28: ("ENOSPC", "No space left on device")}

MB = 1 << 20


def workload(fmt):
    """(command, verify) pairs; verify = (pattern, offset, length) or None."""
    w = [
        ("write -P 0x11 0 64k", (0x11, 0, 65536)),
        ("write -P 0x22 1M 4k", (0x22, MB, 4096)),
        ("write -P 0x33 %d 64k" % (4 * MB + 65536), (0x33, 4 * MB + 65536, 65536)),
        ("write -P 0x44 %d 64k" % (200 * MB), (0x44, 200 * MB, 65536)),
        ("write -z %d 64k" % (8 * MB), (0x00, 8 * MB, 65536)),
        ("flush", None),
        ("write -P 0x55 %d 1536" % (2 * MB + 512), (0x55, 2 * MB + 512, 1536)),
    ]
    if fmt == "qcow2":
        w.append(("write -c -P 0x66 %d 64k" % (12 * MB), (0x66, 12 * MB, 65536)))
        # enough new clusters (512-byte clusters) to need new refcount blocks
        w.append(("write -P 0x77 %d 384k" % (16 * MB), (0x77, 16 * MB, 384 * 1024)))
    w.append(("write -P 0x88 %d 64k" % (4 * MB), (0x88, 4 * MB, 65536)))
    w.append(("flush", None))
    return w


def run(cmd, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, **kw)


def create(fmt, path):
    opts = {"qcow2": ["-o", "cluster_size=512"], "vpc": ["-o", "subformat=dynamic"],
            "parallels": ["-o", "cluster_size=64k"], "vmdk": ["-o", "zeroed_grain=on"],
            "vhdx": ["-o", "block_size=1M"]}
    r = run(["qemu-img", "create", "-q", "-f", fmt] + opts.get(fmt, []) + [path, "256M"])
    if r.returncode:
        sys.exit("FAIL: qemu-img create: " + r.stdout)
    # data to overwrite in place
    r = run(["qemu-io", "-f", fmt, "-c", "write -P 0x99 %d 1M" % (4 * MB), path])
    if r.returncode:
        sys.exit("FAIL: qemu-io prefill: " + r.stdout)


def outcomes(out, n):
    """Per command: True (ok), or the error text; from qemu-io style output."""
    res = []
    for line in out.splitlines():
        if line.startswith("wrote ") or line.startswith("write failed") or \
                line.startswith("flush failed"):
            res.append(True if line.startswith("wrote") else line.split(": ", 1)[-1])
    return res


def parallels_unclean(img):
    """The parallels in-use flag is set (the image was not closed cleanly)."""
    with open(img, "rb") as f:
        h = f.read(48)
    return len(h) == 48 and h[44:48] == b"Ynot"


def accept_unclean(fmt, img, once, chk):
    """With the error always on, closing a parallels image cannot clear its
    in-use flag (the header write fails too), and qemu-img check counts
    the flag as one corruption.  Accept exactly that, then repair it as
    QEMU requires before the image opens read-write again.  None when
    accepted, else why not."""
    if fmt != "parallels" or once != "off" or chk.returncode != 2 or \
            not parallels_unclean(img):
        return "qemu-img check exit %d: %s" % (chk.returncode, chk.stdout.strip()[-600:])
    j = run(["qemu-img", "check", "--output=json", "-f", fmt, img])
    try:
        corr = json.loads(j.stdout[j.stdout.index("{"):]).get("corruptions", 0)
    except ValueError:
        return "qemu-img check --output=json: " + j.stdout[-300:]
    if corr != 1:
        return "unclean image with %d corruptions: %s" % (corr, chk.stdout.strip()[-600:])
    r = run(["qemu-img", "check", "-r", "all", "-f", fmt, img])
    if r.returncode not in (0, 3):
        return "qemu-img check -r all exit %d: %s" % (r.returncode, r.stdout[-300:])
    return None


def replay_vhdx_log(fmt, img, chk):
    """A vhdx image left with a pending metadata log (its in-place write
    failed after the log entry was written): QEMU's read-only check refuses
    it; `qemu-img check -r all` replays the log.  Returns (check result to
    use instead of chk, failure text or None)."""
    if fmt != "vhdx" or chk.returncode == 0 or "needs to be replayed" not in chk.stdout:
        return chk, None
    # vdisk's read-only check must refuse it the same way
    vchk = run([VDISK, "check", "-f", fmt, img])
    if vchk.returncode == 0 or "needs to be replayed" not in vchk.stdout:
        return chk, "vdisk check of a pending log exit %d: %s" % (vchk.returncode,
                                                                  vchk.stdout[-300:])
    r = run(["qemu-img", "check", "-r", "all", "-f", fmt, img])
    if r.returncode not in (0, 3):
        return chk, "qemu-img check -r all exit %d: %s" % (r.returncode, r.stdout[-300:])
    return run(["qemu-img", "check", "-f", fmt, img]), None


def session(tool, fmt, cfg, img, cmds):
    args = [tool, "-f", fmt]
    for c in cmds:
        args += ["-c", c]
    args.append("blkdebug:%s:%s" % (cfg, img))
    r = run(args, timeout=120)
    if r.returncode >= 128 or r.returncode < 0 or "Sanitizer" in r.stdout:
        sys.exit("FAIL: %s crashed (%d): %s" % (tool, r.returncode, r.stdout[-2000:]))
    # flush has no output line when it succeeds: count failures only
    lines = [l for l in r.stdout.splitlines()
             if l.startswith(("wrote ", "write failed", "flush failed"))]
    return lines, r.stdout


def main():
    formats = os.environ.get("VDISK_MATRIX_FORMATS",
                             "qcow2 qed vdi vpc parallels vmdk vhdx").split()
    only = os.environ.get("VDISK_MATRIX_EVENTS", "").split()
    # make check: each format's own events, one errno per event (alternating);
    # VDISK_MATRIX_FULL=1: every event name x both errnos, and qemu-io's
    # blkdebug on the same rules for qcow2
    full = os.environ.get("VDISK_MATRIX_FULL") == "1"
    failures = []
    summary = []
    diffs = {}
    for fmt in formats:
        base = "base." + fmt
        create(fmt, base)
        cmds = [c for c, _ in workload(fmt)]
        cases = fired = replayed = 0
        # make check takes every VDISK_MATRIX_STRIDE-th (default 2nd) event
        stride = int(os.environ.get("VDISK_MATRIX_STRIDE", "2"))
        events = only or (QEMU_EVENTS + VDISK_EVENTS if full else FORMAT_EVENTS[fmt][::stride])
        combos = [(5, "on"), (28, "off"), (5, "off"), (28, "on")]
        for k, ev in enumerate(events):
            for eno, (ename, msg) in ERRNOS.items():
                for once in ("on", "off"):
                    # make check: one errno x mode per event, the four in turn
                    if not full and not only and combos[k % 4] != (eno, once):
                        continue
                    cases += 1
                    cfg = "rule.cfg"
                    with open(cfg, "w") as f:
                        f.write('[inject-error]\nevent = "%s"\nerrno = "%d"\nonce = "%s"\n'
                                % (ev, eno, once))
                    img = "t." + fmt
                    run(["cp", base, img])
                    tag = "%s %s %s once=%s" % (fmt, ev, ename, once)
                    lines, out = session(VDISK_IO, fmt, cfg, img, cmds)
                    opened = True
                    if "Could not open" in out or "Invalid parameter" in out:
                        # an event of the open itself (reftable_load): the
                        # open must fail with the injected error
                        if msg not in out:
                            failures.append(tag + ": open failed: " + out.strip()[-300:])
                            continue
                        opened = False
                    errs = [l for l in lines if "failed" in l]
                    if errs or "failed" in out or not opened:
                        fired += 1
                    for l in errs:
                        if msg not in l:
                            failures.append("%s: wrong error: %s" % (tag, l))
                    # which writes succeeded: match "wrote" lines to commands in order
                    ok_writes = []
                    res_iter = iter([l for l in lines if not l.startswith("flush")])
                    for c, v in workload(fmt):
                        if c == "flush":
                            continue
                        l = next(res_iter, "")
                        if l.startswith("wrote") and v:
                            ok_writes.append(v)
                    chk = run(["qemu-img", "check", "-f", fmt, img])
                    chk0 = chk
                    chk, why = replay_vhdx_log(fmt, img, chk)
                    if why:
                        failures.append("%s: %s" % (tag, why))
                        continue
                    replayed += chk is not chk0
                    if chk.returncode == 2 and fmt == "parallels":
                        # vdisk's check must see the same unclean flag
                        vchk = run([VDISK, "check", "-f", fmt, img])
                        if vchk.returncode != 2 or "not closed correctly" not in vchk.stdout:
                            failures.append("%s: vdisk check of an unclean image exit %d: %s"
                                            % (tag, vchk.returncode, vchk.stdout[-300:]))
                        why = accept_unclean(fmt, img, once, chk)
                        if why:
                            failures.append("%s: %s" % (tag, why))
                            continue
                        chk = run(["qemu-img", "check", "-f", fmt, img])
                    # 63: qemu-img cannot check this format (vpc): vdisk's below
                    if chk.returncode not in (0, 3, 63):
                        failures.append("%s: qemu-img check exit %d: %s" %
                                        (tag, chk.returncode, chk.stdout.strip()[-600:]))
                        continue
                    vchk = run([VDISK, "check", "-f", fmt, img])
                    if vchk.returncode not in (0, 3, 63):
                        failures.append("%s: vdisk check exit %d: %s" %
                                        (tag, vchk.returncode, vchk.stdout.strip()[-400:]))
                    # a write that succeeded is durable once a later flush
                    # succeeds; with the error always on, flushes fail and
                    # vdisk-io, like qemu-io, does not print it: only the
                    # once cases can require the data
                    if ok_writes and once == "on":
                        args = ["qemu-io", "-f", fmt, "-r"]
                        for pat, off, ln in ok_writes:
                            args += ["-c", "read -P 0x%x %d %d" % (pat, off, ln)]
                        r = run(args + [img])
                        if r.returncode or "Pattern verification failed" in r.stdout or \
                                "failed" in r.stdout:
                            failures.append("%s: written data lost: %s" %
                                            (tag, r.stdout.strip()[-300:]))
                    r = run([VDISK_IO, "-f", fmt, "-c", "write -P 0xab 100M 64k",
                             "-c", "read -P 0xab 100M 64k", img])
                    if r.returncode or "failed" in r.stdout:
                        failures.append("%s: image unusable afterwards: %s" %
                                        (tag, r.stdout.strip()[-300:]))
                    if full and fmt == "qcow2" and ev in QEMU_EVENTS:
                        run(["cp", base, "q." + fmt])
                        qlines, qout = session("qemu-io", fmt, cfg, "q." + fmt, cmds)
                        mine = ["ok" if l.startswith("wrote") else "fail" for l in lines]
                        theirs = ["ok" if l.startswith("wrote") else "fail" for l in qlines]
                        if mine != theirs:
                            diffs.setdefault(ev, []).append(
                                "%s once=%s vdisk=%s qemu=%s" % (ename, once, mine, theirs))
        summary.append("%s: %d events, %d cases (event x errno x once/always), %d with "
                       "an injected error%s" % (fmt, len(events), cases, fired,
                                                ", %d with a log replayed" % replayed
                                                if fmt == "vhdx" else ""))
    for s in summary:
        print(s)
    if diffs:
        print("events where vdisk's and qemu-io's blkdebug outcomes differ (qcow2):")
        for ev, d in sorted(diffs.items()):
            print("  %s: %s" % (ev, d[0]))
    for f in failures:
        print("FAIL: " + f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
