/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * aio_read, aio_write and aio_flush.  A request is queued to a small pool
 * of worker threads (the library's I/O calls are thread-safe), so many
 * requests are really in flight at once.  Workers never print: finished
 * requests wait in a list that the main thread reports from before each
 * command, while sleeping, and on aio_flush / close / exit, so every
 * report is whole and lines of different requests never mix.  As with
 * qemu-io, a submitted request counts as a success for the exit status.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vdisk-io.h"

#define AIO_MAX_WORKERS 16

typedef struct aio_req {
    bool is_write;
    bool zero;
    int64_t offset;
    int64_t size;
    uint8_t *buf;
    unsigned flags;
    vio_io_flags f; /* -C -q -v -P */
    struct timespec t1, t2;
    int ret;
    struct aio_req *next;
} aio_req;

static pthread_mutex_t aio_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t aio_work = PTHREAD_COND_INITIALIZER;
static pthread_cond_t aio_done_cond = PTHREAD_COND_INITIALIZER;
static aio_req *queue_head, *queue_tail; /* waiting for a worker */
static aio_req *done_head, *done_tail;   /* finished, not yet reported */
static int in_flight;                    /* queued or running */
static int workers, idle_workers;

static void aio_execute(aio_req *r)
{
    int ret = vio_check_request(r->offset, r->size);
    if (ret == 0) {
        int rc;
        if (!r->is_write) {
            rc = vd_pread(vio.img, r->buf, (size_t)r->size, (uint64_t)r->offset);
        } else if (r->zero) {
            rc = vd_pwrite_zeroes(vio.img, (uint64_t)r->offset, (uint64_t)r->size, r->flags);
        } else {
            rc = vd_pwrite(vio.img, r->buf, (size_t)r->size, (uint64_t)r->offset, r->flags);
        }
        if (rc < 0) {
            int e = vd_get_errno();
            ret = -(e ? e : EIO);
        }
    }
    r->ret = ret;
}

/* Run r, then move it to the finished list; called without aio_lock. */
static void aio_run(aio_req *r)
{
    aio_execute(r);
    vio_now(&r->t2);

    pthread_mutex_lock(&aio_lock);
    if (done_tail) {
        done_tail->next = r;
    } else {
        done_head = r;
    }
    done_tail = r;
    in_flight--;
    pthread_cond_broadcast(&aio_done_cond);
    pthread_mutex_unlock(&aio_lock);
}

static void *aio_worker(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&aio_lock);
    for (;;) {
        while (!queue_head) {
            idle_workers++;
            pthread_cond_wait(&aio_work, &aio_lock);
            idle_workers--;
        }
        aio_req *r = queue_head;
        queue_head = r->next;
        if (!queue_head) {
            queue_tail = NULL;
        }
        r->next = NULL;
        pthread_mutex_unlock(&aio_lock);
        aio_run(r);
        pthread_mutex_lock(&aio_lock);
    }
    return NULL;
}

static void aio_submit(aio_req *r)
{
    vio_now(&r->t1);
    pthread_mutex_lock(&aio_lock);
    r->next = NULL;
    if (queue_tail) {
        queue_tail->next = r;
    } else {
        queue_head = r;
    }
    queue_tail = r;
    in_flight++;
    if (idle_workers == 0 && workers < AIO_MAX_WORKERS) {
        pthread_t th;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&th, &attr, aio_worker, NULL) == 0) {
            workers++;
        }
        pthread_attr_destroy(&attr);
    }
    pthread_cond_signal(&aio_work);
    bool no_worker = workers == 0;
    pthread_mutex_unlock(&aio_lock);
    if (no_worker) {
        /* could not start any thread: run it here */
        pthread_mutex_lock(&aio_lock);
        queue_head = queue_tail = NULL;
        pthread_mutex_unlock(&aio_lock);
        aio_run(r);
    }
}

static void aio_report(aio_req *r)
{
    struct timespec t = vio_tsub(r->t2, r->t1);

    if (r->is_write) {
        if (r->ret < 0) {
            printf("aio_write failed: %s\n", strerror(-r->ret));
        } else if (!r->f.qflag) {
            vio_print_report("wrote", &t, r->offset, r->size, r->size, 1, r->f.cflag);
        }
    } else {
        if (r->ret < 0) {
            printf("readv failed: %s\n", strerror(-r->ret));
        } else {
            /* as in qemu-io, a mismatch does not change the exit status */
            (void)vio_read_report(r->buf, r->offset, r->size, 0, r->size, &r->f, &t);
        }
    }
    vio_free(r->buf);
    free(r);
}

void vio_aio_poll(void)
{
    pthread_mutex_lock(&aio_lock);
    aio_req *list = done_head;
    done_head = done_tail = NULL;
    pthread_mutex_unlock(&aio_lock);
    while (list) {
        aio_req *next = list->next;
        aio_report(list);
        list = next;
    }
    fflush(stdout);
}

void vio_aio_drain(void)
{
    pthread_mutex_lock(&aio_lock);
    while (in_flight > 0) {
        pthread_cond_wait(&aio_done_cond, &aio_lock);
    }
    pthread_mutex_unlock(&aio_lock);
    vio_aio_poll();
}

/* -------------------------------------------------------------- aio_read */

static void aio_read_help(void)
{
    printf("\n"
           " reads bytes at an offset asynchronously\n"
           "\n"
           " Example:\n"
           " 'aio_read -v 512 1k 1k' - reads 2 KiB at byte 512 and dumps them in hex\n"
           "\n"
           " The command returns at once; the report is printed when the read\n"
           " completes.  aio_flush waits for every outstanding request.  A failure\n"
           " or a pattern mismatch does not change the exit status.\n"
           " -C, -- print statistics as comma-separated values\n"
           " -P, -- verify that every byte read equals the pattern byte\n"
           " -i, -- count an invalid request (accepted, does nothing)\n"
           " -v, -- dump the data read in hex\n"
           " -q, -- quiet: print no statistics\n"
           "\n");
}

