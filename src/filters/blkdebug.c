/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The "blkdebug" filter: I/O error injection driven by the named events
 * formats announce (events.h), with QEMU 7.2's block/blkdebug.c semantics
 * and option names, so that the rules of a qemu-iotest work unchanged:
 *
 *   blkdebug:CONFIG:IMAGE           (CONFIG may be empty: blkdebug::IMAGE)
 *   driver=blkdebug,config=F,image.filename=IMG,align=N,
 *     inject-error.N.{event,state,iotype,errno,sector,once,immediately},
 *     set-state.N.{event,state,new_state}
 *
 * The config file has QEMU's "-readconfig" syntax: [inject-error] and
 * [set-state] sections of  key = "value"  lines, '#' comments.
 *
 * Semantics (as QEMU's): the node starts in state 1.  When an event fires,
 * each rule for it whose state is 0 or the current state acts: set-state
 * rules choose the next state, inject-error rules become the active ones
 * (replacing those activated by earlier events).  Every later request on
 * this node of a type in the rule's iotype set (default: all but
 * block-status) touching the rule's sector (default: any; a flush matches
 * only rules without a sector) fails with -errno; a "once" rule is then
 * deleted.  errno 0 injects nothing.
 *
 * Not supported: "immediately" is accepted and has no effect (vdisk's I/O
 * is synchronous: QEMU only uses it to choose between completing the
 * error at once or after a coroutine yield); the suspend rules and the
 * break/resume commands of qemu-io; max-transfer is supported, but not
 * opt-write-zero, max-write-zero, opt-discard, max-discard,
 * take-child-perms, unshare-child-perms.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

enum {
    BD_IO_READ,
    BD_IO_WRITE,
    BD_IO_WRITE_ZEROES,
    BD_IO_DISCARD,
    BD_IO_FLUSH,
    BD_IO_BLOCK_STATUS,
    BD_IO__MAX,
};
static const char *const bd_iotype_names[] = {
    "read", "write", "write-zeroes", "discard", "flush", "block-status", NULL,
};

/* A config file or an option list holds at most this many rules. */
#define BD_MAX_RULES 4096
/* and a config file at most this many bytes */
#define BD_MAX_CONFIG (1u << 20)

typedef struct bd_rule {
    vd_event event;
    bool inject; /* else set-state */
    uint64_t state;
    int error;       /* positive errno */
    bool once;
    int64_t offset;  /* byte offset (sector * 512) or -1 */
    unsigned iotype_mask;
    uint64_t new_state;
    bool active;
    bool removed;
    uint64_t active_seq; /* order of activation: newest first */
} bd_rule;

typedef struct bd_state {
    pthread_mutex_t lock;
    uint64_t state;
    bd_rule *rules;
    size_t nb_rules;
    uint64_t seq;
} bd_state;

static const vd_opt_desc blkdebug_open_opts[] = {
    {"config", VD_OPT_STRING, "Path to the configuration file", NULL},
    {"x-image", VD_OPT_STRING, "[internal use only, will be removed]", NULL},
    {"filename", VD_OPT_STRING, "the image (as x-image)", NULL},
    {"align", VD_OPT_SIZE, "Required alignment in bytes", NULL},
    {"max-transfer", VD_OPT_SIZE, "Maximum transfer size in bytes", NULL},
    {NULL, 0, NULL, NULL},
};

static const vd_opt_desc inject_error_opts[] = {
    {"event", VD_OPT_STRING, "event name", NULL},
    {"state", VD_OPT_NUMBER, "state the rule applies in (0: any)", "0"},
    {"iotype", VD_OPT_STRING, "request type to fail", NULL},
    {"errno", VD_OPT_NUMBER, "error to return", "5"},
    {"sector", VD_OPT_STRING, "sector the request must touch (-1: any)", "-1"},
    {"once", VD_OPT_BOOL, "only fail once", "off"},
    {"immediately", VD_OPT_BOOL, "fail at once (no effect in vdisk)", "off"},
    {NULL, 0, NULL, NULL},
};

