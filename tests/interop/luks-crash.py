# SPDX-License-Identifier: BSD-3-Clause
"""Error injection (blkdebug) on the write paths of luks and of qcow2 with
encrypt.format=luks (the power-cut replay of both is in replay.py).

1. Data path: a write workload runs through vdisk-io over blkdebug with one
   rule per run (the data events of the format and the core's write and
   flush events, EIO/ENOSPC, once on/off in turn).  Every failed request
   reports the injected errno; afterwards the image opens in vdisk and
   QEMU (qemu-io with the secret), `qemu-img check` passes (qcow2), every
   write that reported success reads back (once=on: later requests behave),
   data no request touched keeps its value, and a new write reads back.
2. Key slot amend interrupted: `vdisk amend` adding or erasing a key slot
   runs over blkdebug with an error on the header write (header_update),
   on the first / a middle / the last key material write (keyslot_update,
   counted with set-state rules) or always.  The amend fails with the
   injected error; the header stays usable: the key that was not being
   removed opens the image in vdisk and QEMU and reads the data, a slot
   being added is not active, `qemu-img check` passes (qcow2) and
   `cryptsetup luksDump` parses it (luks); the same amend without
   injection then succeeds.

Part 1 runs here, part 2 in luks-crash-amend.py (each within the per-test
limit on a loaded machine).  The data path takes one errno x mode per event
(EIO/ENOSPC x once/always in turn); VDISK_LUKS_CRASH_FULL=1 two per event
and every key slot interruption point; under VDISK_SANITIZED every second
data event and one interruption point per key slot change.
"""
import os
import shutil
import subprocess
import sys

VDISK = os.environ.get("VDISK", "build/vdisk")
VDISK_IO = os.environ.get("VDISK_IO", "build/vdisk-io")
FULL = os.environ.get("VDISK_LUKS_CRASH_FULL") == "1"
# a tool run costs ~10 s of wall time under the sanitizers on a loaded
# machine: half the cases there
SANITIZED = bool(os.environ.get("VDISK_SANITIZED")) and not FULL
MB = 1 << 20

# passphrases of the secrets s0 (the image's key) and s1 (a second slot)
OBJ = ["--object", "secret,id=s0,data=crash-one", "--object", "secret,id=s1,data=crash-two"]
ERRNOS = {5: "Input/output error", 28: "No space left on device"}

CONFIGS = {
    # name: (format, create options, key option)
    "luks": ("luks", "key-secret=s0,iter-time=10", "key-secret"),
    "qcow2-luks": ("qcow2", "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10,"
                   "cluster_size=4096", "encrypt.key-secret"),
}
CORE = "pwritev pwritev_done flush_to_os flush_to_disk".split()
DATA_EVENTS = {
    "luks": ["write_aio", "read_aio"] + CORE,
    "qcow2-luks": """write_aio cow_read cow_write l2_update l2_alloc_write l1_update
        cluster_alloc refblock_alloc refblock_update_part refblock_alloc_write
        read_aio""".split() + CORE,
}

failures = []


def run(cmd, **kw):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=300, **kw)
    if r.returncode >= 128 or r.returncode < 0 or "Sanitizer" in r.stdout or \
            "runtime error" in r.stdout:
        sys.exit("FAIL: %s crashed (%d): %s" % (cmd[0], r.returncode, r.stdout[-2000:]))
    return r


def spec(cfg, img, key="s0", debug=None):
    fmt, _, keyopt = CONFIGS[cfg]
    if debug:
        return "driver=%s,%s=%s,file.driver=blkdebug,file.config=%s,file.image.filename=%s" % (
            fmt, keyopt, key, debug, img)
    return "driver=%s,%s=%s,file.filename=%s" % (fmt, keyopt, key, img)


def io(tool, cfg, img, cmds, key="s0", debug=None, extra=()):
    args = [tool] + OBJ + list(extra)
    for c in cmds:
        args += ["-c", c]
    return run(args + ["--image-opts", spec(cfg, img, key, debug)])


def create(cfg, path, size="64M"):
    fmt, opts, _ = CONFIGS[cfg]
    r = run([VDISK, "create", "-q", "-f", fmt] + OBJ + ["-o", opts, path, size])
    if r.returncode:
        sys.exit("FAIL: vdisk create %s: %s" % (cfg, r.stdout))


def check(cfg, img, tag, key="s0"):
    """qemu-img check (qcow2: no corruption; luks has no check) and vdisk's."""
    if CONFIGS[cfg][0] != "qcow2":
        return True
    for tool in ("qemu-img", VDISK):
        r = run([tool, "check"] + OBJ + ["--image-opts", spec(cfg, img, key)])
        if r.returncode not in (0, 3):
            failures.append("%s: %s check exit %d: %s" % (tag, os.path.basename(tool),
                                                         r.returncode, r.stdout[-400:]))
            return False
    return True


def reads(tool, cfg, img, checks, key="s0"):
    """checks: (pattern, offset, length); True when all read back."""
    r = io(tool, cfg, img, ["read -P 0x%x %d %d" % c for c in checks], key)
    return r.returncode == 0 and "failed" not in r.stdout and \
        "verification" not in r.stdout, r.stdout


