#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
# An sftp subsystem for tests: OpenSSH's sftp-server behind a relay that
# removes every extension from the server's SSH_FXP_VERSION reply, so the
# client sees a server without fsync@openssh.com (as an old OpenSSH, or
# another server).  Everything after the first reply is passed as it is.
import os
import struct
import subprocess
import sys
import threading

SERVER = sys.argv[1] if len(sys.argv) > 1 else "/usr/lib/openssh/sftp-server"


def read_exact(f, n):
    data = b""
    while len(data) < n:
        chunk = f.read(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def pump(src, dst):
    while True:
        chunk = src.read1(65536) if hasattr(src, "read1") else src.read(65536)
        if not chunk:
            break
        dst.write(chunk)
        dst.flush()
    try:
        dst.close()
    except OSError:
        pass


def main():
    child = subprocess.Popen([SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    cin = sys.stdin.buffer
    cout = sys.stdout.buffer
    up = threading.Thread(target=pump, args=(cin, child.stdin), daemon=True)
    up.start()
    head = read_exact(child.stdout, 4)
    if head is None:
        return 1
    (length,) = struct.unpack(">I", head)
    body = read_exact(child.stdout, length)
    if body is None:
        return 1
    if body[0] == 2:  # SSH_FXP_VERSION: keep the version, drop the extensions
        body = body[:5]
    cout.write(struct.pack(">I", len(body)) + body)
    cout.flush()
    pump(child.stdout, cout)
    child.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
