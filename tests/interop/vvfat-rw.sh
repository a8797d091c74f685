#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Virtual FAT rw (fat:rw:DIR), the restricted subset: a real FAT driver
# (mtools) works on a copy of the image; the sectors it changed are written
# through `vdisk-io fat:rw:DIR`, and the commit (flush, close) makes DIR
# equal to the same operations done on a plain directory: new files,
# overwritten files (shorter and longer), deleted files, renamed files, in
# the root and in existing subdirectories, for seeded random trees, then
# three rounds of seeded random mtools operations.  A new
# directory is refused with nothing applied; the image reads back what
# was written after the commit; rw on a read-only open, and FAT32, fail.
. "$VDISK_SRC/tests/lib.sh"
need mcopy mdel mren mmd qemu-io qemu-img
export MTOOLS_SKIP_CHECK=1 LANG=C.UTF-8 LC_ALL=C.UTF-8
lib="$VDISK_SRC/tests/interop/vvfat/lib.py"
seed=${VDISK_SEED:-$RANDOM}
echo "seed $seed"

# apply BASE MOD SPEC [extra vdisk-io commands]: write MOD's changes to BASE
# through vdisk-io into SPEC
apply() {
    local base=$1 mod=$2 spec=$3; shift 3
    /usr/bin/python3 - "$base" "$mod" >cmds <<'PY'
import os, sys
a = open(sys.argv[1], "rb"); b = open(sys.argv[2], "rb")
off, n, run, start = 0, 0, None, 0
chunks = []
while True:
    x = a.read(1 << 20); y = b.read(1 << 20)
    if not y:
        break
    for i in range(0, len(y), 512):
        if x[i:i + 512] != y[i:i + 512]:
            if run is None:
                run = bytearray(); start = off + i
            run += y[i:i + 512]
        elif run is not None:
            chunks.append((start, bytes(run))); run = None
    off += len(y)
if run is not None:
    chunks.append((start, bytes(run)))
for k, (o, d) in enumerate(chunks):
    open("chunk%d" % k, "wb").write(d)
    print("write -q -s %s/chunk%d %d %d" % (os.getcwd(), k, o, len(d)))
PY
    local args=() c
    while read -r c; do args+=(-c "$c"); done <cmds
    "$VDISK_IO" -f raw "${args[@]}" "$@" "$spec"
}

mkdir host plain
/usr/bin/python3 "$lib" tree host "$seed" 100000 40 || fail "tree"
mkdir host/sub && echo one >host/sub/one.txt && echo keep >host/keep.txt
cp -a host/. plain/
find host -exec touch -h -a -d "2037-01-01 00:00:00" {} +

"$VDISK" convert -O raw fat:host base.raw || fail "convert"
cp base.raw mod.raw
I="-i mod.raw@@32256"
head -c 30000 /dev/urandom >new1.bin
head -c 70000 /dev/urandom >bigger.bin
echo short >shorter.txt
mcopy $I new1.bin ::/new1.bin && cp new1.bin plain/new1.bin
mcopy $I new1.bin "::/sub/A long new name.bin" && cp new1.bin "plain/sub/A long new name.bin"
mcopy -o $I bigger.bin ::/keep.txt && cp bigger.bin plain/keep.txt
mcopy -o $I shorter.txt ::/sub/one.txt && cp shorter.txt plain/sub/one.txt
mren $I ::/new1.bin ::/renamed.bin && mv plain/new1.bin plain/renamed.bin
# delete two of the random files
find plain -maxdepth 1 -type f -printf '%f\n' | grep -E '^[A-Za-z0-9][A-Za-z0-9 ._-]*$' |
    sort | sed -n '2p;4p' >victims
while IFS= read -r f; do
    mdel $I "::/$f" || fail "mdel $f"
    rm "plain/$f"
done <victims
: >empty.new && mcopy $I empty.new ::/empty.new && cp empty.new plain/empty.new

apply base.raw mod.raw fat:rw:host -c flush || fail "vdisk-io rw"
diff -r plain host || fail "DIR differs from the same operations on a plain directory (seed $seed)"
ls -a host | grep -q vdisk-vvfat && fail "a temporary file was left"

# through a vdisk-nbd export, over several commits in one session: the
# disk reads back exactly what was written (host files rewritten or
# deleted by a commit no longer back its clusters), and DIR follows
"$VDISK" convert -O raw fat:host base.raw || fail "convert 1b"
sock=$PWD/nbd.sock
"$VDISK_NBD" -t -k "$sock" -f raw fat:rw:host &
pid=$!
trap 'kill $pid 2>/dev/null' EXIT
wait_for qemu-io -f raw -c "read 0 512" "nbd+unix:///?socket=$sock"
url="nbd+unix:///?socket=$sock"
cp base.raw mod.raw
mcopy -o $I shorter.txt ::/keep.txt && cp shorter.txt plain/keep.txt
mdel $I ::/renamed.bin && rm plain/renamed.bin
apply base.raw mod.raw "$url" -c flush || fail "nbd commit 1"
diff -r plain host || fail "DIR after the first NBD commit (seed $seed)"
cp mod.raw base2.raw
mcopy $I bigger.bin ::/sub/bigger.bin && cp bigger.bin plain/sub/bigger.bin
mdel $I "::/sub/A long new name.bin" && rm "plain/sub/A long new name.bin"
apply base2.raw mod.raw "$url" -c flush || fail "nbd commit 2"
diff -r plain host || fail "DIR after the second NBD commit (seed $seed)"
qemu-img convert -f raw -O raw "$url" view.raw || fail "read the export"
cmp view.raw mod.raw || fail "the disk does not read back what was written"
kill $pid
wait $pid 2>/dev/null || true
trap - EXIT