def write_rule(path, rules):
    with open(path, "w") as f:
        for kind, kv in rules:
            f.write("[%s]\n" % kind)
            for k, v in kv:
                f.write('%s = "%s"\n' % (k, v))


# ------------------------------------------------------------ data path
WORKLOAD = [
    ("write -P 0x11 0 64k", (0x11, 0, 65536)),
    ("write -P 0x22 1M 4k", (0x22, MB, 4096)),
    ("write -P 0x33 %d 64k" % (4 * MB + 65536), (0x33, 4 * MB + 65536, 65536)),
    ("read -P 0x99 %d 64k" % (4 * MB + 512 * 1024), None),
    ("write -P 0x44 %d 64k" % (40 * MB), (0x44, 40 * MB, 65536)),
    ("write -z %d 64k" % (8 * MB), (0x00, 8 * MB, 65536)),
    ("flush", None),
    ("write -P 0x55 %d 1536" % (2 * MB + 512), (0x55, 2 * MB + 512, 1536)),
    ("write -P 0x88 %d 64k" % (4 * MB), (0x88, 4 * MB, 65536)),
    ("flush", None),
]
# the prefill (0x99 at 4M..5M) no write touches: it must survive every case
UNTOUCHED = (0x99, 4 * MB + 128 * 1024, 896 * 1024)


def data_path(cfg):
    base = "base-" + cfg
    create(cfg, base)
    r = io(VDISK_IO, cfg, base, ["write -P 0x99 %d 1M" % (4 * MB)])
    if r.returncode:
        sys.exit("FAIL: prefill %s: %s" % (cfg, r.stdout))
    combos = [(5, "on"), (28, "off"), (5, "off"), (28, "on")]
    events = DATA_EVENTS[cfg]
    if SANITIZED:
        events = events[::2]
    cases = []
    for k, ev in enumerate(events):
        cases.append((ev,) + combos[k % 4])
        # VDISK_LUKS_CRASH_FULL=1: every event in the other mode as well
        if FULL:
            cases.append((ev,) + combos[(k + 1) % 4])
    fired = 0
    for ev, eno, once in cases:
        tag = "%s %s errno %d once=%s" % (cfg, ev, eno, once)
        img = "t-" + cfg
        shutil.copyfile(base, img)
        write_rule("rule.cfg", [("inject-error", [("event", ev), ("errno", eno),
                                                  ("once", once)])])
        r = io(VDISK_IO, cfg, img, [c for c, _ in WORKLOAD], debug="rule.cfg",
               extra=["-t", "writeback"])
        out = r.stdout
        if "Could not open" in out:
            failures.append("%s: the open failed: %s" % (tag, out[-300:]))
            continue
        results = [l for l in out.splitlines()
                   if l.startswith(("wrote ", "read ", "write failed", "read failed",
                                    "flush failed", "Pattern verification"))]
        errs = [l for l in results if "failed" in l]
        if errs:
            fired += 1
        for l in errs:
            if ERRNOS[eno] not in l:
                failures.append("%s: wrong error: %s" % (tag, l))
        if any("verification" in l for l in results):
            failures.append("%s: a read returned wrong data: %s" % (tag, out[-300:]))
        ok = []
        it = iter([l for l in results if l.startswith(("wrote", "write failed"))])
        for c, v in WORKLOAD:
            if c.startswith("write"):
                l = next(it, "")
                if l.startswith("wrote"):
                    ok.append(v)
        if not check(cfg, img, tag):
            continue
        # durable (once=on: the flushes after a failure succeed) writes and
        # the untouched prefill read back, in vdisk and in QEMU
        want = [UNTOUCHED] + (ok if once == "on" else [])
        for tool in ("qemu-io", VDISK_IO):
            good, text = reads(tool, cfg, img, want)
            if not good:
                failures.append("%s: %s reads wrong data after the errors: %s" %
                                (tag, os.path.basename(tool), text[-300:]))
        r = io(VDISK_IO, cfg, img, ["write -P 0xab 30M 64k", "read -P 0xab 30M 64k"])
        if r.returncode or "failed" in r.stdout:
            failures.append("%s: image unusable afterwards: %s" % (tag, r.stdout[-300:]))
    print("%s data path: %d events, %d cases, %d with an injected error" %
          (cfg, len(events), len(cases), fired))
    if fired < len(cases) // 2:
        failures.append("%s: only %d of %d cases injected an error" % (cfg, fired, len(cases)))


# ------------------------------------------------------------ amend
def amend(cfg, img, opts, key="s0", debug=None):
    fmt, _, keyopt = CONFIGS[cfg]
    if fmt == "qcow2":
        opts = ",".join("encrypt." + o for o in opts.split(","))
    return run([VDISK, "amend"] + OBJ + ["-o", opts, "--image-opts",
                                         spec(cfg, img, key, debug)])


def slot_rules(ev, nth, eno):
    """Fail the nth firing of ev (1-based); nth 0: every firing."""
    if nth == 0:
        return [("inject-error", [("event", ev), ("errno", eno), ("once", "off")])]
    rules = [("set-state", [("event", ev), ("state", k), ("new_state", k + 1)])
             for k in range(1, nth)]
    rules.append(("inject-error", [("event", ev), ("errno", eno), ("state", nth),
                                   ("once", "on")]))
    return rules


