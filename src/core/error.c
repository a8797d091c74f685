/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Errors: vd_error carries -errno plus a message inside the library; the
 * public API keeps the last one per thread (vd_get_error / vd_get_errno /
 * vd_get_error_hint).
 */
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

static _Thread_local int public_errno;
static _Thread_local char public_msg[1024];
static _Thread_local char public_hint[1024];

const char *vd_get_error(void)
{
    return public_msg;
}

int vd_get_errno(void)
{
    return public_errno;
}

const char *vd_get_error_hint(void)
{
    return public_hint;
}

static int abs_err(int err)
{
    if (err < 0) {
        err = -err;
    }
    return err ? err : EIO;
}

static int error_vset(vd_error **errp, int err, bool with_errno, const char *fmt, va_list ap)
{
    err = abs_err(err);
    if (!errp || *errp) {
        return -err;
    }
    vd_error *e = calloc(1, sizeof(*e));
    if (!e) {
        return -err;
    }
    e->err = err;
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    if (with_errno) {
        size_t n = strlen(e->msg);
        snprintf(e->msg + n, sizeof(e->msg) - n, ": %s", strerror(err));
    }
    *errp = e;
    return -err;
}

int vd_error_set(vd_error **errp, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = error_vset(errp, err, false, fmt, ap);
    va_end(ap);
    return r;
}

int vd_error_setg_errno(vd_error **errp, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = error_vset(errp, err, true, fmt, ap);
    va_end(ap);
    return r;
}

void vd_error_prepend(vd_error **errp, const char *fmt, ...)
{
    if (!errp || !*errp) {
        return;
    }
    char prefix[1024], old[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    memcpy(old, (*errp)->msg, sizeof(old));
    size_t n = strnlen(prefix, sizeof((*errp)->msg) - 1);
    memcpy((*errp)->msg, prefix, n);
    snprintf((*errp)->msg + n, sizeof((*errp)->msg) - n, "%s", old);
}

void vd_error_append_hint(vd_error **errp, const char *fmt, ...)
{
    if (!errp || !*errp) {
        return;
    }
    char *hint = (*errp)->hint;
    size_t n = strnlen(hint, sizeof((*errp)->hint) - 1);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(hint + n, sizeof((*errp)->hint) - n, fmt, ap);
    va_end(ap);
}

void vd_error_free(vd_error *err)
{
    free(err);
}

void vd_set_public_error(int err, const char *fmt, ...)
{
    public_errno = abs_err(err);
    public_hint[0] = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(public_msg, sizeof(public_msg), fmt, ap);
    va_end(ap);
}

void vd_error_publish(vd_error *err)
{
    if (!err) {
        vd_set_public_error(EIO, "unknown error");
        return;
    }
    public_errno = err->err;
    memcpy(public_msg, err->msg, sizeof(public_msg));
    public_msg[sizeof(public_msg) - 1] = 0;
    memcpy(public_hint, err->hint, sizeof(public_hint));
    public_hint[sizeof(public_hint) - 1] = 0;
    free(err);
}

static pthread_mutex_t warn_lock = PTHREAD_MUTEX_INITIALIZER;
static vd_warning_fn *warn_fn;
static void *warn_opaque;

void vd_set_warning_handler(vd_warning_fn *fn, void *opaque)
{
    pthread_mutex_lock(&warn_lock);
    warn_fn = fn;
    warn_opaque = opaque;
    pthread_mutex_unlock(&warn_lock);
}

void vd_warn(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* held while calling: a handler being replaced is never called after */
    pthread_mutex_lock(&warn_lock);
    if (warn_fn) {
        warn_fn(warn_opaque, msg);
    }
    pthread_mutex_unlock(&warn_lock);
}
