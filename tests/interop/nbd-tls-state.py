# SPDX-License-Identifier: BSD-3-Clause
"""STARTTLS with a raw client (Python's ssl): nothing negotiated in
plaintext survives the upgrade (structured replies, meta contexts), bytes
injected after STARTTLS in the same plaintext packet are refused, a second
STARTTLS is invalid, and TLS-required mode answers other options with
NBD_REP_ERR_TLS_REQD."""
import os
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time

IHAVEOPT = 0x49484156454F5054
OPT_STARTTLS, OPT_GO, OPT_STRUCTURED, OPT_SET_META, OPT_LIST = 5, 7, 8, 10, 3
ACK, ERR_INVALID, ERR_TLS_REQD = 1, 0x80000003, 0x80000005


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def sh(cmd):
    subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


tmp = os.path.abspath(tempfile.mkdtemp(prefix="nbd-tls-state.", dir="."))
pki = os.path.join(tmp, "pki")
os.mkdir(pki)
sh("certtool --generate-privkey --outfile %s/ca-key.pem" % pki)
with open(pki + "/ca.info", "w") as f:
    f.write("cn = test CA\nca\ncert_signing_key\nexpiration_days = 2\n")
sh("certtool --generate-self-signed --load-privkey {0}/ca-key.pem --template {0}/ca.info "
   "--outfile {0}/ca-cert.pem".format(pki))
sh("certtool --generate-privkey --outfile %s/server-key.pem" % pki)
with open(pki + "/server.info", "w") as f:
    f.write("cn = localhost\ndns_name = localhost\ntls_www_server\nencryption_key\n"
            "signing_key\nexpiration_days = 2\n")
sh("certtool --generate-certificate --load-ca-certificate {0}/ca-cert.pem "
   "--load-ca-privkey {0}/ca-key.pem --load-privkey {0}/server-key.pem "
   "--template {0}/server.info --outfile {0}/server-cert.pem".format(pki))
img = os.path.join(tmp, "disk.raw")
with open(img, "wb") as f:
    f.truncate(1 << 20)
sock = os.path.join(tmp, "s.sock")
srv = subprocess.Popen([os.environ["VDISK_NBD"], "-k", sock, "-f", "raw", "-t", "-e", "0",
                        "--tls-creds", pki, img])
try:
    for _ in range(200):
        if os.path.exists(sock):
            break
        time.sleep(0.05)
    else:
        fail("server did not start")

    def recv_all(s, n):
        b = b""
        while len(b) < n:
            c = s.recv(n - len(b))
            if not c:
                raise EOFError
            b += c
        return b

    def start():
        s = socket.socket(socket.AF_UNIX)
        s.connect(sock)
        s.settimeout(10)
        recv_all(s, 18)
        s.sendall(struct.pack(">I", 1))
        return s

    def option(s, opt, data=b""):
        s.sendall(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)
        reps = []
        while True:
            _, _, typ, ln = struct.unpack(">QIII", recv_all(s, 20))
            reps.append((typ, recv_all(s, ln)))
            if typ == ACK or typ & 0x80000000:
                return reps

    def upgrade(s):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(pki + "/ca-cert.pem")
        return ctx.wrap_socket(s, server_hostname="localhost")

    meta = struct.pack(">II", 0, 1) + struct.pack(">I", 15) + b"base:allocation"

    # before TLS: everything but STARTTLS is refused
    s = start()
    for opt in (OPT_STRUCTURED, OPT_LIST, OPT_SET_META):
        r = option(s, opt, meta if opt == OPT_SET_META else b"")
        if r[-1][0] != ERR_TLS_REQD:
            fail("option %d before TLS: %r" % (opt, r))
    if option(s, OPT_STARTTLS)[-1][0] != ACK:
        fail("STARTTLS refused")
    t = upgrade(s)
    # state from before the upgrade is gone: meta contexts need structured
    # replies negotiated again, inside TLS
    r = option(t, OPT_SET_META, meta)
    if r[-1][0] != ERR_INVALID:
        fail("SET_META_CONTEXT without structured replies inside TLS: %r" % r)
    if option(t, OPT_STARTTLS)[-1][0] != ERR_INVALID:
        fail("second STARTTLS not refused")
    if option(t, OPT_STRUCTURED)[-1][0] != ACK:
        fail("structured replies inside TLS")
    r = option(t, OPT_SET_META, meta)
    if r[-1][0] != ACK or r[0][1][4:] != b"base:allocation":
        fail("SET_META_CONTEXT inside TLS: %r" % r)
    t.close()

    # plaintext bytes sent right behind STARTTLS are not trusted
    s = start()
    s.sendall(struct.pack(">QII", IHAVEOPT, OPT_STARTTLS, 0) +
              struct.pack(">QII", IHAVEOPT, OPT_STRUCTURED, 0))
    try:
        _, _, typ, ln = struct.unpack(">QIII", recv_all(s, 20))
        upgrade(s)
        fail("TLS started although plaintext followed STARTTLS")
    except (EOFError, ssl.SSLError, ConnectionResetError, OSError):
        pass
    s.close()
    if srv.poll() is not None:
        fail("server died")
finally:
    srv.terminate()
    srv.wait(10)
print("ok")
