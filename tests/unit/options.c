/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Options: the dictionary, QemuOpts-style lists, json: flattening, sizes,
 * typed getters, validation and --object secrets.  Expected values come
 * from QEMU 7.2 (qemu-img create -o ..., qemu-img create SIZE, qemu-img info
 * json:..., qemu-img --object ...) as noted beside each group.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "internal.h"

static int failures;

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);  \
            failures++;                                                               \
        }                                                                             \
    } while (0)

#define CHECK_STR(got, want)                                                          \
    do {                                                                              \
        const char *g_ = (got), *w_ = (want);                                         \
        if (!(g_ == w_ || (g_ && w_ && !strcmp(g_, w_)))) {                           \
            fprintf(stderr, "%s:%d: %s is '%s', want '%s'\n", __FILE__, __LINE__,     \
                    #got, g_ ? g_ : "(null)", w_ ? w_ : "(null)");                    \
            failures++;                                                               \
        }                                                                             \
    } while (0)

/* The message of a failure contains want. */
#define CHECK_MSG(want)                                                               \
    do {                                                                              \
        if (!strstr(vd_get_error(), (want))) {                                        \
            fprintf(stderr, "%s:%d: error '%s' lacks '%s'\n", __FILE__, __LINE__,     \
                    vd_get_error(), (want));                                          \
            failures++;                                                               \
        }                                                                             \
    } while (0)

static void test_dict(void)
{
    vd_opts *o = vd_opts_new();
    CHECK(o);
    CHECK(vd_opts_count(o) == 0);
    CHECK(vd_opts_get(o, "a") == NULL);
    CHECK(vd_opts_set(o, "b", "1") == 0);
    CHECK(vd_opts_set(o, "a", "2") == 0);
    CHECK(vd_opts_set(o, "b", "3") == 0); /* replaces, keeps its place */
    CHECK(vd_opts_count(o) == 2);
    CHECK_STR(vd_opts_key(o, 0), "b");
    CHECK_STR(vd_opts_value(o, 0), "3");
    CHECK_STR(vd_opts_key(o, 1), "a");
    CHECK(vd_opts_key(o, 2) == NULL);
    CHECK(vd_opts_set(o, "", "x") < 0);
    CHECK(vd_get_errno() == EINVAL);
    CHECK(vd_opts_set(o, NULL, "x") < 0);
    CHECK(vd_opts_set(o, "missing", NULL) == 0);
    CHECK(vd_opts_set(o, "b", NULL) == 0);
    CHECK(vd_opts_count(o) == 1);
    CHECK(vd_opts_get(o, "b") == NULL);
    CHECK_STR(vd_opts_get(o, "a"), "2");

    /* many keys: the index grows, deletes keep lookups right */
    char k[32], v[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(k, sizeof(k), "k%d", i);
        snprintf(v, sizeof(v), "v%d", i);
        CHECK(vd_opts_set(o, k, v) == 0);
    }
    for (int i = 0; i < 5000; i += 2) {
        snprintf(k, sizeof(k), "k%d", i);
        CHECK(vd_opts_set(o, k, NULL) == 0);
    }
    CHECK(vd_opts_count(o) == 2501);
    CHECK(vd_opts_get(o, "k10") == NULL);
    CHECK_STR(vd_opts_get(o, "k4999"), "v4999");
    CHECK_STR(vd_opts_key(o, 1), "k1");

    vd_opts *c = vd_opts_clone(o);
    CHECK(c && vd_opts_count(c) == vd_opts_count(o));
    CHECK_STR(vd_opts_get(c, "k3"), "v3");
    vd_opts *m = vd_opts_new();
    vd_opts_set(m, "a", "new");
    vd_opts_set(m, "z", "last");
    CHECK(vd_opts_merge(c, m) == 0);
    CHECK_STR(vd_opts_get(c, "a"), "new");
    CHECK_STR(vd_opts_key(c, vd_opts_count(c) - 1), "z");
    CHECK_STR(vd_opts_get(o, "a"), "2"); /* the clone is independent */
    vd_opts_free(m);
    vd_opts_free(c);
    vd_opts_free(o);
    vd_opts_free(NULL);
    CHECK(vd_opts_count(NULL) == 0);
}

static vd_opts *parsed(const char *s, const char *implied)
{
    vd_opts *o = vd_opts_new();
    if (vd_opts_parse(o, s, implied) < 0) {
        vd_opts_free(o);
        return NULL;
    }
    return o;
}

/* Expected results checked with qemu-img create -f qcow2 -o '...' (7.2). */
static void test_parse(void)
{
    vd_opts *o = parsed("driver=qcow2,file.driver=file,file.filename=x,file.locking=off", NULL);
    CHECK(o && vd_opts_count(o) == 4);
    CHECK_STR(vd_opts_get(o, "file.filename"), "x");
    CHECK_STR(vd_opts_key(o, 0), "driver");
    vd_opts_free(o);

    o = parsed("backing_file=a,,b,backing_fmt=raw", NULL);
    CHECK(o && vd_opts_count(o) == 2);
    CHECK_STR(vd_opts_get(o, "backing_file"), "a,b");
    CHECK_STR(vd_opts_get(o, "backing_fmt"), "raw");
    vd_opts_free(o);

    o = parsed("compat=1.1,,", NULL); /* qemu-img: compat '1.1,' */
    CHECK_STR(o ? vd_opts_get(o, "compat") : NULL, "1.1,");
    vd_opts_free(o);
    o = parsed("compat=1.1,,,,,,", NULL);
    CHECK_STR(o ? vd_opts_get(o, "compat") : NULL, "1.1,,,");
    vd_opts_free(o);
    o = parsed("compat=1.1,,lazy_refcounts=on", NULL);
    CHECK(o && vd_opts_count(o) == 1);
    CHECK_STR(o ? vd_opts_get(o, "compat") : NULL, "1.1,lazy_refcounts=on");
    vd_opts_free(o);
    o = parsed("a=b=c,d=", NULL);
    CHECK_STR(o ? vd_opts_get(o, "a") : NULL, "b=c");
    CHECK_STR(o ? vd_opts_get(o, "d") : NULL, "");
    vd_opts_free(o);

    /* later keys win */
    o = parsed("compat=0.10,compat=1.1", NULL);
    CHECK(o && vd_opts_count(o) == 1);
    CHECK_STR(o ? vd_opts_get(o, "compat") : NULL, "1.1");
    vd_opts_free(o);

    /* flags */
    o = parsed("lazy_refcounts,nopreallocation,compat=1.1", NULL);
    CHECK_STR(o ? vd_opts_get(o, "lazy_refcounts") : NULL, "on");
    CHECK_STR(o ? vd_opts_get(o, "preallocation") : NULL, "off");
    vd_opts_free(o);

    /* implied key */
    o = parsed("disk.img,format=raw", "file");
    CHECK_STR(o ? vd_opts_get(o, "file") : NULL, "disk.img");
    CHECK_STR(o ? vd_opts_get(o, "format") : NULL, "raw");
    vd_opts_free(o);
    o = parsed("a,,b.img,format=raw", "file");
    CHECK_STR(o ? vd_opts_get(o, "file") : NULL, "a,b.img");
    vd_opts_free(o);
    o = parsed("format=raw,disk.img", "file"); /* only the first element */
    CHECK(o && vd_opts_get(o, "file") == NULL);
    CHECK_STR(o ? vd_opts_get(o, "disk.img") : NULL, "on");
    vd_opts_free(o);
    o = parsed("secret,id=sec0,data=x", "qom-type");
    CHECK_STR(o ? vd_opts_get(o, "qom-type") : NULL, "secret");
    CHECK_STR(o ? vd_opts_get(o, "id") : NULL, "sec0");
    vd_opts_free(o);

    /* qemu-img: "Invalid option list" / "Invalid parameter ''" */
    static const char *const bad[] = {"", ",compat=1.1", "compat=1.1,", "compat=1.1,,,",
                                      "=5", "a=1,=2", "no", "a=1,,,,,"};
    for (size_t i = 0; i < VD_ARRAY_SIZE(bad); i++) {
        o = vd_opts_new();
        vd_opts_set(o, "keep", "me");
        if (vd_opts_parse(o, bad[i], NULL) == 0) {
            fprintf(stderr, "parse of '%s' should fail\n", bad[i]);
            failures++;
        } else {
            CHECK(vd_get_errno() == EINVAL);
            CHECK_MSG("Invalid option list");
        }
        /* a failed parse changes nothing */
        CHECK(vd_opts_count(o) == 1);
        vd_opts_free(o);
    }
    o = vd_opts_new();
    CHECK(vd_opts_parse(o, "a=1,b=2,=3", NULL) < 0);
    CHECK(vd_opts_count(o) == 0);
    CHECK_MSG("empty name");

    vd_error *err = NULL;
    CHECK(vd_opts_parse_err(o, ",x", NULL, &err) == -EINVAL);
    CHECK(err && strstr(err->msg, "starts with a comma"));
    vd_error_free(err);
    vd_opts_free(o);
}

/* Shapes checked with qemu-img info 'json:...' (7.2). */
static void test_json(void)
{
    vd_opts *o = vd_opts_new();
    CHECK(vd_opts_parse_json(o, "{\"driver\": \"qcow2\", \"file\": {\"driver\": \"file\", "
                                "\"filename\": \"a b.img\", \"locking\": false}, "
                                "\"cache\": {\"direct\": true, \"no-flush\": false}, "
                                "\"n\": 42, \"neg\": -7, \"big\": 18446744073709551615, "
                                "\"f\": 1.5e3, \"half\": 0.5, "
                                "\"server\": [{\"host\": \"h1\", \"port\": \"10809\"}, "
                                "{\"host\": \"h2\"}], \"list\": [1, \"two\"], "
                                "\"ignored\": null, \"backing\": null, "
                                "\"file.x\": \"dotted\"}") == 0);
    CHECK_STR(vd_opts_get(o, "driver"), "qcow2");
    CHECK_STR(vd_opts_get(o, "file.driver"), "file");
    CHECK_STR(vd_opts_get(o, "file.filename"), "a b.img");
    CHECK_STR(vd_opts_get(o, "file.locking"), "off");
    CHECK_STR(vd_opts_get(o, "cache.direct"), "on");
    CHECK_STR(vd_opts_get(o, "cache.no-flush"), "off");
    CHECK_STR(vd_opts_get(o, "n"), "42");
    CHECK_STR(vd_opts_get(o, "neg"), "-7");
    CHECK_STR(vd_opts_get(o, "big"), "18446744073709551615");
    CHECK_STR(vd_opts_get(o, "f"), "1500");
    CHECK_STR(vd_opts_get(o, "half"), "0.5");
    CHECK_STR(vd_opts_get(o, "server.0.host"), "h1");
    CHECK_STR(vd_opts_get(o, "server.0.port"), "10809");
    CHECK_STR(vd_opts_get(o, "server.1.host"), "h2");
    CHECK_STR(vd_opts_get(o, "list.0"), "1");
    CHECK_STR(vd_opts_get(o, "list.1"), "two");
    CHECK(vd_opts_get(o, "ignored") == NULL);
    CHECK_STR(vd_opts_get(o, "backing"), "");
    CHECK_STR(vd_opts_get(o, "file.x"), "dotted");
    CHECK(vd_opts_count(o) == 18);
    vd_opts_free(o);

    /* QEMU's parser takes single-quoted strings too */
    o = vd_opts_new();
    vd_error *err = NULL;
    CHECK(vd_opts_parse_json_filename(o, "json:{'driver':'raw','file':{'filename':'r'}}",
                                      &err) == 0);
    CHECK_STR(vd_opts_get(o, "file.filename"), "r");
    CHECK(err == NULL);
    vd_opts_free(o);

    static const struct {
        const char *json;
        const char *msg;
    } bad[] = {
        {"[1]", "Invalid JSON object given"},
        {"\"str\"", "Invalid JSON object given"},
        {"{\"a\":", "Could not parse the JSON options: "},
        {"{\"a\" 1}", "Could not parse the JSON options: "},
        {"{\"a\":1} x", "Expecting at most one JSON value"},
        {"{\"a\":0x10}", "Could not parse the JSON options: "},
        {"{\"a\":{}}", "empty object"},
        {"{\"a\":[]}", "empty array"},
        {"{\"a\":NaN}", "not a finite number"},
        {"{\"a\":\"x\\u0000y\"}", "NUL"},
        {"{\"file\":{\"filename\":\"a\"},\"file.filename\":\"b\"}", "given twice"},
        {"{\"\":1}", "empty key"},
        {"", "Could not parse the JSON options: "},
    };
    for (size_t i = 0; i < VD_ARRAY_SIZE(bad); i++) {
        o = vd_opts_new();
        vd_opts_set(o, "keep", "me");
        if (vd_opts_parse_json(o, bad[i].json) == 0) {
            fprintf(stderr, "JSON '%s' should fail\n", bad[i].json);
            failures++;
        } else {
            CHECK_MSG(bad[i].msg);
            CHECK(vd_get_errno() == EINVAL);
        }
        CHECK(vd_opts_count(o) == 1);
        vd_opts_free(o);
    }

    o = vd_opts_new();
    err = NULL;
    CHECK(vd_opts_parse_json_filename(o, "{\"a\":1}", &err) == -EINVAL);
    CHECK(err != NULL);
    vd_error_free(err);
    err = NULL;
    /* deep nesting is refused by json-c's depth limit, not a crash */
    char deep[4096] = "json:";
    size_t n = strlen(deep);
    for (int i = 0; i < 1000; i++) {
        n += (size_t)snprintf(deep + n, sizeof(deep) - n, "{\"a\":");
        if (n > 3000) {
            break;
        }
    }
    CHECK(vd_opts_parse_json_filename(o, deep, &err) < 0);
    vd_error_free(err);
    vd_opts_free(o);
}

/* Expected values: qemu-img create -f raw x SIZE (7.2), whose cvtnum also
 * rejects results above INT64_MAX. */
static void test_size(void)
{
    static const struct {
        const char *s;
        int err; /* 0, EINVAL or ERANGE */
        uint64_t v;
    } t[] = {
        {"0", 0, 0},
        {"512", 0, 512},
        {"1k", 0, 1024},
        {"1K", 0, 1024},
        {"1b", 0, 1},
        {"1B", 0, 1},
        {"64M", 0, 64ull << 20},
        {"1m", 0, 1ull << 20},
        {"2G", 0, 2ull << 30},
        {"1T", 0, 1ull << 40},
        {"1P", 0, 1ull << 50},
        {"1E", 0, 1ull << 60},
        {"1e", 0, 1ull << 60},
        {"7E", 0, 8070450532247928832ull},
        {"7.99E", 0, 9211842821808707328ull},
        {"1.5G", 0, 1610612736},
        {"1.5E", 0, 1729382256910270464ull},
        {"0.5k", 0, 512},
        {"1.k", 0, 1024},
        {"1.0", 0, 1},
        {"1.", 0, 1},
        {"12.345M", 0, 12944671},
        {"1.2345M", 0, 1294467},
        {"0.0000000001k", 0, 0},
        {"0x10", 0, 16},
        {"0x1E", 0, 30},
        {"0x10M", 0, 16ull << 20},
        {"+5", 0, 5},
        {" 5", 0, 5},
        {"9223372036854775807", 0, INT64_MAX},
        {"1.5", EINVAL, 0},
        {"1.0000000001", EINVAL, 0},
        {"0.1b", EINVAL, 0},
        {"1.5b", EINVAL, 0},
        {"-5", EINVAL, 0},
        {"-0", EINVAL, 0},
        {" -5", EINVAL, 0},
        {"5 ", EINVAL, 0},
        {"12x", EINVAL, 0},
        {"", EINVAL, 0},
        {"k", EINVAL, 0},
        {"1KB", EINVAL, 0},
        {"1e3", EINVAL, 0},
        {"1.5e3k", EINVAL, 0},
        {".5k", EINVAL, 0},
        {"0x", EINVAL, 0},
        {"00x10", EINVAL, 0},
        {"0x1.8", EINVAL, 0},
        {"1 k", EINVAL, 0},
        {"1k5", EINVAL, 0},
        {"99999999999999999999x", EINVAL, 0},
        {"99999999999999999999k", EINVAL, 0},
        {"8E", ERANGE, 0},
        {"16E", ERANGE, 0},
        {"9223372036854775808", ERANGE, 0},
        {"18446744073709551615", ERANGE, 0},
        {"99999999999999999999", ERANGE, 0},
        {"15.9999999999999999999E", ERANGE, 0},
        {"0xffffffffffffffffff", ERANGE, 0},
    };
    for (size_t i = 0; i < VD_ARRAY_SIZE(t); i++) {
        uint64_t v = 12345;
        int r = vd_parse_size(t[i].s, &v);
        if (t[i].err == 0) {
            if (r != 0 || v != t[i].v) {
                fprintf(stderr, "size '%s': r=%d v=%" PRIu64 ", want %" PRIu64 " (%s)\n",
                        t[i].s, r, v, t[i].v, vd_get_error());
                failures++;
            }
        } else if (r != -1 || vd_get_errno() != t[i].err || v != 12345) {
            fprintf(stderr, "size '%s': r=%d errno=%d, want errno %d\n", t[i].s, r,
                    vd_get_errno(), t[i].err);
            failures++;
        }
    }
    uint64_t v;
    CHECK(vd_parse_size(NULL, &v) == -1);
    CHECK(vd_parse_size("12x", &v) == -1);
    CHECK_MSG("12x");
}

/*
 * Sizes qemu-img itself parses: a seeded, generated set of strings run
 * through `qemu-img create -f raw F -- SIZE`, whose "size=N" line, "Must be
 * between" (range) or "You may use k, M, ..." (invalid) message must match
 * vd_parse_size.
 */
static void test_size_vs_qemu(void)
{
    static const char digits[] = "0123456789";
    static const char suffixes[] = "bBkKmMgGtTpPeEx";
    unsigned seed = 12345;
    int compared = 0;
    for (int i = 0; i < 120; i++) {
        char s[64];
        size_t n = 0;
        seed = seed * 1103515245u + 12345u;
        unsigned r = seed >> 8;
        if (r % 13 == 0) {
            s[n++] = "+ -"[r / 13 % 3];
        }
        if (r % 7 == 0) {
            n += (size_t)snprintf(s + n, sizeof(s) - n, "0x%x", r % 4096);
        } else {
            int len = 1 + (int)(r % 5 == 0 ? 18 + r % 4 : r % 4);
            for (int k = 0; k < len; k++) {
                seed = seed * 1103515245u + 12345u;
                s[n++] = digits[(seed >> 8) % 10];
            }
        }
        seed = seed * 1103515245u + 12345u;
        r = seed >> 8;
        if (r % 3 == 0) {
            s[n++] = '.';
            for (unsigned k = 0; k < r % 5; k++) {
                s[n++] = digits[(r >> (k + 3)) % 10];
            }
        }
        if (r % 4 != 0) {
            s[n++] = suffixes[(r >> 4) % (sizeof(suffixes) - 1)];
        }
        s[n] = 0;

        char cmd[256];
        snprintf(cmd, sizeof(cmd), "qemu-img create -f raw qemu-size.img -- '%s' 2>&1", s);
        FILE *f = popen(cmd, "r");
        if (!f) {
            failures++;
            return;
        }
        char line[512];
        int qerr = -1;
        uint64_t qval = 0;
        while (fgets(line, sizeof(line), f)) {
            const char *p = strstr(line, " size=");
            if (strncmp(line, "Formatting", 10) == 0 && p) {
                qerr = 0;
                qval = strtoull(p + 6, NULL, 10);
            } else if (strstr(line, "Must be between")) {
                qerr = ERANGE;
            } else if (strstr(line, "You may use k")) {
                qerr = EINVAL;
            } else if (strstr(line, "not found")) {
                fprintf(stderr, "qemu-img is missing (scripts/deps.sh test installs it)\n");
                failures++;
                pclose(f);
                return;
            }
        }
        pclose(f);
        if (qerr < 0) {
            fprintf(stderr, "size '%s': no answer from qemu-img\n", s);
            failures++;
            continue;
        }
        uint64_t v = 0;
        int mine = vd_parse_size(s, &v) == 0 ? 0 : vd_get_errno();
        if (mine != qerr || (qerr == 0 && v != qval)) {
            fprintf(stderr, "size '%s': qemu-img %d/%" PRIu64 ", vd_parse_size %d/%" PRIu64 "\n",
                    s, qerr, qval, mine, v);
            failures++;
        }
        if (getenv("VDISK_TEST_VERBOSE")) {
            fprintf(stderr, "size '%s': %d %" PRIu64 "\n", s, qerr, qval);
        }
        compared++;
    }
    unlink("qemu-size.img");
    CHECK(compared == 120);
}

static void test_getters(void)
{
    vd_opts *o = parsed("b1=on,b2=off,b3=yes,b4=false,bad=maybe,n=42,oct=010,hex=0x10,neg=-1,"
                        "huge=99999999999999999999,junk=4x,sz=1.5G,szbad=1.5,szbig=16E,"
                        "e=metadata,ebad=sparse",
                        NULL);
    CHECK(o);
    bool b = false;
    vd_error *err = NULL;
    CHECK(vd_opts_get_bool(o, "b1", false, &b, &err) == 0 && b);
    CHECK(vd_opts_get_bool(o, "b2", true, &b, &err) == 0 && !b);
    CHECK(vd_opts_get_bool(o, "b3", false, &b, &err) == 0 && b);
    CHECK(vd_opts_get_bool(o, "b4", true, &b, &err) == 0 && !b);
    CHECK(vd_opts_get_bool(o, "absent", true, &b, &err) == 0 && b);
    CHECK(err == NULL);
    CHECK(vd_opts_get_bool(o, "bad", true, &b, &err) == -EINVAL);
    CHECK(err && strstr(err->msg, "'bad'") && strstr(err->msg, "'on' or 'off'"));
    vd_error_free(err);
    err = NULL;

    uint64_t u = 0;
    CHECK(vd_opts_get_u64(o, "n", 0, &u, &err) == 0 && u == 42);
    CHECK(vd_opts_get_u64(o, "oct", 0, &u, &err) == 0 && u == 8); /* as qemu-img */
    CHECK(vd_opts_get_u64(o, "hex", 0, &u, &err) == 0 && u == 16);
    CHECK(vd_opts_get_u64(o, "absent", 7, &u, &err) == 0 && u == 7);
    CHECK(err == NULL);
    /* a negative number wraps as qemu_strtou64's (iotest 112: refcount_bits=-1) */
    CHECK(vd_opts_get_u64(o, "neg", 0, &u, &err) == 0 && u == UINT64_MAX);
    CHECK(err == NULL);
    CHECK(vd_opts_get_u64(o, "huge", 0, &u, &err) == -ERANGE);
    CHECK(err && strstr(err->msg, "is too large for parameter"));
    vd_error_free(err);
    err = NULL;
    CHECK(vd_opts_get_u64(o, "junk", 0, &u, &err) == -EINVAL);
    vd_error_free(err);
    err = NULL;

    CHECK(vd_opts_get_size(o, "sz", 0, &u, &err) == 0 && u == 1610612736);
    CHECK(vd_opts_get_size(o, "absent", 512, &u, &err) == 0 && u == 512);
    CHECK(vd_opts_get_size(o, "szbad", 0, &u, &err) == -EINVAL);
    CHECK(err && strstr(err->msg, "'szbad'"));
    vd_error_free(err);
    err = NULL;
    CHECK(vd_opts_get_size(o, "szbig", 0, &u, &err) == -ERANGE);
    CHECK(err && strstr(err->msg, "Value '16E' is out of range for parameter 'szbig'"));
    vd_error_free(err);
    err = NULL;

    static const char *const names[] = {"off", "metadata", "falloc", "full", NULL};
    int e = -1;
    CHECK(vd_opts_get_enum(o, "e", names, 0, &e, &err) == 0 && e == 1);
    CHECK(vd_opts_get_enum(o, "absent", names, 3, &e, &err) == 0 && e == 3);
    CHECK(vd_opts_get_enum(o, "ebad", names, 0, &e, &err) == -EINVAL);
    CHECK(err && strstr(err->msg, "'sparse'") && strstr(err->msg, "'falloc'"));
    vd_error_free(err);
    vd_opts_free(o);
}

static void test_prefix_validate(void)
{
    vd_opts *o = parsed("driver=qcow2,file.driver=file,file.filename=x,file.aio.x=1,"
                        "filex=1,backing.file.filename=b,file=,lazy_refcounts=on",
                        NULL);
    CHECK(o);
    vd_opts *f = vd_opts_extract_prefix(o, "file");
    CHECK(f && vd_opts_count(f) == 3);
    CHECK_STR(vd_opts_get(f, "driver"), "file");
    CHECK_STR(vd_opts_get(f, "aio.x"), "1");
    vd_opts_free(f);
    f = vd_opts_extract_prefix(o, "backing.");
    CHECK(f && vd_opts_count(f) == 1);
    CHECK_STR(vd_opts_get(f, "file.filename"), "b");
    vd_opts_free(f);

    static const vd_opt_desc table[] = {
        {.name = "driver", .type = VD_OPT_STRING},
        {.name = "lazy_refcounts", .type = VD_OPT_BOOL},
        {.name = "filex", .type = VD_OPT_NUMBER},
        {.name = "cluster_size", .type = VD_OPT_SIZE},
        {NULL},
    };
    const vd_opt_desc *const tables[] = {table, NULL};
    const char *const children[] = {"file.", "backing", NULL};
    vd_error *err = NULL;
    CHECK(vd_opts_validate(o, tables, children, "format 'qcow2'", &err) == 0);
    CHECK(err == NULL);
    CHECK(vd_opts_validate(o, tables, NULL, "format 'qcow2'", &err) == -EINVAL);
    CHECK(err && strstr(err->msg, "Invalid parameter 'file.driver'") &&
          strstr(err->msg, "format 'qcow2'"));
    vd_error_free(err);
    err = NULL;
    vd_opts_set(o, "cluster_size", "64x");
    CHECK(vd_opts_validate(o, tables, children, NULL, &err) == -EINVAL);
    CHECK(err && strstr(err->msg, "cluster_size"));
    vd_error_free(err);
    err = NULL;
    vd_opts_set(o, "cluster_size", "64k");
    vd_opts_set(o, "lazy_refcounts", "perhaps");
    CHECK(vd_opts_validate(o, tables, children, NULL, &err) == -EINVAL);
    vd_error_free(err);
    err = NULL;
    vd_opts_set(o, "lazy_refcounts", "off");
    vd_opts_set(o, "unknown", "1");
    CHECK(vd_opts_validate(o, tables, children, NULL, &err) == -EINVAL);
    CHECK(err && !strcmp(err->msg, "Invalid parameter 'unknown'"));
    vd_error_free(err);
    err = NULL;
    vd_opts_set(o, "unknown", NULL);

    vd_opts_remove_prefix(o, "file");
    CHECK(vd_opts_get(o, "file.driver") == NULL && vd_opts_get(o, "file.aio.x") == NULL);
    CHECK_STR(vd_opts_get(o, "filex"), "1");
    CHECK_STR(vd_opts_get(o, "file"), "");
    CHECK_STR(vd_opts_get(o, "backing.file.filename"), "b");
    CHECK_STR(vd_opts_key(o, 0), "driver");
    CHECK(vd_opts_count(o) == 6);
    vd_opts_free(o);
}

static void write_file(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0 && write(fd, data, len) == (ssize_t)len);
    close(fd);
}