static const vd_opt_desc set_state_opts[] = {
    {"event", VD_OPT_STRING, "event name", NULL},
    {"state", VD_OPT_NUMBER, "state the rule applies in (0: any)", "0"},
    {"new_state", VD_OPT_NUMBER, "state to switch to", "0"},
    {NULL, 0, NULL, NULL},
};

static const char *const blkdebug_prefixes[] = {"image.", "inject-error.", "set-state.", NULL};
static const char *const blkdebug_protocols[] = {"blkdebug", NULL};

static int event_by_name(const char *name)
{
    for (int i = 0; i < VD_EV__MAX; i++) {
        if (!strcmp(vd_event_names[i], name)) {
            return i;
        }
    }
    return -1;
}

/* One rule's options (a section of the config file or inject-error.N.*). */
static int add_rule(bd_state *s, bool inject, const vd_opts *o, const char *where,
                    vd_error **errp)
{
    const vd_opt_desc *tables[] = {inject ? inject_error_opts : set_state_opts, NULL};
    bd_rule r;

    memset(&r, 0, sizeof(r));
    r.inject = inject;
    r.offset = -1;
    if (vd_opts_validate(o, tables, NULL, where, errp) < 0) {
        return -EINVAL;
    }
    const char *ev = vd_opts_get(o, "event");
    if (!ev) {
        return vd_error_set(errp, EINVAL, "%s: Missing event name for rule", where);
    }
    int e = event_by_name(ev);
    if (e < 0) {
        return vd_error_set(errp, EINVAL, "%s: Invalid parameter '%s' for event", where, ev);
    }
    r.event = (vd_event)e;
    if (vd_opts_get_u64(o, "state", 0, &r.state, errp) < 0) {
        return -EINVAL;
    }
    if (inject) {
        uint64_t err;
        bool immediately;
        int io;
        if (vd_opts_get_u64(o, "errno", EIO, &err, errp) < 0 ||
            vd_opts_get_bool(o, "once", false, &r.once, errp) < 0 ||
            vd_opts_get_bool(o, "immediately", false, &immediately, errp) < 0) {
            return -EINVAL;
        }
        if (err > 4095) {
            return vd_error_set(errp, EINVAL, "%s: errno %" PRIu64 " is out of range", where,
                                err);
        }
        r.error = (int)err;
        const char *sec = vd_opts_get(o, "sector");
        if (sec && strcmp(sec, "-1") != 0) {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(sec, &end, 0);
            if (errno || end == sec || *end || sec[0] == '-' || v > (uint64_t)INT64_MAX / 512) {
                return vd_error_set(errp, EINVAL, "%s: Parameter 'sector' expects a number",
                                    where);
            }
            r.offset = (int64_t)v * 512;
        }
        if (vd_opts_get(o, "iotype")) {
            if (vd_opts_get_enum(o, "iotype", bd_iotype_names, 0, &io, errp) < 0) {
                return -EINVAL;
            }
            r.iotype_mask = 1u << io;
        } else {
            r.iotype_mask = (1u << BD_IO_READ) | (1u << BD_IO_WRITE) |
                            (1u << BD_IO_WRITE_ZEROES) | (1u << BD_IO_DISCARD) |
                            (1u << BD_IO_FLUSH);
        }
    } else if (vd_opts_get_u64(o, "new_state", 0, &r.new_state, errp) < 0) {
        return -EINVAL;
    }
    if (s->nb_rules >= BD_MAX_RULES) {
        return vd_error_set(errp, EINVAL, "%s: more than %d blkdebug rules", where,
                            BD_MAX_RULES);
    }
    bd_rule *n = realloc(s->rules, (s->nb_rules + 1) * sizeof(*n));
    if (!n) {
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    s->rules = n;
    s->rules[s->nb_rules++] = r;
    return 0;
}

/* Sections of a config file, in file order: each is a group and opts. */
typedef struct bd_section {
    bool inject;
    vd_opts *opts;
    unsigned line;
} bd_section;

static void free_sections(bd_section *sec, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        vd_opts_free(sec[i].opts);
    }
    free(sec);
}

