/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The seams of issue 9: capability queries (vd_driver_get_info) agree with
 * the driver table, protocols are picked by probe_device and flags (no
 * driver names in the core), the --object registry, and the range check
 * of the request path (io.c) for public and internal callers.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
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

static bool has_opt(const vd_opt_desc *t, const char *name)
{
    for (; t && t->name; t++) {
        if (!strcmp(t->name, name)) {
            return true;
        }
    }
    return false;
}

static size_t count_opts(const vd_opt_desc *t)
{
    size_t n = 0;
    while (t && t[n].name) {
        n++;
    }
    return n;
}

/* Every capability is what the vtable says, for every driver. */
static void test_driver_info_matches_table(void)
{
    for (size_t i = 0; vd_drivers[i]; i++) {
        const vd_driver *d = vd_drivers[i];
        const vd_driver_info *in = vd_driver_get_info(d->name);
        CHECK(in != NULL);
        if (!in) {
            continue;
        }
        CHECK(!strcmp(in->name, d->name));
        CHECK(!strcmp(in->kind, vd_driver_type(d->name)));
        CHECK(in->can_create == (d->create != NULL));
        CHECK(in->can_compress == (d->pwrite_compressed != NULL));
        CHECK(in->has_bitmaps == (d->bitmap_add != NULL));
        CHECK(in->has_snapshots == (d->snapshot_list != NULL));
        CHECK(in->read_only == (d->pwrite == NULL));
        CHECK(in->can_amend == (d->amend != NULL));
        CHECK(in->can_check == (d->check != NULL));
        CHECK(in->supports_backing == d->supports_backing);
        CHECK(in->is_raw == ((d->flags & VD_DRV_RAW_FORMAT) != 0));
        CHECK(in->protocols && in->create_opts && in->amend_opts && in->open_opts);
        /* create options: the driver's plus "size", as -o help lists them */
        if (in->can_create) {
            CHECK(has_opt(in->create_opts, "size"));
            for (const vd_opt_desc *o = d->create_opts; o && o->name; o++) {
                CHECK(has_opt(in->create_opts, o->name));
            }
        } else {
            CHECK(count_opts(in->create_opts) == 0);
        }
        if (!in->can_amend) {
            CHECK(count_opts(in->amend_opts) == 0);
        }
        /* a pointer that stays valid: the same answer twice */
        CHECK(vd_driver_get_info(d->name) == in);
    }
    CHECK(vd_driver_get_info("no-such-driver") == NULL && vd_get_errno() == ENOENT);
    CHECK(vd_driver_get_info(NULL) == NULL);
}

/* What the tools used to hard-code, now answered by the drivers. */
static void test_known_capabilities(void)
{
    const vd_driver_info *raw = vd_driver_get_info("raw");
    const vd_driver_info *q2 = vd_driver_get_info("qcow2");
    const vd_driver_info *qcow = vd_driver_get_info("qcow");
    const vd_driver_info *file = vd_driver_get_info("file");
    CHECK(raw && q2 && qcow && file);
    if (!raw || !q2 || !qcow || !file) {
        return;
    }
    CHECK(raw->is_raw && !raw->can_compress && !raw->has_bitmaps && !raw->can_amend);
    CHECK(q2->can_compress && q2->has_bitmaps && q2->has_snapshots && q2->can_amend);
    CHECK(qcow->can_compress && !qcow->has_bitmaps);
    CHECK(!strcmp(file->kind, "protocol") && !strcmp(raw->kind, "format"));
    /* qemu-img amend -f qcow2 -o help */
    static const char *const amendable[] = {
        "backing_file",      "backing_fmt",       "compat",          "data_file",
        "data_file_raw",     "lazy_refcounts",    "refcount_bits",   "size",
        "encrypt.state",     "encrypt.keyslot",   "encrypt.old-secret", "encrypt.new-secret",
        "encrypt.iter-time", NULL};
    CHECK(count_opts(q2->amend_opts) == 13);
    for (size_t i = 0; amendable[i]; i++) {
        CHECK(has_opt(q2->amend_opts, amendable[i]));
    }
    CHECK(!has_opt(q2->amend_opts, "cluster_size"));
    CHECK(has_opt(q2->create_opts, "cluster_size"));
    CHECK(vd_driver_raw_format() == vd_driver_find("raw"));
}

/* QEMU's bdrv_find_protocol: prefix, else probe_device, else file. */
static void test_protocol_pick(void)
{
    char path[] = "/tmp/vdisk-registry-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    CHECK(vd_protocol_for(path) == vd_driver_find("file"));
    CHECK(vd_protocol_for("/nonexistent/new.img") == vd_driver_find("file"));
    CHECK(vd_protocol_for(NULL) == vd_driver_find("file"));
    CHECK(vd_protocol_for("/dev/null") == vd_driver_find("host_device"));
    CHECK(vd_protocol_for("nbd://localhost/x") == vd_driver_find("nbd"));
    CHECK(vd_protocol_for("file:/dev/null") == vd_driver_find("file"));
    CHECK(vd_protocol_for("dir/a:b") == vd_driver_find("file"));
    unlink(path);
}

/* Driver modules (drivers.c): every listed driver answers vd_driver_get_info
 * (a module's loads it, from the build tree); a module's driver is the same
 * by name and by prefix, and is never a stub here, where the modules are. */
