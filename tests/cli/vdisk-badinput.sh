#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Bad input to vdisk: every case gives a clear error (one line naming the
# problem), a non-zero exit without crashing, and writes nothing.
. "$VDISK_SRC/tests/lib.sh"

one_line() {
    # one_line "substring" cmd...: exactly one error line on stderr (plus
    # qemu-img's "Try '... --help'" hint after usage errors), containing it
    local want=$1; shift
    local err rc=0
    err=$("$@" 2>&1 >/dev/null) || rc=$?
    [ "$rc" -ne 0 ] && [ "$rc" -lt 128 ] || fail "exit $rc: $*"
    err=$(printf '%s\n' "$err" | grep -av "^Try '.* --help' for more information\$")
    [ "$(printf '%s\n' "$err" | wc -l)" -eq 1 ] || fail "not one line: $* -- $err"
    case "$err" in *"$want"*) ;; *) fail "expected '$want': $* -- $err" ;; esac
}

# sizes qemu-img refuses: negative, garbage, overflowing, >= 8 EiB, no suffix fraction
one_line "unrecognized option '-5'" "$VDISK" create -f raw n.img -5
one_line "Invalid image size" "$VDISK" create -f raw n.img -- -5
one_line "Must be between 0 and 9223372036854775807" "$VDISK" create -f raw n.img 99999999999999999999
one_line "Must be between 0 and 9223372036854775807" "$VDISK" create -f raw n.img 8E
one_line "Invalid image size" "$VDISK" create -f raw n.img abc
one_line "Invalid image size" "$VDISK" create -f raw n.img 1k5
one_line "Invalid image size" "$VDISK" create -f raw n.img 1.5
one_line "Invalid image size" "$VDISK" create -f raw n.img ''
[ ! -e n.img ] || fail "a failing create left n.img"

# missing files, for every command that opens one
for cmd in "info" "check" "map" "snapshot -l" "measure" "amend -o size=1M" \
           "commit" "rebase -u -b x -F raw" "bitmap --add" "resize"; do
    case "$cmd" in
        "bitmap --add") one_line "nonexist.img" "$VDISK" bitmap --add nonexist.img b0 ;;
        resize) one_line "nonexist.img" "$VDISK" resize nonexist.img 1M ;;
        *) one_line "nonexist.img" "$VDISK" $cmd nonexist.img ;;
    esac
done
[ ! -e nonexist.img ] || fail "a command created nonexist.img"

# unknown formats and options
truncate -s 1M img.raw
cp img.raw ref.raw
one_line "img.raw" "$VDISK" info -f nosuchfmt img.raw
one_line "unrecognized option '--bogus'" "$VDISK" info --bogus img.raw
one_line "--output must be used with human or json" "$VDISK" info --output=xml img.raw
one_line "mutually exclusive" "$VDISK" info --image-opts -f raw driver=raw,file.filename=img.raw
one_line "Unknown file format 'nosuchfmt'" "$VDISK" measure --size 1M -O nosuchfmt
one_line "Invalid preallocation mode 'bogus'" "$VDISK" resize -f raw --preallocation=bogus img.raw 2M
one_line "expecting 'leaks' or 'all'" "$VDISK" check -r bogus img.raw

# json: filenames that do not parse
one_line "json:" "$VDISK" info 'json:{"driver":'
one_line "json:" "$VDISK" info 'json:[1,2]'
one_line "json:" "$VDISK" resize 'json:{"driver":"raw","file":' 2M
# image options that do not parse
one_line "img.raw" "$VDISK" info --image-opts 'driver=raw,file.filename=img.raw,bogus-key=1'

# resize: below zero, too big, garbage, shrink without --shrink -- image unchanged
stat -c %s img.raw > before
one_line "New image size must be positive" "$VDISK" resize -f raw img.raw -5M
one_line "New image size must be positive" "$VDISK" resize -f raw img.raw -- -1M
one_line "New image size must be positive" "$VDISK" resize -f raw --shrink img.raw 0
one_line "out of range" "$VDISK" resize -f raw img.raw 99999999999999999999
one_line "Parameter 'size'" "$VDISK" resize -f raw img.raw 1k5
one_line "size" "$VDISK" resize -f raw img.raw +8E
# the shrink refusal is an error plus qemu-img's warning line
expect_fail "Use the --shrink option" "$VDISK" resize -f raw img.raw 512k
[ "$(stat -c %s img.raw)" = "$(cat before)" ] || fail "a failing resize changed the size"
same_content img.raw ref.raw
echo ok