/*
 * Parse QEMU's config syntax from buf (len bytes, any content):
 *   [group]  or  [group "id"]      a new section (group inject-error / set-state)
 *   key = "value"                  an option of the current section
 *   # comment, blank lines
 */
static int parse_config(const char *buf, size_t len, const char *name, bd_section **out,
                        size_t *nout, vd_error **errp)
{
    bd_section *sec = NULL;
    size_t n = 0;
    unsigned lineno = 0;
    size_t pos = 0;
    int ret = 0;

    while (pos < len && ret == 0) {
        size_t eol = pos;
        while (eol < len && buf[eol] != '\n') {
            eol++;
        }
        lineno++;
        const char *l = buf + pos, *e = buf + eol;
        pos = eol + 1;
        while (l < e && (*l == ' ' || *l == '\t' || *l == '\r')) {
            l++;
        }
        while (e > l && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r')) {
            e--;
        }
        if (l == e || *l == '#') {
            continue;
        }
        if (memchr(l, '\0', (size_t)(e - l))) {
            ret = vd_error_set(errp, EINVAL, "%s:%u: NUL byte in blkdebug config", name,
                               lineno);
            break;
        }
        if (*l == '[') {
            const char *g = l + 1, *ge = g;
            while (ge < e && ge[0] != ']' && ge[0] != ' ' && ge[0] != '"') {
                ge++;
            }
            const char *rest = ge;
            if (rest < e && *rest == ' ') {
                /* optional "id" */
                rest++;
                if (rest < e && *rest == '"') {
                    const char *q = memchr(rest + 1, '"', (size_t)(e - rest - 1));
                    rest = q ? q + 1 : e;
                }
            }
            if (rest >= e || *rest != ']' || rest + 1 != e) {
                ret = vd_error_set(errp, EINVAL, "%s:%u: parse error", name, lineno);
                break;
            }
            bool inject;
            size_t gl = (size_t)(ge - g);
            if (gl == 12 && !memcmp(g, "inject-error", 12)) {
                inject = true;
            } else if (gl == 9 && !memcmp(g, "set-state", 9)) {
                inject = false;
            } else {
                ret = vd_error_set(errp, EINVAL, "%s:%u: There is no option group '%.*s'",
                                   name, lineno, (int)VD_MIN(gl, 64), g);
                break;
            }
            if (n >= BD_MAX_RULES) {
                ret = vd_error_set(errp, EINVAL, "%s:%u: too many sections", name, lineno);
                break;
            }
            bd_section *ns = realloc(sec, (n + 1) * sizeof(*ns));
            if (!ns) {
                ret = vd_error_set(errp, ENOMEM, "out of memory");
                break;
            }
            sec = ns;
            sec[n].inject = inject;
            sec[n].line = lineno;
            sec[n].opts = vd_opts_new();
            if (!sec[n].opts) {
                ret = vd_error_set(errp, ENOMEM, "out of memory");
                break;
            }
            n++;
            continue;
        }
        /* key = "value" */
        const char *k = l, *ke = l;
        while (ke < e && *ke != ' ' && *ke != '\t' && *ke != '=') {
            ke++;
        }
        const char *p = ke;
        while (p < e && (*p == ' ' || *p == '\t')) {
            p++;
        }
        if (p >= e || *p != '=') {
            ret = vd_error_set(errp, EINVAL, "%s:%u: parse error", name, lineno);
            break;
        }
        p++;
        while (p < e && (*p == ' ' || *p == '\t')) {
            p++;
        }
        if (p >= e || *p != '"' || e - p < 2 || e[-1] != '"' ||
            memchr(p + 1, '"', (size_t)(e - p - 2))) {
            ret = vd_error_set(errp, EINVAL, "%s:%u: parse error", name, lineno);
            break;
        }
        if (n == 0) {
            ret = vd_error_set(errp, EINVAL, "%s:%u: no group defined", name, lineno);
            break;
        }
        if (ke == k || ke - k > 63 || e - p - 2 > 1023) {
            ret = vd_error_set(errp, EINVAL, "%s:%u: parse error", name, lineno);
            break;
        }
        char key[64], val[1024];
        memcpy(key, k, (size_t)(ke - k));
        key[ke - k] = '\0';
        memcpy(val, p + 1, (size_t)(e - p - 2));
        val[e - p - 2] = '\0';
        if (vd_opts_set(sec[n - 1].opts, key, val) < 0) {
            ret = vd_error_set(errp, ENOMEM, "out of memory");
        }
    }
    if (ret < 0) {
        free_sections(sec, n);
        return ret;
    }
    *out = sec;
    *nout = n;
    return 0;
}