static void test_modules(void)
{
    for (size_t i = 0; i < vd_driver_count(); i++) {
        const char *name = vd_driver_name(i);
        const vd_driver_info *in = vd_driver_get_info(name);
        CHECK(in != NULL && !strcmp(in->name, name));
        const vd_driver *d = vd_driver_find(name);
        CHECK(d != NULL && !(d->flags & VD_DRV_MODULE_MISSING));
    }
    for (size_t m = 0; vd_driver_module_name(m); m++) {
        const char *name = vd_driver_module_name(m);
        const vd_driver *d = vd_driver_find(name);
        CHECK(d != NULL && !strcmp(d->name, name) && d->kind == VD_DRV_PROTOCOL);
        char fn[64];
        snprintf(fn, sizeof(fn), "%s:x", d->protocols[0]);
        CHECK(vd_driver_find_protocol(fn) == d);
        CHECK(vd_driver_get_info(name) == vd_driver_get_info(name));
    }
}

static void test_objects(void)
{
    bool secret = false, x509 = false, psk = false;
    for (size_t i = 0; i < vd_object_type_count(); i++) {
        const char *t = vd_object_type_name(i);
        secret |= !strcmp(t, "secret");
        x509 |= !strcmp(t, "tls-creds-x509");
        psk |= !strcmp(t, "tls-creds-psk");
    }
    CHECK(secret && x509 && psk);
    CHECK(vd_object_type_name(vd_object_type_count()) == NULL);

    uint8_t *data = NULL;
    size_t len = 0;
    CHECK(vd_object_add("secret,id=k1,data=abc") == 0);
    CHECK(vd_secret_lookup("k1", &data, &len, NULL) == 0 && len == 3 &&
          !memcmp(data, "abc", 3));
    free(data);
    /* ids are unique across types */
    CHECK(vd_object_add("tls-creds-psk,id=k1,dir=/nonexistent,endpoint=server") < 0);
    CHECK(strstr(vd_get_error(), "already exists") != NULL);
    /* the type list in the message comes from the table */
    CHECK(vd_object_add("tls-creds-anon,id=a1") < 0);
    CHECK(strstr(vd_get_error(), "secret, tls-creds-x509, tls-creds-psk") != NULL);
    /* unknown properties are refused by the registry from the type's table */
    CHECK(vd_object_add("tls-creds-x509,id=t1,dir=/x,bogus=1") < 0);
    CHECK(strstr(vd_get_error(), "Invalid parameter 'bogus'") != NULL);
    /* a failed TLS add registers nothing */
    CHECK(vd_object_add("tls-creds-x509,id=t2,dir=/nonexistent/vdisk,endpoint=server") < 0);
    const vd_object_type *type = NULL;
    CHECK(vd_object_find("t2", &type, false) == NULL);
    /* a secret looked up as something else */
    CHECK(vd_object_find("k1", &type, false) != NULL && type && !strcmp(type->type, "secret"));

    /* delete, then the id is free again */
    CHECK(vd_object_del("k1") == 0);
    vd_error *err = NULL;
    CHECK(vd_secret_lookup("k1", &data, &len, &err) == -ENOENT);
    vd_error_free(err);
    CHECK(vd_object_del("k1") < 0 && vd_get_errno() == ENOENT);
    CHECK(vd_object_add("secret,id=k1,data=second") == 0);
    CHECK(vd_secret_lookup("k1", &data, &len, NULL) == 0 && len == 6);
    free(data);
    CHECK(vd_object_del("k1") == 0);
}

/* The range check lives in io.c: public and internal callers alike. */
static void test_range(void)
{
    char path[] = "/tmp/vdisk-range-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    CHECK(ftruncate(fd, 65536) == 0);
    close(fd);
    uint8_t buf[512];
    memset(buf, 0x5a, sizeof(buf));

    /* an image's top node (raw over file): no write past the end */
    vd_node *top = vd_node_open(path, "raw", NULL, VD_NODE_RDWR, NULL);
    CHECK(top != NULL);
    if (top) {
        CHECK(vd_node_pwrite(top, 65536, 512, buf, 0) == -ERANGE);
        CHECK(vd_node_pwrite(top, 65024, 1024, buf, 0) == -ERANGE);
        CHECK(vd_node_pwrite_zeroes(top, 65536, 512, 0) == -ERANGE);
        CHECK(vd_node_discard(top, 65536, 512) == -ERANGE);
        CHECK(vd_node_pwrite(top, 65024, 512, buf, 0) == 0);
        /* internal reads past the end read zeroes; strict ones fail */
        memset(buf, 1, sizeof(buf));
        CHECK(vd_node_pread(top, 65536, 512, buf, 0) == 0 && vd_buffer_is_zero(buf, 512));
        CHECK(vd_node_pread(top, 65536, 512, buf, VD_REQ_STRICT_RANGE) == -ERANGE);
        CHECK(vd_node_get_length(top) == 65536);
        vd_node_close(top);
    }
    /* a file child may grow: a format writes its metadata there */
    vd_node *file = vd_node_open_file(path, NULL, VD_NODE_RDWR | VD_NODE_RESIZE, NULL);
    CHECK(file != NULL);
    if (file) {
        CHECK(vd_node_pwrite(file, 65536, 512, buf, 0) == 0);
        CHECK(vd_node_get_length(file) == 65536 + 512);
        vd_node_close(file);
    }
    /* the public API: EINVAL and the "out of range" message */
    vd_image *img = vd_open(path, "raw", NULL, VD_OPEN_RDWR);
    CHECK(img != NULL);
    if (img) {
        CHECK(vd_pwrite(img, buf, 512, 65536 + 512, 0) < 0 && vd_get_errno() == EINVAL &&
              strstr(vd_get_error(), "out of range"));
        CHECK(vd_pread(img, buf, 512, 65536 + 1) < 0 && strstr(vd_get_error(), "out of range"));
        CHECK(vd_pread(img, buf, 512, 65536) == 0);
        vd_close(img);
    }
    unlink(path);
}

int main(void)
{
    test_driver_info_matches_table();
    test_known_capabilities();
    test_protocol_pick();
    test_modules();
    test_objects();
    test_range();
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("ok\n");
    return 0;
}
