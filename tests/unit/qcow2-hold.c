/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * qcow2: a cluster that an unlocked read or in-place write still uses must
 * not be freed and reused while that request runs.  A gate around the file
 * node stops the data read (or write) of cluster 0 at the file; meanwhile
 * cluster 0 is discarded and cluster 1 is written (a new allocation, which
 * would take the freed cluster).  Then the gate opens: the read must not
 * return cluster 1's data, the write must not land in cluster 1.
 */
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

#define CS 65536u

static int failures;
#define CHECK(cond)                                                                            \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);          \
            failures++;                                                                        \
        }                                                                                      \
    } while (0)

/* ------------------------------------------------------------- the gate */

static const vd_driver *orig;
static vd_driver gate_drv;
static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static enum { GATE_OFF, GATE_READ, GATE_WRITE } gate_armed;
static bool gate_caught, gate_open;
static uint64_t gate_offset;

/* Stop the first request of the armed kind of one cluster until opened. */
static void gate(int kind, uint64_t off, uint64_t len)
{
    pthread_mutex_lock(&gate_lock);
    if ((int)gate_armed == kind && len == CS) {
        gate_armed = GATE_OFF;
        gate_caught = true;
        gate_offset = off;
        pthread_cond_broadcast(&gate_cond);
        while (!gate_open) {
            pthread_cond_wait(&gate_cond, &gate_lock);
        }
    }
    pthread_mutex_unlock(&gate_lock);
}

static int gate_pread(vd_node *bs, uint64_t off, uint64_t len, void *buf, unsigned flags)
{
    gate(GATE_READ, off, len);
    return orig->pread(bs, off, len, buf, flags);
}

static int gate_pwrite(vd_node *bs, uint64_t off, uint64_t len, const void *buf,
                       unsigned flags)
{
    gate(GATE_WRITE, off, len);
    return orig->pwrite(bs, off, len, buf, flags);
}

static void arm(int kind)
{
    pthread_mutex_lock(&gate_lock);
    gate_armed = kind;
    gate_caught = gate_open = false;
    pthread_mutex_unlock(&gate_lock);
}

static uint64_t wait_caught(void)
{
    pthread_mutex_lock(&gate_lock);
    while (!gate_caught) {
        pthread_cond_wait(&gate_cond, &gate_lock);
    }
    uint64_t off = gate_offset;
    pthread_mutex_unlock(&gate_lock);
    return off;
}

static void release(void)
{
    pthread_mutex_lock(&gate_lock);
    gate_open = true;
    pthread_cond_broadcast(&gate_cond);
    pthread_mutex_unlock(&gate_lock);
}

/* --------------------------------------------------------------- tests */

typedef struct job {
    vd_node *bs;
    uint8_t *buf;
    bool write;
    int ret;
} job;

static void *run_job(void *opaque)
{
    job *j = opaque;
    j->ret = j->write ? vd_node_pwrite(j->bs, 0, CS, j->buf, 0)
                      : vd_node_pread(j->bs, 0, CS, j->buf, 0);
    return NULL;
}

static bool all(const uint8_t *b, uint8_t v)
{
    for (size_t i = 0; i < CS; i++) {
        if (b[i] != v) {
            return false;
        }
    }
    return true;
}

static vd_node *fresh(const char *fn)
{
    vd_opts *o = vd_opts_new();
    vd_opts_set(o, "size", "16M");
    if (vd_create(fn, "qcow2", o) < 0) {
        fprintf(stderr, "create %s: %s\n", fn, vd_get_error());
        exit(1);
    }
    vd_opts_free(o);
    vd_error *err = NULL;
    o = vd_opts_new();
    vd_opts_set(o, "discard", "unmap"); /* QEMU's default ignores discards */
    vd_node *bs = vd_node_open(fn, "qcow2", o, VD_NODE_RDWR, &err);
    vd_opts_free(o);
    if (!bs) {
        fprintf(stderr, "open %s: %s\n", fn, err ? err->msg : "?");
        exit(1);
    }
    orig = bs->file->drv;
    gate_drv = *orig;
    gate_drv.pread = gate_pread;
    gate_drv.pwrite = gate_pwrite;
    bs->file->drv = &gate_drv;
    return bs;
}

static void close_node(vd_node *bs)
{
    bs->file->drv = orig;
    vd_node_close(bs);
}

static void scenario(bool write)
{
    vd_node *bs = fresh(write ? "hold-w.qcow2" : "hold-r.qcow2");
    uint8_t *a = malloc(CS), *b = malloc(CS), *buf = malloc(CS);
    memset(a, 'A', CS);
    memset(b, 'B', CS);
    memset(buf, write ? 'W' : 0, CS);
    CHECK(vd_node_pwrite(bs, 0, CS, a, 0) == 0);
    CHECK(vd_node_flush(bs) == 0);

    arm(write ? GATE_WRITE : GATE_READ);
    job j = {bs, buf, write, -1};
    pthread_t t;
    pthread_create(&t, NULL, run_job, &j);
    uint64_t host = wait_caught();
    /* cluster 0 goes away and cluster 1 is allocated while the request waits */
    CHECK(vd_node_discard(bs, 0, CS) == 0);
    CHECK(vd_node_pwrite(bs, CS, CS, b, 0) == 0);
    release();
    pthread_join(t, NULL);
    CHECK(j.ret == 0);

    uint8_t *rd = malloc(CS);
    if (write) {
        CHECK(vd_node_pread(bs, CS, CS, rd, 0) == 0);
        if (!all(rd, 'B')) {
            fprintf(stderr, "in-place write to host %#llx landed in a reused cluster\n",
                    (unsigned long long)host);
            failures++;
        }
    } else {
        if (!all(buf, 'A') && !all(buf, 0)) {
            fprintf(stderr, "read of host %#llx returned another cluster's data ('%c')\n",
                    (unsigned long long)host, buf[0]);
            failures++;
        }
    }
    /* the deferred free happened: a third cluster can reuse the space */
    CHECK(vd_node_pwrite(bs, 2 * CS, CS, a, 0) == 0);
    CHECK(vd_node_pread(bs, 2 * CS, CS, rd, 0) == 0 && all(rd, 'A'));
    CHECK(vd_node_pread(bs, CS, CS, rd, 0) == 0 && (all(rd, 'B') || write));
    free(rd);
    free(a);
    free(b);
    free(buf);
    close_node(bs);

    /* refcounts agree with the tables after the deferred free */
    vd_error *err = NULL;
    vd_node *ck = vd_node_open(write ? "hold-w.qcow2" : "hold-r.qcow2", "qcow2", NULL, 0, &err);
    CHECK(ck != NULL);
    if (ck && ck->drv->check) {
        vd_check_result r;
        memset(&r, 0, sizeof(r));
        CHECK(ck->drv->check(ck, &r, 0, &err) == 0);
        CHECK(r.corruptions == 0 && r.leaks == 0);
        if (r.corruptions || r.leaks) {
            fprintf(stderr, "check: %lld corruptions, %lld leaks\n", (long long)r.corruptions,
                    (long long)r.leaks);
        }
    }
    if (ck) {
        vd_node_close(ck);
    }
}

int main(void)
{
    scenario(false);
    scenario(true);
    if (failures) {
        fprintf(stderr, "%d failures\n", failures);
        return 1;
    }
    printf("ok\n");
    return 0;
}