def amend_cases(cfg):
    base = "abase-" + cfg
    create(cfg, base, "4M")
    r = io(VDISK_IO, cfg, base, ["write -P 0x5a 0 1M", "write -P 0x5b 3M 64k"])
    if r.returncode:
        sys.exit("FAIL: amend prefill %s: %s" % (cfg, r.stdout))
    two = "abase2-" + cfg  # slot 0: s0, slot 1: s1
    shutil.copyfile(base, two)
    r = amend(cfg, two, "state=active,new-secret=s1,iter-time=10")
    if r.returncode:
        sys.exit("FAIL: amend %s: %s" % (cfg, r.stdout))
    data = [(0x5a, 0, MB), (0x5b, 3 * MB, 65536)]
    # (what, start image, amend options, key that must still open,
    #  key that must not open afterwards or None, events (event, nth),
    #  the amend that completes the change afterwards: the same one, or
    #  for an erase by password the slot's index, as the password may be
    #  gone with the key material already wiped)
    # an erase writes the key material 40 times, then the header
    erase_hits = [("header_update", 1), ("keyslot_update", 1), ("keyslot_update", 20),
                  ("keyslot_update", 40), ("keyslot_update", 0)]
    ops = [
        ("add", base, "state=active,new-secret=s1,iter-time=10", "s0", "s1",
         [("keyslot_update", 1), ("header_update", 1), ("keyslot_update", 0)], None),
        ("erase slot 1", two, "state=inactive,keyslot=1", "s0", None,
         erase_hits if FULL else erase_hits[::2], None),
        ("erase slot 0", two, "state=inactive,keyslot=0", "s1", None,
         erase_hits if FULL else erase_hits[1::2], None),
        ("erase by old-secret", two, "state=inactive,old-secret=s1", "s0", None,
         [("header_update", 1), ("keyslot_update", 7)], "state=inactive,keyslot=1"),
    ]
    n = 0
    for k, (what, start, opts, keep, gone, hits, again) in enumerate(ops):
        if SANITIZED:
            hits = hits[:1]
        for j, (ev, nth) in enumerate(hits):
            eno = (5, 28)[(k + j) % 2]
            tag = "%s amend %s, %s #%s errno %d" % (cfg, what, ev, nth or "all", eno)
            img = "a-" + cfg
            shutil.copyfile(start, img)
            write_rule("arule.cfg", slot_rules(ev, nth, eno))
            r = amend(cfg, img, opts, key=keep, debug="arule.cfg")
            n += 1
            if r.returncode == 0 or ERRNOS[eno] not in r.stdout:
                failures.append("%s: the amend did not fail with the injected error "
                                "(exit %d): %s" % (tag, r.returncode, r.stdout[-300:]))
                continue
            if "crash-" in r.stdout:
                failures.append("%s: a passphrase in the message: %s" % (tag, r.stdout))
            if not check(cfg, img, tag, keep):
                continue
            for tool in (VDISK_IO, "qemu-io"):
                good, text = reads(tool, cfg, img, data, key=keep)
                if not good:
                    failures.append("%s: %s cannot read with the kept key: %s" %
                                    (tag, os.path.basename(tool), text[-300:]))
            if gone:
                r = io(VDISK_IO, cfg, img, ["read 0 512"], key=gone)
                if "Invalid password" not in r.stdout:
                    failures.append("%s: the slot being added is active after the "
                                    "failure: %s" % (tag, r.stdout[-300:]))
            if cfg == "luks" and shutil.which("cryptsetup"):
                r = run(["cryptsetup", "luksDump", img])
                if r.returncode:
                    failures.append("%s: luksDump: %s" % (tag, r.stdout[-300:]))
            # the header is still usable: the same amend now succeeds
            r = amend(cfg, img, again or opts, key=keep)
            if r.returncode:
                failures.append("%s: the amend fails afterwards: %s" % (tag, r.stdout[-300:]))
                continue
            good, text = reads(VDISK_IO, cfg, img, data, key=keep)
            if not good:
                failures.append("%s: data after the second amend: %s" % (tag, text[-300:]))
            # and it did what it says: the added key opens, an erased one not
            if what == "add":
                good, text = reads(VDISK_IO, cfg, img, data[:1], key="s1")
            else:
                erased = "s0" if what == "erase slot 0" else "s1"
                r = io(VDISK_IO, cfg, img, ["read 0 512"], key=erased)
                good, text = "Invalid password" in r.stdout, r.stdout
            if not good:
                failures.append("%s: key slots wrong after the second amend: %s" %
                                (tag, text[-300:]))
    print("%s amend: %d interrupted key slot changes" % (cfg, n))


def main(part=data_path):
    for t in ("qemu-img", "qemu-io"):
        if not shutil.which(t):
            print("SKIP: %s not installed" % t)
            sys.exit(77)
    for cfg in CONFIGS:
        part(cfg)
    for f in failures:
        print("FAIL: " + f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
