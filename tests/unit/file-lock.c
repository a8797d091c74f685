/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Image locking of the file protocol (src/protocols/file-lock.c).
 *
 * Without arguments: in-process tests (OFD locks conflict between two
 * opens in one process, so everything QEMU does between processes can be
 * checked here), including vd_lock_perms against the table measured on
 * QEMU 7.2's tools (see the table below).
 *
 * With arguments it is the helper the interop tests use to hold or try an
 * image the way a vdisk tool would:
 *   unit-file-lock hold FILE [MODE...] [secs=N]   open, print "locked", sleep
 *   unit-file-lock try FILE [MODE...]             open and close; exit 1 and
 *                                                 print the error on failure
 * MODE words: rw, resize, share (force-share), noio, fmt (a format that is
 * not raw sits on top: QEMU's storage permissions), locking=on|off|auto.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../src/protocols/file.h"
#include "internal.h"

#define CHECK(cond, ...)                                                                       \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                    \
            fprintf(stderr, __VA_ARGS__);                                                      \
            fputc('\n', stderr);                                                               \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

static vd_node *open_mode(const char *fn, unsigned flags, bool fmt, const char *locking,
                          vd_error **err)
{
    vd_opts *o = vd_opts_new();
    vd_opts_set(o, "driver", "file");
    if (locking) {
        vd_opts_set(o, "locking", locking);
    }
    vd_node *bs = vd_node_open_file(fn, o, flags | (fmt ? VD_NODE_UNDER_FORMAT : 0), err);
    vd_opts_free(o);
    return bs;
}

/* Which of the lock bytes 100..103 and 200..203 some open file other than
 * a fresh descriptor holds: bit i = byte 100+i, bit 4+i = byte 200+i. */
static unsigned held_bytes(const char *fn)
{
    int fd = open(fn, O_RDONLY);
    unsigned held = 0;
    CHECK(fd >= 0, "open %s", fn);
    for (int i = 0; i < 8; i++) {
        struct flock fl = {
            .l_type = F_WRLCK,
            .l_whence = SEEK_SET,
            .l_start = (i < 4 ? 100 : 196) + i,
            .l_len = 1,
        };
        CHECK(fcntl(fd, F_OFD_GETLK, &fl) == 0, "F_OFD_GETLK");
        if (fl.l_type != F_UNLCK) {
            held |= 1u << i;
        }
    }
    close(fd);
    return held;
}

/* "100 101 203" -> bits */
static unsigned bytes_of(const char *list)
{
    unsigned bits = 0;
    for (const char *p = list; *p;) {
        char *end;
        long b = strtol(p, &end, 10);
        if (end == p) {
            break;
        }
        bits |= 1u << (b >= 200 ? b - 196 : b - 100);
        p = end;
    }
    return bits;
}

/* ----------------------------------------------------- the measured table */

/*
 * Lock bytes QEMU 7.2 holds on the protocol file, seen in /proc/locks and
 * with strace while qemu-io/qemu-img/qemu-nbd ran (see the report of the
 * file protocol work):
 *   raw or no format:  rw -> 100 101; ro -> 100; -U -> 100;
 *                      info (no I/O) -> none; resize (rw) -> 100 101 103
 *   qcow2 (any non-raw format): rw -> 100 101 103 201 203;
 *                      ro -> 100 201 203; -U -> 100; info -> 201 203
 * The columns: flags, format on top, the bytes.
 */
static const struct {
    unsigned flags;
    bool fmt;
    const char *bytes;
} qemu_table[] = {
    {VD_NODE_RDWR, false, "100 101"},
    {0, false, "100"},
    {VD_NODE_FORCE_SHARE, false, "100"},
    {VD_NODE_NO_IO, false, ""},
    {VD_NODE_NO_IO | VD_NODE_FORCE_SHARE, false, ""},
    {VD_NODE_RDWR | VD_NODE_RESIZE, false, "100 101 103"},
    {VD_NODE_RDWR, true, "100 101 103 201 203"},
    {0, true, "100 201 203"},
    {VD_NODE_FORCE_SHARE, true, "100"},
    {VD_NODE_NO_IO, true, "201 203"},
    {VD_NODE_NO_IO | VD_NODE_FORCE_SHARE, true, ""},
    {VD_NODE_RDWR | VD_NODE_RESIZE, true, "100 101 103 201 203"},
};

static void test_table(const char *fn)
{
    for (size_t i = 0; i < VD_ARRAY_SIZE(qemu_table); i++) {
        unsigned perm, shared;
        vd_lock_perms(qemu_table[i].flags, qemu_table[i].fmt, &perm, &shared);
        unsigned want = bytes_of(qemu_table[i].bytes);
        unsigned got = perm | ((~shared & VD_PERM_ALL) << 4);
        CHECK(got == want, "vd_lock_perms row %zu: 0x%x, want 0x%x", i, got, want);

        /* and the driver really holds exactly those bytes */
        vd_error *err = NULL;
        vd_node *bs = open_mode(fn, qemu_table[i].flags, qemu_table[i].fmt, NULL, &err);
        CHECK(bs, "open row %zu: %s", i, err ? err->msg : "?");
        CHECK(bs->perm == perm && bs->shared_perm == shared, "row %zu: node perms", i);
        CHECK(held_bytes(fn) == want, "row %zu: held 0x%x, want 0x%x", i, held_bytes(fn), want);
        vd_node_close(bs);
        CHECK(held_bytes(fn) == 0, "row %zu: bytes left after close", i);
    }
}

/* ------------------------------------------------------------- conflicts */

static void expect_conflict(const char *fn, unsigned flags, bool fmt, const char *msg)
{
    vd_error *err = NULL;
    vd_node *bs = open_mode(fn, flags, fmt, NULL, &err);
    CHECK(!bs, "open 0x%x fmt=%d should conflict", flags, fmt);
    /* QEMU's message, the file named in the hint (iotests 153, 182) */
    CHECK(err && strstr(err->msg, msg) && strstr(err->hint, fn),
          "message '%s' lacks '%s' or hint '%s' the file name", err ? err->msg : "", msg,
          err ? err->hint : "");
    CHECK(err->err == EAGAIN, "errno %d", err->err);
    vd_error_free(err);
}

static vd_node *expect_open(const char *fn, unsigned flags, bool fmt)
{
    vd_error *err = NULL;
    vd_node *bs = open_mode(fn, flags, fmt, NULL, &err);
    CHECK(bs, "open 0x%x fmt=%d: %s", flags, fmt, err ? err->msg : "?");
    return bs;
}

static void test_conflicts(const char *fn)
{
    /* A qcow2-like writer: nobody else may write, resize or read
     * without -U (it does not share write). */
    vd_node *w = expect_open(fn, VD_NODE_RDWR, true);
    expect_conflict(fn, VD_NODE_RDWR, true, "Failed to get \"write\" lock");
    expect_conflict(fn, VD_NODE_RDWR, false, "Failed to get \"write\" lock");
    expect_conflict(fn, 0, true, "Failed to get shared \"write\" lock");
    expect_conflict(fn, VD_NODE_RDWR | VD_NODE_RESIZE, false, "Failed to get \"write\" lock");
    /* raw readers share everything and need only consistent read */
    vd_node *r = expect_open(fn, 0, false);
    vd_node_close(r);
    r = expect_open(fn, VD_NODE_FORCE_SHARE, true);
    vd_node_close(r);
    /* creating (truncating) the image in use must fail and change nothing */
    struct stat before, after;
    CHECK(stat(fn, &before) == 0, "stat");
    vd_opts *o = vd_opts_new();
    vd_opts_set(o, "size", "4096");
    vd_error *err = NULL;
    CHECK(vd_create_file(fn, o, &err) < 0, "create over an image in use");
    CHECK(err && strstr(err->msg, "Failed to get \"write\" lock"), "%s", err ? err->msg : "");
    vd_error_free(err);
    vd_opts_free(o);
    CHECK(stat(fn, &after) == 0 && after.st_size == before.st_size, "create truncated it");
    vd_node_close(w);

    /* A raw writer (like qemu-io/qemu-nbd rw on raw): shares everything,
     * so another raw writer is fine, but a format (which refuses to share
     * write) and a resize are not. */
    w = expect_open(fn, VD_NODE_RDWR, false);
    vd_node *w2 = expect_open(fn, VD_NODE_RDWR, false);
    vd_node_close(w2);
    expect_conflict(fn, 0, true, "Failed to get shared \"write\" lock");
    vd_node *rs = expect_open(fn, VD_NODE_RDWR | VD_NODE_RESIZE, false);
    vd_node_close(rs);
    vd_node_close(w);

    /* locking=off neither takes nor checks anything */
    w = expect_open(fn, VD_NODE_RDWR, true);
    err = NULL;
    vd_node *off = open_mode(fn, VD_NODE_RDWR, true, "off", &err);
    CHECK(off, "locking=off: %s", err ? err->msg : "");
    vd_node_close(off);
    vd_node_close(w);
    CHECK(held_bytes(fn) == 0, "bytes left");
    off = open_mode(fn, VD_NODE_RDWR, true, "off", &err);
    CHECK(off && held_bytes(fn) == 0, "locking=off took locks");
    vd_node_close(off);
    /* locking=on works like auto here (OFD locks exist) */
    vd_node *on = open_mode(fn, VD_NODE_RDWR, false, "on", &err);
    CHECK(on && held_bytes(fn) == bytes_of("100 101"), "locking=on");
    vd_node_close(on);
    /* bad value */
    err = NULL;
    CHECK(!open_mode(fn, 0, false, "maybe", &err) && err, "locking=maybe accepted");
    vd_error_free(err);

    /* force-share is only for read-only */
    err = NULL;
    CHECK(!open_mode(fn, VD_NODE_RDWR | VD_NODE_FORCE_SHARE, false, NULL, &err),
          "rw + force-share accepted");
    CHECK(err && strstr(err->msg, "read-only"), "%s", err ? err->msg : "");
    vd_error_free(err);
}

/* vd_file_set_perm: upgrade fails cleanly on conflict, downgrade releases. */
static void test_set_perm(const char *fn)
{
    vd_node *a = expect_open(fn, 0, false); /* 100 */
    vd_node *b = expect_open(fn, 0, false); /* 100 */
    unsigned perm, shared;
    vd_lock_perms(0, true, &perm, &shared);
    vd_error *err = NULL;
    CHECK(vd_file_set_perm(a, perm, shared, &err) == 0, "tighten: %s", err ? err->msg : "");
    CHECK(held_bytes(fn) == bytes_of("100 201 203"), "after tighten 0x%x", held_bytes(fn));
    /* b now wants write: a does not share it */
    vd_lock_perms(VD_NODE_RDWR, false, &perm, &shared);
    CHECK(vd_file_set_perm(b, perm, shared, &err) < 0, "b got write");
    CHECK(err && strstr(err->msg, "Failed to get \"write\" lock"), "%s", err ? err->msg : "");
    vd_error_free(err);
    err = NULL;
    CHECK(b->perm == VD_PERM_CONSISTENT_READ && b->shared_perm == VD_PERM_ALL, "b changed");
    /* b's failed attempt left nothing behind: only a's bytes (and b's 100) */
    vd_node_close(a);
    CHECK(held_bytes(fn) == bytes_of("100"), "after close a: 0x%x", held_bytes(fn));
    CHECK(vd_file_set_perm(b, perm, shared, &err) == 0, "b write: %s", err ? err->msg : "");
    CHECK(held_bytes(fn) == bytes_of("100 101"), "b rw 0x%x", held_bytes(fn));
    CHECK(vd_file_set_perm(b, 0, VD_PERM_ALL, &err) == 0, "b drop");
    CHECK(held_bytes(fn) == 0, "b dropped all 0x%x", held_bytes(fn));
    vd_node_close(b);
}

/* ------------------------------------------------------------- helper */

static int helper(int argc, char **argv)
{
    const char *fn = argv[2];
    unsigned flags = 0;
    bool fmt = false;
    const char *locking = NULL;
    int secs = 30;
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "rw")) {
            flags |= VD_NODE_RDWR;
        } else if (!strcmp(argv[i], "resize")) {
            flags |= VD_NODE_RESIZE;
        } else if (!strcmp(argv[i], "share")) {
            flags |= VD_NODE_FORCE_SHARE;
        } else if (!strcmp(argv[i], "noio")) {
            flags |= VD_NODE_NO_IO;
        } else if (!strcmp(argv[i], "fmt")) {
            fmt = true;
        } else if (!strncmp(argv[i], "locking=", 8)) {
            locking = argv[i] + 8;
        } else if (!strncmp(argv[i], "secs=", 5)) {
            secs = atoi(argv[i] + 5);
        } else {
            fprintf(stderr, "unknown mode %s\n", argv[i]);
            return 2;
        }
    }
    vd_error *err = NULL;
    vd_node *bs = open_mode(fn, flags, fmt, locking, &err);
    if (!bs) {
        fprintf(stderr, "unit-file-lock: %s\n%s", err ? err->msg : "error",
                err ? err->hint : "");
        vd_error_free(err);
        return 1;
    }
    if (!strcmp(argv[1], "hold")) {
        printf("locked\n");
        fflush(stdout);
        sleep((unsigned)secs);
    }
    vd_node_close(bs);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && (!strcmp(argv[1], "hold") || !strcmp(argv[1], "try"))) {
        return helper(argc, argv);
    }
    char dir[] = "/tmp/vdisk-file-lock.XXXXXX";
    CHECK(mkdtemp(dir), "mkdtemp");
    char fn[64];
    snprintf(fn, sizeof(fn), "%s/img", dir);
    int fd = open(fn, O_RDWR | O_CREAT, 0644);
    CHECK(fd >= 0 && ftruncate(fd, 1 << 20) == 0, "create");
    close(fd);

    test_table(fn);
    test_conflicts(fn);
    test_set_perm(fn);

    unlink(fn);
    rmdir(dir);
    printf("ok\n");
    return 0;
}
