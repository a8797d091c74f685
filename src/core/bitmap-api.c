/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * vd_bitmap_list(): the persistent dirty bitmaps of an image, read from
 * the format-specific information drivers already publish ("bitmaps" in
 * qemu-img's JSON form), so no driver needs another callback for it.
 */
#include <json-c/json.h>
#include <stdlib.h>

#include "internal.h"
#include "vdisk-bitmap.h"

void vd_bitmap_list_free(vd_bitmap_info *list, size_t count)
{
    for (size_t i = 0; list && i < count; i++) {
        free(list[i].name);
    }
    free(list);
}

int vd_bitmap_list(vd_image *img, vd_bitmap_info **list, size_t *count)
{
    vd_info *info = NULL;
    *list = NULL;
    *count = 0;
    if (vd_get_info(img, &info) < 0) {
        return -1;
    }
    if (!info->format_specific_json) {
        vd_info_free(info);
        return 0;
    }
    json_object *root = json_tokener_parse(info->format_specific_json);
    vd_info_free(info);
    if (!root) {
        vd_set_public_error(EIO, "Could not parse the image's format-specific information");
        errno = EIO;
        return -1;
    }
    json_object *data, *bitmaps;
    if (!json_object_object_get_ex(root, "data", &data) ||
        !json_object_object_get_ex(data, "bitmaps", &bitmaps) ||
        !json_object_is_type(bitmaps, json_type_array)) {
        json_object_put(root);
        return 0;
    }
    size_t n = json_object_array_length(bitmaps);
    vd_bitmap_info *l = calloc(n ? n : 1, sizeof(*l));
    if (!l) {
        json_object_put(root);
        vd_set_public_error(ENOMEM, "out of memory");
        errno = ENOMEM;
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        json_object *b = json_object_array_get_idx(bitmaps, i), *v;
        if (json_object_object_get_ex(b, "name", &v)) {
            l[i].name = vd_strdup(json_object_get_string(v));
        }
        if (json_object_object_get_ex(b, "granularity", &v)) {
            l[i].granularity = (uint32_t)json_object_get_int64(v);
        }
        if (json_object_object_get_ex(b, "flags", &v) && json_object_is_type(v, json_type_array)) {
            for (size_t k = 0; k < json_object_array_length(v); k++) {
                const char *f = json_object_get_string(json_object_array_get_idx(v, k));
                if (f && !strcmp(f, "auto")) {
                    l[i].enabled = true;
                } else if (f && !strcmp(f, "in-use")) {
                    l[i].in_use = true;
                }
            }
        }
        if (!l[i].name) {
            vd_bitmap_list_free(l, n);
            json_object_put(root);
            vd_set_public_error(ENOMEM, "out of memory");
            errno = ENOMEM;
            return -1;
        }
    }
    json_object_put(root);
    *list = l;
    *count = n;
    return 0;
}
