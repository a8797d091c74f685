# SPDX-License-Identifier: BSD-3-Clause
"""qcow2 interoperability with QEMU 7.2, both ways, on seeded random
workloads.

For several (cluster size, compat, refcount width, lazy refcounts)
configurations: qemu-img/qemu-io build a base + overlay chain, vdisk and
vdisk-io build another with the same pattern writes, zero writes (with and
without -u) and discards.  A byte model of the expected guest content is
kept here.  Then each tool reads the other's chain (and its own) and
verifies every byte against the model; qemu-img check must find nothing in
what vdisk wrote and vdisk check nothing in what QEMU wrote.  Finally each
tool writes into the other's overlay and everything is verified again.

QCOW2_SEED=n picks another workload (default 1).
"""
import os
import random
import re
import subprocess
import sys
import tempfile

VDISK = os.environ.get("VDISK", "vdisk")
VIO = os.environ.get("VDISK_IO", "vdisk-io")
SEED = int(os.environ.get("QCOW2_SEED", "1"))
SIZE = 8 << 20

# (cluster_size, compat, refcount_bits, lazy_refcounts)
CONFIGS = [
    (65536, "1.1", 16, "off"),
    (512, "1.1", 1, "off"),
    (4096, "0.10", 16, "off"),
    (65536, "1.1", 64, "on"),
    (2 << 20, "1.1", 8, "off"),
    (512, "1.1", 64, "off"),
    (1024, "1.1", 2, "on"),
    (32768, "0.10", 16, "off"),
    (8192, "1.1", 32, "on"),
    (16384, "1.1", 4, "off"),
]


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def run(args, what, expect_rc=0):
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != expect_rc or "failed" in p.stdout.lower():
        fail("%s: %s (exit %d)\n%s" % (what, " ".join(args[:6]), p.returncode, p.stdout[-3000:]))
    return p.stdout


def gen_ops(rng, n, cs, v3):
    ops = []
    for _ in range(n):
        kind = rng.choice(["write"] * 6 + ["zero", "zero_u"] + (["discard"] if v3 else []))
        if kind == "discard":
            first = rng.randrange(0, SIZE // cs)
            count = rng.randint(1, max(1, min(8, (SIZE // cs) - first)))
            count = min(count, SIZE // cs - first)
            ops.append(("discard", first * cs, count * cs, 0))
            continue
        if rng.random() < 0.3:
            off = rng.randrange(0, SIZE // 512) * 512
        else:
            off = rng.randrange(0, SIZE - 1)
        length = rng.choice([rng.randint(1, 4096), rng.randint(1, 3 * cs),
                             rng.randint(1, 300000)])
        length = max(1, min(length, SIZE - off))
        ops.append((kind, off, length, rng.randint(1, 255)))
    return ops


def io_args(ops):
    # -t unsafe: no fsyncs, so the test takes seconds (ordering and flush
    # paths are covered by the crash-consistency test)
    args = ["-t", "unsafe"]
    for kind, off, length, pat in ops:
        if kind == "write":
            args += ["-c", "write -q -P %d %d %d" % (pat, off, length)]
        elif kind == "zero":
            args += ["-c", "write -q -z %d %d" % (off, length)]
        elif kind == "zero_u":
            args += ["-c", "write -q -z -u %d %d" % (off, length)]
        else:
            args += ["-c", "discard -q %d %d" % (off, length)]
    return args


def apply_model(model, ops):
    for kind, off, length, pat in ops:
        model[off:off + length] = bytes([pat if kind == "write" else 0]) * length


def vio(args, image, tiny):
    """vdisk-io with args on image; tiny: with minimal metadata caches so
    that every operation evicts tables (write-back order, dependencies)"""
    if not tiny:
        return [VIO] + args + [image]
    return [VIO, "--image-opts"] + args + [
        "driver=qcow2,file.filename=%s,l2-cache-entry-size=512,l2-cache-size=1k,"
        "refcount-cache-size=1" % image]


def verify_args(model):
    """read -P commands covering the model, one per run of equal bytes"""
    args = []
    for m in re.finditer(rb"(.)\1*", bytes(model), re.S):
        args += ["-c", "read -q -P %d %d %d" % (m.group(1)[0], m.start(), m.end() - m.start())]
    return args


def verify(tool, image, model, what):
    args = verify_args(model)
    for k in range(0, len(args), 2000):
        run([tool, "-r"] + args[k:k + 2000] + [image], what)


def main():
    rng = random.Random(SEED)
    work = tempfile.mkdtemp(prefix="qcow2-random.", dir=".")
    for n, (cs, compat, rb, lazy) in enumerate(CONFIGS):
        v3 = compat == "1.1"
        opts = "cluster_size=%d,compat=%s,refcount_bits=%d,lazy_refcounts=%s" % (cs, compat, rb, lazy)
        d = os.path.join(work, "c%d" % n)
        os.mkdir(d)
        qb, qt = os.path.join(d, "qb.qcow2"), os.path.join(d, "qt.qcow2")
        vb, vt = os.path.join(d, "vb.qcow2"), os.path.join(d, "vt.qcow2")
        tiny = n % 3 == 1
        tag = "config %d (%s%s)" % (n, opts, ", tiny caches" if tiny else "")
        model = bytearray(SIZE)

        run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, qb, str(SIZE)], tag)
        run([VDISK, "create", "-q", "-f", "qcow2", "-o", opts, vb, str(SIZE)], tag)
        base_ops = gen_ops(rng, 40, cs, v3)
        run(["qemu-io"] + io_args(base_ops) + [qb], tag + " qemu-io base")
        run(vio(io_args(base_ops), vb, tiny), tag + " vdisk-io base")
        apply_model(model, base_ops)

        run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, "-b", "qb.qcow2",
             "-F", "qcow2", qt], tag)
        run([VDISK, "create", "-q", "-f", "qcow2", "-o", opts, "-b", "vb.qcow2",
             "-F", "qcow2", vt], tag)
        top_ops = gen_ops(rng, 40, cs, v3)
        run(["qemu-io"] + io_args(top_ops) + [qt], tag + " qemu-io top")
        run(vio(io_args(top_ops), vt, tiny), tag + " vdisk-io top")
        apply_model(model, top_ops)

        verify("qemu-io", vt, model, tag + ": qemu-io reading vdisk's chain")
        verify(VIO, qt, model, tag + ": vdisk-io reading qemu's chain")
        verify(VIO, vt, model, tag + ": vdisk-io reading its own chain")
        for img in (vb, vt):
            run(["qemu-img", "check", img], tag + ": qemu-img check " + img)
        for img in (qb, qt):
            run([VDISK, "check", img], tag + ": vdisk check " + img)

        # each writes into the other's overlay
        more = gen_ops(rng, 15, cs, v3)
        run(["qemu-io"] + io_args(more) + [vt], tag + " qemu-io writing vdisk's top")
        run(vio(io_args(more), qt, tiny), tag + " vdisk-io writing qemu's top")
        apply_model(model, more)
        verify("qemu-io", qt, model, tag + ": qemu-io reading the mixed chain")
        verify(VIO, vt, model, tag + ": vdisk-io reading the mixed chain")
        run(["qemu-img", "check", qt], tag + ": qemu-img check after vdisk-io writes")
        run([VDISK, "check", vt], tag + ": vdisk check after qemu-io writes")
        print("ok %s" % tag)
    subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