static void check_secret(const char *id, const void *want, size_t want_len)
{
    uint8_t *data = NULL;
    size_t len = 0;
    vd_error *err = NULL;
    int r = vd_secret_lookup(id, &data, &len, &err);
    if (r < 0 || len != want_len || memcmp(data, want, len) || data[len] != 0) {
        fprintf(stderr, "secret '%s': r=%d len=%zu want %zu (%s)\n", id, r, len, want_len,
                err ? err->msg : "");
        failures++;
    }
    free(data);
    vd_error_free(err);
}

/* Messages and decoding checked against qemu-img --object (7.2). */
static void test_secrets(void)
{
    char dir[] = "/tmp/vdisk-unit-opts.XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[256], path2[256], path3[256];
    snprintf(path, sizeof(path), "%s/pw", dir);
    snprintf(path2, sizeof(path2), "%s/b64", dir);
    snprintf(path3, sizeof(path3), "%s/enc", dir);
    write_file(path, "pass\0word\n", 10);
    write_file(path2, "c2VjcmV0", 8);
    /* openssl enc -aes-256-cbc -K 11*32 -iv 000102..0f of "hello world"; QEMU
     * 7.2 opens a LUKS image with this as key-secret */
    static const uint8_t enc[16] = {0x33, 0x21, 0xbc, 0x78, 0x86, 0x9d, 0xf9, 0x6a,
                                    0x92, 0x91, 0xd1, 0xf9, 0xb7, 0x7a, 0xca, 0xf4};
    write_file(path3, enc, sizeof(enc));

    char spec[512];
    CHECK(vd_object_add("secret,id=s1,data=hello") == 0);
    check_secret("s1", "hello", 5);
    CHECK(vd_object_add("secret,id=s2,data=a,,b") == 0);
    check_secret("s2", "a,b", 3);
    snprintf(spec, sizeof(spec), "secret,id=s3,file=%s", path);
    CHECK(vd_object_add(spec) == 0);
    check_secret("s3", "pass\0word\n", 10);
    CHECK(vd_object_add("secret,id=s4,data=YWJj,format=base64") == 0);
    check_secret("s4", "abc", 3);
    CHECK(vd_object_add("secret,id=s5,data=YQ==,format=base64") == 0);
    check_secret("s5", "a", 1);
    snprintf(spec, sizeof(spec), "secret,id=s6,file=%s,format=base64", path2);
    CHECK(vd_object_add(spec) == 0);
    check_secret("s6", "secret", 6);
    CHECK(vd_object_add("{\"qom-type\": \"secret\", \"id\": \"s7\", \"data\": \"j\"}") == 0);
    check_secret("s7", "j", 1);
    vd_opts *o = parsed("qom-type=secret,id=s8,data=opt", NULL);
    CHECK(vd_object_add_opts(o) == 0);
    vd_opts_free(o);
    check_secret("s8", "opt", 3);
    CHECK(vd_object_add("secret,id=s9,data=,format=raw") == 0);
    check_secret("s9", "", 0);

    /* encrypted secrets (libvirt's masterKey scheme) */
    CHECK(vd_object_add("secret,id=mk,data=ERERERERERERERERERERERERERERERERERERERERERE=,"
                        "format=base64") == 0);
    CHECK(vd_object_add("secret,id=e1,data=MyG8eIad+WqSkdH5t3rK9A==,format=base64,keyid=mk,"
                        "iv=AAECAwQFBgcICQoLDA0ODw==") == 0);
    check_secret("e1", "hello world", 11);
    snprintf(spec, sizeof(spec), "secret,id=e2,file=%s,keyid=mk,iv=AAECAwQFBgcICQoLDA0ODw==",
             path3);
    CHECK(vd_object_add(spec) == 0);
    check_secret("e2", "hello world", 11);

    static const struct {
        const char *spec;
        const char *msg;
        int err;
    } bad[] = {
        {"secret,id=s1,data=again", "already exists", EEXIST},
        {"secret,id=n1", "Either 'file' or 'data' must be provided", EINVAL},
        {"secret,data=x", "Parameter 'id' is missing", EINVAL},
        {"id=n2,data=x", "Parameter 'qom-type' is missing", EINVAL},
        {"secret,id=1s,data=x", "expects an identifier", EINVAL},
        {"secret,id=n3,data=x,file=/dev/null", "'file' and 'data' are mutually exclusive",
         EINVAL},
        {"secret,id=n4,data=@@@,format=base64", "Base64 data contains invalid characters",
         EINVAL},
        {"secret,id=n5,data=YW Jj,format=base64", "invalid characters", EINVAL},
        {"secret,id=n6,data=YWJ,format=base64", "Base64 data is not valid", EINVAL},
        {"secret,id=n7,data=YQ==YQ==,format=base64", "Base64 data is not valid", EINVAL},
        {"secret,id=n8,file=/nonexistent/x", "Unable to read /nonexistent/x", ENOENT},
        {"secret,id=n9,data=x,format=hex", "does not accept value 'hex'", EINVAL},
        {"secret,id=n10,data=x,foo=bar", "Invalid parameter 'foo'", EINVAL},
        {"memory-backend-ram,id=n11,size=1M", "'memory-backend-ram' is not supported",
         ENOTSUP},
        {"secret,id=n12,data=x,keyid=nokey", "No secret with id 'nokey'", ENOENT},
        {"secret,id=n13,data=x,keyid=s1,iv=AAECAwQFBgcICQoLDA0ODw==",
         "Key should be 32 bytes", EINVAL},
        {"secret,id=n14,data=MyG8eIad+WqSkdH5t3rK9A==,format=base64,keyid=mk",
         "IV is required", EINVAL},
        {"secret,id=n15,data=MyG8eIad+WqSkdH5t3rK9A==,format=base64,keyid=mk,iv=AAEC",
         "IV should be 16 bytes", EINVAL},
        {"secret,id=n16,data=MyG8eIad+WqSkdH5t3rK8A==,format=base64,keyid=mk,"
         "iv=AAECAwQFBgcICQoLDA0ODw==",
         "Incorrect number of padding bytes (74)", EINVAL},
        {"secret,id=n17,data=short,keyid=mk,iv=AAECAwQFBgcICQoLDA0ODw==",
         "not a multiple of the block size", EINVAL},
        {"secret,id=n18,data", "Expected '=' after parameter 'data'", EINVAL},
        {"", "Invalid option list", EINVAL},
        {"{\"qom-type\": \"secret\"", "Could not parse the JSON options", EINVAL},
    };
    for (size_t i = 0; i < VD_ARRAY_SIZE(bad); i++) {
        if (vd_object_add(bad[i].spec) == 0) {
            fprintf(stderr, "object '%s' should fail\n", bad[i].spec);
            failures++;
            continue;
        }
        if (!strstr(vd_get_error(), bad[i].msg) || vd_get_errno() != bad[i].err) {
            fprintf(stderr, "object '%s': error '%s' (errno %d), want '%s' (errno %d)\n",
                    bad[i].spec, vd_get_error(), vd_get_errno(), bad[i].msg, bad[i].err);
            failures++;
        }
    }
    /* a failed add registers nothing */
    uint8_t *data = NULL;
    size_t len;
    vd_error *err = NULL;
    CHECK(vd_secret_lookup("n4", &data, &len, &err) == -ENOENT);
    CHECK(err && !strcmp(err->msg, "No secret with id 'n4'"));
    vd_error_free(err);
    err = NULL;
    CHECK(vd_secret_lookup("unknown", &data, &len, &err) == -ENOENT);
    vd_error_free(err);
    err = NULL;

    /* TLS credentials go to the NBD code, but ids stay unique across types */
    CHECK(vd_object_add("tls-creds-x509,id=s1,dir=/nonexistent,endpoint=server") < 0);
    CHECK_MSG("already exists");
    CHECK(vd_object_add("tls-creds-x509,id=tls0,dir=/nonexistent/vdisk,endpoint=server") < 0);
    CHECK(vd_secret_lookup("tls0", &data, &len, &err) == -ENOENT);
    vd_error_free(err);
    CHECK(vd_object_add("tls-creds-anon,id=tls1,endpoint=server") < 0);
    CHECK_MSG("not supported");

    unlink(path);
    unlink(path2);
    unlink(path3);
    rmdir(dir);
}

/* Secrets are looked up from many threads at once (drivers opening in
 * parallel): the registry must hold up. */
static void *lookup_thread(void *arg)
{
    (void)arg;
    for (int i = 0; i < 2000; i++) {
        uint8_t *d = NULL;
        size_t l = 0;
        if (vd_secret_lookup("s1", &d, &l, NULL) < 0 || l != 5) {
            return (void *)1;
        }
        free(d);
    }
    return NULL;
}

static void test_threads(void)
{
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        pthread_create(&t[i], NULL, lookup_thread, NULL);
    }
    char spec[64];
    for (int i = 0; i < 200; i++) {
        snprintf(spec, sizeof(spec), "secret,id=t%d,data=x", i);
        CHECK(vd_object_add(spec) == 0);
    }
    for (int i = 0; i < 4; i++) {
        void *ret;
        pthread_join(t[i], &ret);
        CHECK(ret == NULL);
    }
}

int main(void)
{
    test_dict();
    test_parse();
    test_json();
    test_size();
    test_size_vs_qemu();
    test_getters();
    test_prefix_validate();
    test_secrets();
    test_threads();
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("options: all checks passed\n");
    return 0;
}
