#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Open errors and names that qemu-iotest 162 matches, compared with
# qemu-img's: an nbd server that cannot be resolved (one "Could not open"
# lead, not two), the legacy ssh "port" that must be a number, and the
# name of a blkdebug node over null-co given as options.
. "$(dirname "$0")/../lib.sh"
need qemu-img
same_output "nbd host -1" qemu-img info 'json:{"driver": "nbd", "host": -1}'
if "$VDISK" --help | grep -qw ssh; then
    same_output "ssh port 0.42 (json)" qemu-img info 'json:{"driver": "ssh", "host": "localhost", "port": 0.42, "path": "/foo"}'
    same_output "ssh port 0.42 (options)" qemu-img info --image-opts driver=ssh,host=localhost,port=0.42,path=/foo
fi
touch 42
same_output "blkdebug over null-co" qemu-img info 'json:{"driver": "blkdebug", "config": 42, "image.driver": "null-co"}'
same_output "null-co" qemu-img info --image-opts driver=null-co
exit 0
