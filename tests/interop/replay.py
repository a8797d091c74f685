# SPDX-License-Identifier: BSD-3-Clause
"""Power-loss replay (tests/replay/replay.py) of qcow2 (plain,
lazy_refcounts, compressed, snapshots, bitmaps, extended_l2, LUKS
encryption), qed, vdi, vpc, luks, parallels, vmdk (monolithicSparse: a new
grain's data is flushed before its grain table entry, without which a state
fails with "cluster offset ... points after EOF") and vhdx (a vhdx state
with a pending log is replayed by qemu-img check -r all and by vdisk's,
which must agree): every replayed state opens in vdisk and qemu-img, has
no corruption, and keeps every byte written before the last completed
guest flush.  (A parallels state cut while the image was open has its
in-use flag set: exactly that one corruption is allowed.)

States per variant: VDISK_REPLAY_STATES (default 4: `make check`);
`make check-replay` runs 200 per variant with 3 seeds.  VDISK_REPLAY_SEEDS
(default "1"), VDISK_REPLAY_VARIANTS (default all but the known-bug case).

The case "qcow2-zero-reuse" is the regression test of the qcow2 ordering
bug of issue 10 item 5: a write into an allocated zero cluster (no
refcount change) whose L2 entry could reach the disk before its data; it
is checked with every unflushed entry alone on top of each flush, and the
plain, lazy and extended-L2 qcow2 variants make zero writes too (which
leave allocated zero clusters).  VDISK_REPLAY_VARIANTS=none runs only it.
"""
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.environ.get("VDISK_SRC", "."), "tests", "replay"))
import replay  # noqa: E402

VDISK = replay.VDISK
VDISK_IO = replay.VDISK_IO


def prep_snapshot(base):
    replay.run([VDISK_IO, "-f", "qcow2", "-c", "write -P 0x5a 0 1M", "-c",
                "write -P 0x5b 3M 256k", base], check=True)
    replay.run([VDISK, "snapshot", "-c", "s1", base], check=True)


def prep_bitmap(base):
    replay.run([VDISK, "bitmap", "--add", base, "b0"], check=True)
    replay.run([VDISK, "bitmap", "--add", "-g", "512k", base, "b1"], check=True)


def zero_reuse_ops():
    """Write a cluster, flush, zero it keeping the allocation (an allocated
    zero cluster), flush, then rewrite it with no refcount change and keep
    writing elsewhere before the next flush."""
    ops = [("write", 8 << 20, 1 << 20, 0x70), ("flush",)]
    for k in range(8):
        off = k * 65536
        # the rewrite changes no refcount: only an in-place write (no
        # allocation, which would flush the refcounts first) may follow it
        ops += [("write", off, 65536, 0x10 + k), ("flush",),
                ("zero", off, 65536, False), ("flush",),
                ("write", off, 65536, 0x40 + k), ("write", (8 << 20) + off, 4096, 0x80 + k),
                ("flush",)]
    return ops


# Zero writes that keep the allocation, then rewrites: the pattern of the
# fixed ordering bug (see qcow2-zero-reuse).
QZ = "zero"
VARIANTS = {
    "qcow2": ("qcow2", "", QZ, None),
    "qcow2-lazy": ("qcow2", "lazy_refcounts=on", QZ, None),
    "qcow2-compressed": ("qcow2", "", "compressed", None),
    "qcow2-snapshots": ("qcow2", "", "plain", prep_snapshot),
    "qcow2-bitmaps": ("qcow2", "", "plain", prep_bitmap),
    "qcow2-extl2": ("qcow2", "extended_l2=on", QZ, None),
    "qed": ("qed", "", "zero", None),
    "vdi": ("vdi", "", "zero", None),
    "vpc": ("vpc", "subformat=dynamic", "zero", None),
    # encrypted: the secret rsec of replay.py; iter-time small (key slots
    # are made once, opened by every tool for every state)
    "luks": ("luks", "key-secret=rsec,iter-time=10", "zero", None),
    "qcow2-luks": ("qcow2", "encrypt.format=luks,encrypt.key-secret=rsec,"
                   "encrypt.iter-time=10", QZ, None),
    "vhdx": ("vhdx", "block_size=1M", "zero", None),
    "parallels": ("parallels", "cluster_size=64k", "zero", None),
    # monolithicSparse; zeroed_grain: whole-grain zero writes are table
    # entries only
    "vmdk": ("vmdk", "zeroed_grain=on", "zero", None),
}
# the open option that names the secret, per encrypted variant
ENC = {"luks": "key-secret", "qcow2-luks": "encrypt.key-secret"}


def main():
    budget = int(os.environ.get("VDISK_REPLAY_STATES", "4"))
    seeds = [int(x) for x in os.environ.get("VDISK_REPLAY_SEEDS", "1").split()]
    names = os.environ.get("VDISK_REPLAY_VARIANTS", "").split() or list(VARIANTS)
    names = [n for n in names if n != "none"]  # "none": only the known-bug case
    failures = []
    total = {}
    for name in names:
        fmt, opts, kind, prep = VARIANTS[name]
        for seed in seeds:
            try:
                r = replay.run_variant(name, fmt, opts, kind, seed, budget, prepare=prep,
                                       enc=ENC.get(name))
            except replay.ReplayFailure as e:
                failures.append(str(e))
                continue
            t = total.setdefault(name, [0, 0, 0])
            t[0] += r["states"]
            t[1] += r["entries"]
            t[2] += r["flushes"]
    name = "qcow2-zero-reuse"
    try:
        r = replay.run_variant(name, "qcow2", "", "zero", 1, budget,
                               ops=zero_reuse_ops(), singles=True)
        total[name] = [r["states"], r["entries"], r["flushes"]]
    except replay.ReplayFailure as e:
        failures.append("qcow2-zero-reuse (L2 entry before its data, "
                        "issue 10 item 5): " + str(e))
    for name, (st, en, fl) in total.items():
        print("replay %-17s %4d states checked (log entries %d, flush entries %d)" %
              (name, st, en, fl))
    for f in failures:
        print("FAIL: " + f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