static int read_config_file(bd_state *s, const char *path, vd_error **errp)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        return vd_error_setg_errno(errp, errno, "Could not read blkdebug config file '%s'",
                                   path);
    }
    char *buf = malloc(BD_MAX_CONFIG + 1);
    if (!buf) {
        fclose(f);
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    size_t len = fread(buf, 1, BD_MAX_CONFIG + 1, f);
    bool err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        return vd_error_set(errp, EIO, "Could not read blkdebug config file '%s'", path);
    }
    if (len > BD_MAX_CONFIG) {
        free(buf);
        return vd_error_set(errp, EFBIG, "blkdebug config file '%s' is larger than %u bytes",
                            path, BD_MAX_CONFIG);
    }
    bd_section *sec = NULL;
    size_t n = 0;
    int ret = parse_config(buf, len, path, &sec, &n, errp);
    free(buf);
    if (ret < 0) {
        return ret;
    }
    for (size_t i = 0; i < n && ret == 0; i++) {
        char where[64];
        snprintf(where, sizeof(where), "line %u", sec[i].line);
        ret = add_rule(s, sec[i].inject, sec[i].opts, where, errp);
        if (ret < 0) {
            vd_error_prepend(errp, "blkdebug config file '%s'", path);
        }
    }
    free_sections(sec, n);
    return ret;
}

