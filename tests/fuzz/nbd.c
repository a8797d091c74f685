/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The NBD server's handshake and request parsing: the input is everything
 * a client sends (client flags, options, requests, payloads), fed through
 * a socket pair to vd_nbd_server_handle_fd while a thread drains the
 * replies.  The export is a null-co image, so requests cost no disk I/O.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "vdisk-nbd.h"
#include "vdisk.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static vd_nbd_server *fuzz_srv;

typedef struct feeder {
    int fd;
    const uint8_t *data;
    size_t size;
} feeder;

/* Write the input, read and drop every reply, until the server hangs up. */
static void *feed(void *opaque)
{
    feeder *f = opaque;
    size_t done = 0;
    bool wr_open = true;
    uint8_t sink[65536];
    for (;;) {
        struct pollfd p = {.fd = f->fd, .events = POLLIN | (wr_open ? POLLOUT : 0)};
        if (poll(&p, 1, -1) < 0) {
            break;
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = recv(f->fd, sink, sizeof(sink), MSG_DONTWAIT);
            if (n == 0 || (n < 0 && (p.revents & (POLLHUP | POLLERR)))) {
                break;
            }
        }
        if (wr_open && (p.revents & POLLOUT)) {
            ssize_t n =
                send(f->fd, f->data + done, f->size - done, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n > 0) {
                done += (size_t)n;
            }
            if (n < 0 && errno != EAGAIN && errno != EINTR) {
                wr_open = false;
            }
            if (done == f->size) {
                /* end of input: the server sees EOF */
                shutdown(f->fd, SHUT_WR);
                wr_open = false;
            }
        }
    }
    close(f->fd);
    return NULL;
}

static void fuzz_init(void)
{
    vd_opts *o = vd_opts_new();
    vd_opts_set(o, "driver", "null-co");
    vd_opts_set(o, "size", "67108864");
    vd_opts_set(o, "read-zeroes", "on");
    vd_image *img = vd_open(NULL, NULL, o, VD_OPEN_RDWR);
    vd_opts_free(o);
    if (!img) {
        fprintf(stderr, "fuzz-nbd: %s\n", vd_get_error());
        abort();
    }
    fuzz_srv = vd_nbd_server_new();
    vd_nbd_export_opts e = {
        .name = "", .image = img, .allocation_depth = true, .multi_conn = -1};
    vd_nbd_export_opts e2 = {.name = "ro",
                             .description = "read-only",
                             .image = img,
                             .offset = 4096,
                             .read_only = true,
                             .multi_conn = -1};
    if (!fuzz_srv || vd_nbd_server_add_export(fuzz_srv, &e) < 0 ||
        vd_nbd_server_add_export(fuzz_srv, &e2) < 0) {
        abort();
    }
    /* one worker keeps runs reproducible; EOF ends every run */
    vd_nbd_server_set_threads(fuzz_srv, 1);
    vd_nbd_server_set_handshake_limit(fuzz_srv, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!fuzz_srv) {
        fuzz_init();
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        return 0;
    }
    feeder f = {.fd = sv[1], .data = data, .size = size};
    pthread_t t;
    if (pthread_create(&t, NULL, feed, &f)) {
        close(sv[0]);
        close(sv[1]);
        return 0;
    }
    vd_nbd_server_handle_fd(fuzz_srv, sv[0]);
    pthread_join(t, NULL);
    return 0;
}