# seeded random sequences of mtools operations (new, overwritten, deleted
# and renamed files, anywhere in the existing directories), three rounds,
# each applied through vdisk-io and compared with a plain directory
for round in 1 2 3; do
    "$VDISK" convert -O raw fat:host base.raw || fail "convert round $round"
    cp base.raw mod.raw
    /usr/bin/python3 - "$seed" "$round" plain >ops <<'PY'
import os, random, re, sys
rnd = random.Random(int(sys.argv[1]) * 10 + int(sys.argv[2]))
root = sys.argv[3]
safe = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]*$")
dirs, files = [""], []
for d, ds, fs in os.walk(root):
    rel = os.path.relpath(d, root)
    rel = "" if rel == "." else rel
    if rel and not all(safe.match(x) for x in rel.split("/")):
        ds[:] = []
        continue
    if rel:
        dirs.append(rel)
    files += [os.path.join(rel, f) for f in fs if safe.match(f)]
for k in range(8):
    op = rnd.choice(["new", "new", "over", "del", "ren"])
    if op != "new" and not files:
        op = "new"
    if op == "new":
        d = rnd.choice(dirs)
        name = "n%s %d %s.%s" % (sys.argv[2], k, "x" * rnd.randint(0, 30), rnd.choice(["txt", "bin", "b"]))
        if rnd.random() < 0.3:
            name = "N%s%d.TXT" % (sys.argv[2], k)
        size = rnd.choice([0, 1, 511, 8192, 8193, rnd.randint(1, 200000)])
        # an upper-case 8.3 name has no long name: DIR gets it in lower
        # case, as QEMU reads short names
        m, h = os.path.join(d, name).lstrip("/"), os.path.join(d, name.lower() if name.isupper() else name).lstrip("/")
        print("new", size, rnd.randrange(1 << 30), m + "\t" + h)
        files.append(h)
    elif op == "over":
        f = rnd.choice(files)
        # mtools writes the entry anew under the name given: an upper-case
        # 8.3 name loses its long name and comes back in lower case
        b = os.path.basename(f)
        g = f
        if b.isupper() and re.match(r"^[A-Z0-9_-]{1,8}(\.[A-Z0-9_-]{1,3})?$", b):
            g = os.path.join(os.path.dirname(f), b.lower())
            files.remove(f)
            files.append(g)
        print("over", rnd.choice([0, 5, 9000, rnd.randint(1, 150000)]), rnd.randrange(1 << 30), f + "\t" + g)
    elif op == "del":
        f = rnd.choice(files)
        files.remove(f)
        print("del", 0, 0, f)
    else:
        f = rnd.choice(files)
        files.remove(f)
        g = os.path.join(os.path.dirname(f), "r%s %d renamed" % (sys.argv[2], k))
        files.append(g)
        print("ren", 0, 0, f + "\t" + g)
PY
    while IFS=' ' read -r op size rs path; do
        case $op in
        new|over)
            head -c "$size" </dev/urandom >data.bin
            [ "$op" = new ] && o= || o=-o
            mpath=${path%%$'\t'*} hpath=${path#*$'\t'}
            mcopy $o $I data.bin "::/$mpath" || fail "mcopy $mpath"
            [ "$op" = over ] && [ "$mpath" != "$hpath" ] && rm "plain/$mpath"
            cp data.bin "plain/$hpath" ;;
        del)
            mdel $I "::/$path" || fail "mdel $path"
            rm "plain/$path" ;;
        ren)
            from=${path%%$'\t'*} to=${path#*$'\t'}
            mren $I "::/$from" "::/$to" || fail "mren $from"
            mv "plain/$from" "plain/$to" ;;
        esac
    done <ops
    apply base.raw mod.raw fat:rw:host -c flush || fail "round $round: vdisk-io"
    diff -r plain host || fail "round $round: DIR differs (seed $seed): $(cat ops)"
done

# a new directory is refused and nothing is applied
"$VDISK" convert -O raw fat:host base.raw || fail "convert 2"
cp base.raw mod.raw
mmd $I ::/newdir
mcopy $I new1.bin ::/another.bin
before=$(cd host && find . | sort | md5sum)
out=$(apply base.raw mod.raw fat:rw:host -c flush 2>&1) && fail "mkdir was accepted: $out"
[ "$(cd host && find . | sort | md5sum)" = "$before" ] || fail "a refused commit changed DIR"

expect_fail "Unable to set VVFAT to 'rw' when drive is read-only" "$VDISK_IO" -r -c "read 0 512" fat:rw:host
expect_fail "rw is not supported with FAT32" "$VDISK_IO" -c "read 0 512" fat:rw:32:host
echo "ok (seed $seed)"