/* inject-error.N.* / set-state.N.* options, in order of N. */
static int read_rule_opts(bd_state *s, const vd_opts *opts, bool inject, vd_error **errp)
{
    const char *group = inject ? "inject-error" : "set-state";
    vd_opts *all = vd_opts_extract_prefix(opts, group);
    int ret = 0;

    if (!all) {
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    /* the indexes used, checked to be numbers */
    uint64_t max = 0;
    bool any = false;
    for (size_t i = 0; i < vd_opts_count(all); i++) {
        const char *k = vd_opts_key(all, i);
        char *end;
        errno = 0;
        unsigned long long idx = strtoull(k, &end, 10);
        if (errno || end == k || *end != '.' || idx >= BD_MAX_RULES) {
            ret = vd_error_set(errp, EINVAL, "Invalid parameter '%s.%s'", group, k);
            goto out;
        }
        any = true;
        max = VD_MAX(max, idx);
    }
    for (uint64_t idx = 0; any && idx <= max && ret == 0; idx++) {
        char pfx[32];
        snprintf(pfx, sizeof(pfx), "%" PRIu64, idx);
        vd_opts *o = vd_opts_extract_prefix(all, pfx);
        if (!o) {
            ret = vd_error_set(errp, ENOMEM, "out of memory");
            break;
        }
        if (vd_opts_count(o)) {
            char where[48];
            snprintf(where, sizeof(where), "%s.%" PRIu64, group, idx);
            ret = add_rule(s, inject, o, where, errp);
        }
        vd_opts_free(o);
    }
out:
    vd_opts_free(all);
    return ret;
}

static int blkdebug_parse_filename(const char *filename, vd_opts *opts, vd_error **errp)
{
    if (strncmp(filename, "blkdebug:", 9) != 0) {
        return vd_opts_set(opts, "x-image", filename) < 0 ? -ENOMEM : 0;
    }
    filename += 9;
    const char *c = strchr(filename, ':');
    if (!c) {
        return vd_error_set(errp, EINVAL, "blkdebug requires both config file and image path");
    }
    if (c != filename) {
        char *cfg = strndup(filename, (size_t)(c - filename));
        if (!cfg || vd_opts_set(opts, "config", cfg) < 0) {
            free(cfg);
            return vd_error_set(errp, ENOMEM, "out of memory");
        }
        free(cfg);
    }
    if (vd_opts_set(opts, "x-image", c + 1) < 0) {
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    return 0;
}

static void blkdebug_free_rules(bd_state *s)
{
    free(s->rules);
    s->rules = NULL;
    s->nb_rules = 0;
}

/*
 * QEMU's name for a blkdebug node opened from options that only name a
 * config file and a plain image: "blkdebug:CONFIG:IMAGE" (any other option
 * leaves the core's json: name).
 */
static void blkdebug_plain_name(vd_node *bs, const char *config)
{
    static const char *const plain[] = {"driver", "config", "x-image", "filename", NULL};
    const char *child = bs->file->exact_filename ? bs->file->exact_filename
                                                 : bs->file->filename;
    if (strcmp(bs->filename, "blkdebug") != 0 || !child || !strncmp(child, "json:", 5) ||
        bs->file->drv->kind != VD_DRV_PROTOCOL) {
        return;
    }
    for (size_t i = 0; i < vd_opts_count(bs->options); i++) {
        const char *k = vd_opts_key(bs->options, i);
        bool ok = !strncmp(k, "image.", 6) || vd_opt_is_inherited(k);
        for (size_t j = 0; plain[j] && !ok; j++) {
            ok = !strcmp(k, plain[j]);
        }
        if (!ok) {
            return;
        }
    }
    char *fn = vd_asprintf("blkdebug:%s:%s", config ? config : "", child);
    if (fn) {
        free(bs->filename);
        bs->filename = fn;
    }
}

static void blkdebug_event(vd_node *bs, vd_event ev);

static int blkdebug_open(vd_node *bs, vd_opts *opts, vd_error **errp)
{
    bd_state *s = bs->opaque;
    uint64_t align = 0, max_transfer = 0;
    int ret;

    const char *config = vd_opts_get(opts, "config");
    if (config && (ret = read_config_file(s, config, errp)) < 0) {
        goto fail;
    }
    if ((ret = read_rule_opts(s, opts, true, errp)) < 0 ||
        (ret = read_rule_opts(s, opts, false, errp)) < 0) {
        goto fail;
    }
    s->state = 1;

    if (vd_opts_get_size(opts, "align", 0, &align, errp) < 0 ||
        vd_opts_get_size(opts, "max-transfer", 0, &max_transfer, errp) < 0) {
        ret = -EINVAL;
        goto fail;
    }
    if (vd_opts_get(opts, "align") && (!vd_is_pow2(align) || align >= (1u << 31))) {
        ret = vd_error_set(errp, EINVAL, "Cannot meet constraints with align %" PRIu64, align);
        goto fail;
    }

    /* the image: image.* options, or x-image (blkdebug:CONFIG:IMAGE) */
    vd_opts *img = vd_opts_extract_prefix(opts, "image");
    if (!img) {
        ret = vd_error_set(errp, ENOMEM, "out of memory");
        goto fail;
    }
    const char *x = vd_opts_get(opts, "x-image");
    if (!x) {
        x = vd_opts_get(opts, "filename");
    }
    const char *img_fn = vd_opts_get(img, "filename");
    char *fn = vd_strdup(img_fn ? img_fn : x);
    if (!fn && !vd_opts_get(img, "driver")) {
        vd_opts_free(img);
        ret = vd_error_set(errp, EINVAL, "blkdebug needs an image (image.filename or "
                                         "blkdebug:CONFIG:IMAGE)");
        goto fail;
    }
    vd_opts_set(img, "filename", NULL);
    for (const char *const *k = (const char *const[]){"read-only", "force-share",
                                                      "cache.direct", "cache.no-flush",
                                                      NULL};
         *k; k++) {
        const char *v = vd_opts_get(opts, *k);
        if (v && !vd_opts_get(img, *k)) {
            vd_opts_set(img, *k, v);
        }
    }
    unsigned cflags = bs->flags & ~VD_NODE_PROTOCOL;
    bs->file = vd_node_open_file(fn, img, cflags, errp);
    free(fn);
    vd_opts_free(img);
    if (!bs->file) {
        ret = -EINVAL;
        goto fail;
    }
    bs->file->parent = bs;

    uint32_t fa = bs->file->request_alignment ? bs->file->request_alignment : 1;
    bs->request_alignment = (uint32_t)VD_MAX(align, fa);
    bs->max_transfer = bs->file->max_transfer;
    if (max_transfer) {
        if (max_transfer % bs->request_alignment) {
            vd_node_close(bs->file);
            bs->file = NULL;
            ret = vd_error_set(errp, EINVAL, "Cannot meet constraints with max-transfer %" PRIu64,
                               max_transfer);
            goto fail;
        }
        bs->max_transfer = bs->max_transfer ? VD_MIN(bs->max_transfer, max_transfer)
                                            : max_transfer;
    }
    bs->has_zero_init = bs->file->has_zero_init;
    bs->supports_fua = bs->file->supports_fua;
    pthread_mutex_init(&s->lock, NULL);
    blkdebug_plain_name(bs, config);
    /* rules on the event "none" apply from the start (as QEMU's, which
     * iotest 251 uses with iotype= to fail chosen reads and block status) */
    blkdebug_event(bs, VD_EV_NONE);
    return 0;

fail:
    blkdebug_free_rules(s);
    return ret;
}

static void blkdebug_close(vd_node *bs)
{
    bd_state *s = bs->opaque;
    blkdebug_free_rules(s);
    pthread_mutex_destroy(&s->lock);
}

static void blkdebug_event(vd_node *bs, vd_event ev)
{
    bd_state *s = bs->opaque;
    bool injected = false;

    pthread_mutex_lock(&s->lock);
    uint64_t new_state = s->state;
    /* QEMU keeps each event's rules newest first; act in that order */
    for (size_t i = s->nb_rules; i-- > 0;) {
        bd_rule *r = &s->rules[i];
        if (r->removed || r->event != ev || (r->state && r->state != s->state)) {
            continue;
        }
        if (r->inject) {
            if (!injected) {
                /* a newly firing event replaces the active set */
                for (size_t j = 0; j < s->nb_rules; j++) {
                    s->rules[j].active = false;
                }
                injected = true;
            }
            r->active = true;
            r->active_seq = ++s->seq;
        } else {
            new_state = r->new_state;
        }
    }
    s->state = new_state;
    pthread_mutex_unlock(&s->lock);
}

/* The error to inject into a request (0: none). */
static int rule_check(vd_node *bs, uint64_t offset, uint64_t bytes, int iotype)
{
    bd_state *s = bs->opaque;
    bd_rule *hit = NULL;

    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < s->nb_rules; i++) {
        bd_rule *r = &s->rules[i];
        if (!r->active || r->removed || !(r->iotype_mask & (1u << iotype))) {
            continue;
        }
        if (r->offset != -1 && !(bytes && (uint64_t)r->offset >= offset &&
                                 (uint64_t)r->offset - offset < bytes)) {
            continue;
        }
        /* the most recently activated rule wins (QEMU's list head) */
        if (!hit || r->active_seq > hit->active_seq) {
            hit = r;
        }
    }
    int err = 0;
    if (hit && hit->error) {
        err = hit->error;
        if (hit->once) {
            hit->active = false;
            hit->removed = true;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return -err;
}

static int blkdebug_pread(vd_node *bs, uint64_t offset, uint64_t len, void *buf,
                          unsigned flags)
{
    int ret = rule_check(bs, offset, len, BD_IO_READ);
    return ret ? ret : vd_node_pread(bs->file, offset, len, buf, flags);
}

static int blkdebug_pwrite(vd_node *bs, uint64_t offset, uint64_t len, const void *buf,
                           unsigned flags)
{
    int ret = rule_check(bs, offset, len, BD_IO_WRITE);
    return ret ? ret : vd_node_pwrite(bs->file, offset, len, buf, flags);
}

static int blkdebug_pwrite_zeroes(vd_node *bs, uint64_t offset, uint64_t len, unsigned flags)
{
    int ret = rule_check(bs, offset, len, BD_IO_WRITE_ZEROES);
    return ret ? ret : vd_node_pwrite_zeroes(bs->file, offset, len, flags);
}

static int blkdebug_discard(vd_node *bs, uint64_t offset, uint64_t len)
{
    int ret = rule_check(bs, offset, len, BD_IO_DISCARD);
    return ret ? ret : vd_node_discard(bs->file, offset, len);
}

static int blkdebug_flush(vd_node *bs)
{
    /* the core flushes bs->file after this */
    return rule_check(bs, 0, 0, BD_IO_FLUSH);
}

static int blkdebug_block_status(vd_node *bs, bool want_zero, uint64_t offset, uint64_t len,
                                 uint64_t *pnum, uint64_t *map, vd_node **file)
{
    int ret = rule_check(bs, offset, len, BD_IO_BLOCK_STATUS);
    if (ret) {
        return ret;
    }
    return vd_node_block_status(bs->file, want_zero, offset, len, pnum, map, file);
}

static int64_t blkdebug_get_length(vd_node *bs)
{
    return vd_node_get_length(bs->file);
}

const vd_driver vd_drv_blkdebug = {
    .name = "blkdebug",
    .kind = VD_DRV_PROTOCOL,
    .protocols = blkdebug_protocols,
    .state_size = sizeof(bd_state),
    .open_opts = blkdebug_open_opts,
    .is_filter = true,
    .parse_filename = blkdebug_parse_filename,
    .open = blkdebug_open,
    .close = blkdebug_close,
    .get_length = blkdebug_get_length,
    .pread = blkdebug_pread,
    .pwrite = blkdebug_pwrite,
    .pwrite_zeroes = blkdebug_pwrite_zeroes,
    .discard = blkdebug_discard,
    .flush = blkdebug_flush,
    .block_status = blkdebug_block_status,
    .debug_event = blkdebug_event,
    .opt_prefixes = blkdebug_prefixes,
};

/* For the fuzz target: parse a config file held in memory. */
int vd_blkdebug_parse_config_buffer(const char *buf, size_t len, vd_error **errp);
int vd_blkdebug_parse_config_buffer(const char *buf, size_t len, vd_error **errp)
{
    bd_state s;
    bd_section *sec = NULL;
    size_t n = 0;
    memset(&s, 0, sizeof(s));
    int ret = parse_config(buf, len, "fuzz", &sec, &n, errp);
    if (ret < 0) {
        return ret;
    }
    for (size_t i = 0; ret == 0 && i < n; i++) {
        ret = add_rule(&s, sec[i].inject, sec[i].opts, "fuzz", errp);
    }
    free_sections(sec, n);
    blkdebug_free_rules(&s);
    return ret;
}