static int aio_read_f(int argc, char **argv);

const vio_cmd vio_cmd_aio_read = {
    .name = "aio_read",
    .fn = aio_read_f,
    .argmin = 2,
    .argmax = -1,
    .args = "[-Ciqv] [-P pattern] off len [len..]",
    .oneline = "asynchronously reads a number of bytes",
    .help = aio_read_help,
};

static int aio_read_f(int argc, char **argv)
{
    aio_req *r = calloc(1, sizeof(*r));
    int c;

    if (!r) {
        return -ENOMEM;
    }
    while ((c = getopt(argc, argv, "CP:iqv")) != -1) {
        if (c == 'i') {
            printf("injecting invalid read request\n");
            free(r);
            return 0;
        }
        int ret = vio_io_flag(c, &r->f);
        if (ret <= 0) {
            free(r);
            return ret < 0 ? ret : vio_usage(&vio_cmd_aio_read);
        }
    }
    if (optind > argc - 2) {
        free(r);
        return vio_usage(&vio_cmd_aio_read);
    }
    r->offset = vio_parse_num(argv[optind]);
    if (r->offset < 0) {
        int ret = (int)r->offset;
        free(r);
        return ret;
    }
    optind++;
    r->size = vio_sum_lengths(&argv[optind], argc - optind);
    if (r->size < 0) {
        free(r);
        return -EINVAL;
    }
    r->buf = vio_alloc((size_t)r->size, 0xab);
    if (!r->buf) {
        free(r);
        return -ENOMEM;
    }
    aio_submit(r);
    return 0;
}

/* ------------------------------------------------------------- aio_write */

static void aio_write_help(void)
{
    printf("\n"
           " writes bytes at an offset asynchronously\n"
           "\n"
           " Example:\n"
           " 'aio_write 512 1k 1k' - writes 2 KiB at byte 512\n"
           "\n"
           " The data is the pattern byte 0xcd unless -P or -z says otherwise.\n"
           " The command returns at once; the report is printed when the write\n"
           " completes.  aio_flush waits for every outstanding request.  A failure\n"
           " does not change the exit status.\n"
           " -P, -- fill the data with this pattern byte\n"
           " -C, -- print statistics as comma-separated values\n"
           " -f, -- force unit access: the data is on stable storage on completion\n"
           " -i, -- count an invalid request (accepted, does nothing)\n"
           " -q, -- quiet: print no statistics\n"
           " -u, -- with -z, the range may be deallocated\n"
           " -z, -- write zeroes (efficiently, when the format can)\n"
           "\n");
}

static int aio_write_f(int argc, char **argv);

const vio_cmd vio_cmd_aio_write = {
    .name = "aio_write",
    .fn = aio_write_f,
    .argmin = 2,
    .argmax = -1,
    .flags = VIO_CMD_WRITE,
    .args = "[-Cfiquz] [-P pattern] off len [len..]",
    .oneline = "asynchronously writes a number of bytes",
    .help = aio_write_help,
};

static int aio_write_f(int argc, char **argv)
{
    aio_req *r = calloc(1, sizeof(*r));
    int c;
    unsigned flags = 0;

    if (!r) {
        return -ENOMEM;
    }
    r->is_write = true;
    r->f.pattern = 0xcd;
    while ((c = getopt(argc, argv, "CfiqP:uz")) != -1) {
        switch (c) {
        case 'f':
            flags |= VD_REQ_FUA;
            break;
        case 'u':
            flags |= VD_REQ_MAY_UNMAP;
            break;
        case 'i':
            printf("injecting invalid write request\n");
            free(r);
            return 0;
        case 'z':
            r->zero = true;
            break;
        default: {
            /* -C -q -P; qemu-io lets -P pass with -z (the zero write wins) */
            int ret = vio_io_flag(c, &r->f);
            if (ret <= 0) {
                free(r);
                return ret < 0 ? ret : vio_usage(&vio_cmd_aio_write);
            }
            break;
        }
        }
    }
    if (optind > argc - 2) {
        free(r);
        return vio_usage(&vio_cmd_aio_write);
    }
    if (r->zero && optind != argc - 2) {
        printf("-z supports only a single length parameter\n");
        free(r);
        return -EINVAL;
    }
    if ((flags & VD_REQ_MAY_UNMAP) && !r->zero) {
        printf("-u requires -z to be specified\n");
        free(r);
        return -EINVAL;
    }
    r->offset = vio_parse_num(argv[optind]);
    if (r->offset < 0) {
        int ret = (int)r->offset;
        free(r);
        return ret;
    }
    optind++;
    if (r->zero) {
        int64_t count = vio_parse_num(argv[optind]);
        if (count < 0) {
            free(r);
            return (int)count;
        }
        r->size = count;
    } else {
        r->size = vio_sum_lengths(&argv[optind], argc - optind);
        if (r->size < 0) {
            free(r);
            return -EINVAL;
        }
        r->buf = vio_alloc((size_t)r->size, r->f.pattern);
        if (!r->buf) {
            free(r);
            return -ENOMEM;
        }
    }
    r->flags = vio.writethrough ? flags | VD_REQ_FUA : flags;
    aio_submit(r);
    return 0;
}

/* ------------------------------------------------------------- aio_flush */

static int aio_flush_f(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    vio_aio_drain();
    return 0;
}

const vio_cmd vio_cmd_aio_flush = {
    .name = "aio_flush",
    .fn = aio_flush_f,
    .oneline = "completes all outstanding aio requests",
};
