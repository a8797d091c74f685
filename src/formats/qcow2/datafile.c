/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * qcow2 external data files: the data file name header extension
 * (0x44415441), opening the data file child, the create options
 * data_file / data_file_raw, and repointing (amend data_file=).
 *
 * Specification: QEMU's docs/interop/qcow2.txt, "External data file name"
 * and incompatible bit 2 / autoclear bit 1.  With a data file, guest data
 * lives in the data file at host offset = guest offset and has no
 * refcounts; the qcow2 file keeps only metadata.  Compression and internal
 * snapshots are not possible (refused).  With data_file_raw the data file
 * stays a valid raw image: every cluster is mapped (metadata preallocation)
 * and zero writes also write zeroes to the data file.
 *
 * A name found in an image header is never followed as a json: description
 * or over a protocol other than "file" (vd_resolve_backing_name), and a
 * relative name is taken relative to the image's own directory (QEMU 7.2
 * takes it relative to the current directory; both agree when the two are
 * the same).  A data file given by the user (the open option data-file=,
 * or data-file.* options) is used as given.
 */
#include <stdio.h>
#include <stdlib.h>

#include "qcow2.h"

int qcow2_data_file_parse_ext(qcow2_state *s, const uint8_t *data, uint32_t len,
                              vd_error **errp)
{
    if (len > QCOW2_MAX_BACKING_NAME) {
        return vd_error_set(errp, EINVAL, "ERROR: ext_data_file: len=%u too large (>%u)", len,
                            QCOW2_MAX_BACKING_NAME);
    }
    char *name = malloc((size_t)len + 1);
    if (!name) {
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    memcpy(name, data, len);
    name[len] = 0;
    if (strlen(name) != len) {
        free(name);
        return vd_error_set(errp, EINVAL, "Data file name contains a NUL byte");
    }
    free(s->data_file_name);
    s->data_file_name = NULL;
    if (!len) {
        free(name); /* an empty name is no name: data-file= must be given */
        return 0;
    }
    s->data_file_name = name;
    return 0;
}

void qcow2_data_file_free(qcow2_state *s)
{
    free(s->data_file_name);
    s->data_file_name = NULL;
    s->data = NULL;
}

int qcow2_data_file_open(vd_node *bs, vd_opts *opts, vd_error **errp)
{
    qcow2_state *s = bs->opaque;
    const char *user = vd_opts_get(opts, "data-file");
    vd_opts *sub = vd_opts_extract_prefix(opts, "data-file");
    bool has = (s->incompatible_features & QCOW2_INCOMPAT_DATA_FILE) != 0;
    int ret = 0;

    s->data = bs->file;
    if (!has) {
        vd_opts_free(sub);
        if (user) {
            return vd_error_set(errp, EINVAL, "'data-file' can only be set for images with an "
                                "external data file");
        }
        /* a stray name without the feature bit is ignored, as QEMU does */
        return 0;
    }
    if (s->version < 3) {
        vd_opts_free(sub);
        return vd_error_set(errp, EINVAL, "External data files need compat=1.1");
    }
    if (s->autoclear_features & QCOW2_AUTOCLEAR_DATA_FILE_RAW && s->backing_file) {
        vd_opts_free(sub);
        return vd_error_set(errp, EINVAL, "Images with a raw external data file cannot have a "
                            "backing file");
    }
    char *name = NULL;
    if (user) {
        name = vd_strdup(user);
    } else if (sub && vd_opts_count(sub)) {
        name = NULL; /* described by the options */
    } else if (s->data_file_name) {
        name = vd_resolve_backing_name(bs, s->data_file_name, errp);
        if (!name) {
            vd_opts_free(sub);
            return -EPERM;
        }
    } else {
        vd_opts_free(sub);
        return vd_error_set(errp, EINVAL, "'data-file' is required for this image");
    }
    unsigned flags = bs->flags & (VD_NODE_RDWR | VD_NODE_FORCE_SHARE | VD_NODE_RESIZE |
                                  VD_NODE_NO_SHARE | VD_NODE_EXPORT);
    vd_node *d = vd_node_open_file(name, sub, flags, errp);
    if (!d) {
        vd_error_prepend(errp, "Could not open data file '%s': ",
                         name ? name : "(options)");
        ret = -EIO;
    } else {
        d->parent = bs;
        bs->data_file = d;
        s->data = d;
    }
    free(name);
    vd_opts_free(sub);
    return ret;
}

int qcow2_data_file_create_opts(const vd_opts *opts, int version, const char *backing_file,
                                const char **name, bool *raw, vd_error **errp)
{
    *name = vd_opts_get(opts, "data_file");
    if (*name && !**name) {
        *name = NULL;
    }
    if (vd_opts_get_bool(opts, "data_file_raw", false, raw, errp) < 0) {
        return -EINVAL;
    }
    if (*raw && !*name) {
        return vd_error_set(errp, EINVAL, "data-file-raw requires data-file");
    }
    if (!*name) {
        return 0;
    }
    if (version < 3) {
        return vd_error_set(errp, EINVAL, "External data files are only supported with "
                            "compatibility level 1.1 and above (use version=v3 or greater)");
    }
    if (*raw && backing_file) {
        return vd_error_set(errp, EINVAL,
                            "Backing file and data-file-raw cannot be used at the same time");
    }
    if (strlen(*name) > QCOW2_MAX_BACKING_NAME) {
        return vd_error_set(errp, EINVAL, "Data file name too long");
    }
    return 0;
}

int qcow2_data_file_create(const char *image, const char *name, uint64_t size,
                           vd_prealloc prealloc, vd_error **errp)
{
    /* next to the image, where open will look for it */
    char *path = name[0] == '/' ? vd_strdup(name) : vd_path_combine(image, name);
    vd_opts *o = vd_opts_new();
    char sz[32];
    int ret;
    if (!path || !o) {
        free(path);
        vd_opts_free(o);
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    snprintf(sz, sizeof(sz), "%llu", (unsigned long long)size);
    vd_opts_set(o, "size", sz);
    /* as QEMU, whose file gets the image's options: falloc and full
     * allocate the data file as it is created */
    if (prealloc == VD_PREALLOC_FALLOC || prealloc == VD_PREALLOC_FULL) {
        vd_opts_set(o, "preallocation", prealloc == VD_PREALLOC_FULL ? "full" : "falloc");
    }
    ret = vd_create_file(path, o, errp);
    if (ret < 0) {
        vd_error_prepend(errp, "Could not create data file '%s': ", path);
    }
    free(path);
    vd_opts_free(o);
    return ret;
}

void qcow2_data_file_delete(const char *image, const char *name)
{
    char *path = name[0] == '/' ? vd_strdup(name) : vd_path_combine(image, name);
    if (path) {
        vd_create_delete_file(path);
    }
    free(path);
}

/* Append the extension to a header being built (create). */
int qcow2_data_file_put_ext(uint8_t *buf, size_t cap, size_t *pos, const char *name)
{
    size_t len = strlen(name), padded = (len + 7) & ~(size_t)7;
    if (*pos + 8 + padded + 8 > cap) {
        return -ENOSPC;
    }
    vd_st_be32(buf + *pos, QCOW2_EXT_DATA_FILE);
    vd_st_be32(buf + *pos + 4, (uint32_t)len);
    memcpy(buf + *pos + 8, name, len);
    memset(buf + *pos + 8 + len, 0, padded - len);
    *pos += 8 + padded;
    memset(buf + *pos, 0, 8); /* end of extensions */
    return 0;
}

char *qcow2_data_file_info_json(const qcow2_state *s)
{
    if (!qcow2_has_data_file(s)) {
        return vd_strdup("");
    }
    const char *raw = qcow2_data_file_is_raw(s) ? "true" : "false";
    if (!s->data_file_name) {
        return vd_asprintf(",\"data-file-raw\":%s", raw);
    }
    /* JSON string escaping of a name from the header */
    size_t n = strlen(s->data_file_name);
    char *esc = malloc(n * 6 + 1), *o = esc;
    if (!esc) {
        return NULL;
    }
    for (const unsigned char *p = (const unsigned char *)s->data_file_name; *p; p++) {
        if (*p == '"' || *p == '\\') {
            *o++ = '\\';
            *o++ = (char)*p;
        } else if (*p < 0x20) {
            o += sprintf(o, "\\u%04x", *p);
        } else {
            *o++ = (char)*p;
        }
    }
    *o = 0;
    char *r = vd_asprintf(",\"data-file\":\"%s\",\"data-file-raw\":%s", esc, raw);
    free(esc);
    return r;
}

int qcow2_set_data_file_name(qcow2_state *s, const char *name, vd_error **errp)
{
    size_t len = strlen(name);
    if (len > QCOW2_MAX_BACKING_NAME) {
        return vd_error_set(errp, EINVAL, "Data file name too long");
    }
    /* the extension travels with the preserved ones (qcow2_update_header) */
    size_t i;
    for (i = 0; i < s->nb_unknown_ext; i++) {
        if (s->unknown_ext[i].magic == QCOW2_EXT_DATA_FILE) {
            break;
        }
    }
    if (!len) {
        /* no name: the user must give data-file= when opening */
        if (i < s->nb_unknown_ext) {
            free(s->unknown_ext[i].data);
            memmove(&s->unknown_ext[i], &s->unknown_ext[i + 1],
                    (s->nb_unknown_ext - i - 1) * sizeof(*s->unknown_ext));
            s->nb_unknown_ext--;
        }
        free(s->data_file_name);
        s->data_file_name = NULL;
        return 0;
    }
    if (i == s->nb_unknown_ext) {
        qcow2_ext *n = realloc(s->unknown_ext, (s->nb_unknown_ext + 1) * sizeof(*n));
        if (!n) {
            return vd_error_set(errp, ENOMEM, "out of memory");
        }
        s->unknown_ext = n;
        s->cap_unknown_ext = s->nb_unknown_ext + 1;
        n[i].magic = QCOW2_EXT_DATA_FILE;
        n[i].len = 0;
        n[i].data = NULL;
        s->nb_unknown_ext++;
    }
    qcow2_ext *e = &s->unknown_ext[i];
    uint8_t *d = malloc(len);
    char *nm = vd_strdup(name);
    if (!d || !nm) {
        free(d);
        free(nm);
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    memcpy(d, name, len);
    free(e->data);
    e->data = d;
    e->len = (uint32_t)len;
    free(s->data_file_name);
    s->data_file_name = nm;
    return 0;
}
