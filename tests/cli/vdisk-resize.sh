#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk resize: absolute and relative sizes, --shrink, preallocation, and the
# refusals qemu-img makes (the image stays as it was).
. "$VDISK_SRC/tests/lib.sh"
need qemu-img

truncate -s 1M r.img
sz() { stat -c %s r.img; }
out=$("$VDISK" resize -f raw r.img 2M) || fail "grow"
[ "$out" = "Image resized." ] || fail "grow said '$out'"
[ "$(sz)" = 2097152 ] || fail "grow: $(sz)"
"$VDISK" resize -q -f raw r.img +1M >/dev/null || fail "relative grow"
[ "$(sz)" = 3145728 ] || fail "+1M: $(sz)"
out=$("$VDISK" resize -q -f raw r.img +1M) || fail "-q"
[ -z "$out" ] || fail "-q printed '$out'"
"$VDISK" resize -f raw --shrink r.img -1M >/dev/null || fail "relative shrink"
[ "$(sz)" = 3145728 ] || fail "-1M: $(sz)"
"$VDISK" resize -f raw --shrink r.img 512k >/dev/null || fail "shrink"
[ "$(sz)" = 524288 ] || fail "512k: $(sz)"
# same size is fine
"$VDISK" resize -f raw r.img 512k >/dev/null || fail "same size"
# preallocation=full writes the new space
"$VDISK" resize -f raw --preallocation=full r.img 1M >/dev/null || fail "prealloc full"
[ "$(sz)" = 1048576 ] || fail "prealloc: $(sz)"
[ "$(stat -c %b r.img)" -ge 1024 ] || fail "preallocation=full did not allocate"
# probing raw for a write prints qemu-img's warning
err=$("$VDISK" resize r.img 1M 2>&1 >/dev/null) || fail "probed resize"
case "$err" in *"WARNING: Image format was not specified for 'r.img' and probing guessed raw."*) ;;
    *) fail "no raw probing warning: $err" ;; esac
# --image-opts
"$VDISK" resize --image-opts driver=raw,file.filename=r.img 2M >/dev/null || fail "image-opts"
[ "$(sz)" = 2097152 ] || fail "image-opts: $(sz)"

# refusals leave the image alone
cp r.img ref.img
err=$("$VDISK" resize -f raw r.img 1M 2>&1) && fail "shrink without --shrink succeeded"
case "$err" in *"Use the --shrink option"*"warning:"*) ;; *) fail "shrink refusal: $err" ;; esac
expect_fail "Preallocation can only be used for growing images" "$VDISK" resize -f raw --preallocation=falloc --shrink r.img 1M
expect_fail "New image size must be positive" "$VDISK" resize -f raw --shrink r.img -2M
expect_fail "Not enough arguments" "$VDISK" resize r.img
expect_fail "Expecting image file name and size" "$VDISK" resize -f raw r.img 1M 2M
expect_fail "mutually exclusive" "$VDISK" resize -f raw --image-opts driver=raw,file.filename=r.img 4M
same_content r.img ref.img
echo ok
