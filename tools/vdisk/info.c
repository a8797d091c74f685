/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * vdisk info: what qemu-img info prints, in human form or as qemu-img's
 * ImageInfo JSON document; --backing-chain walks the chain.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmds.h"
#include "img.h"
#include "qjson.h"

typedef struct {
    vd_info *info;
    char *opened_as; /* the name the layer was opened by */
} layer;

static struct json_object *snapshot_json(const vd_snapshot_info *sn)
{
    struct json_object *o = json_object_new_object();
    /* SnapshotInfo's member order */
    qjson_add_str(o, "id", sn->id);
    qjson_add_str(o, "name", sn->name);
    qjson_add_int(o, "vm-state-size", (int64_t)sn->vm_state_size);
    qjson_add_int(o, "date-sec", (int64_t)sn->date_sec);
    qjson_add_int(o, "date-nsec", (int64_t)sn->date_nsec);
    qjson_add_int(o, "vm-clock-sec", (int64_t)(sn->vm_clock_nsec / 1000000000ULL));
    qjson_add_int(o, "vm-clock-nsec", (int64_t)(sn->vm_clock_nsec % 1000000000ULL));
    if (sn->icount != UINT64_MAX) {
        qjson_add_int(o, "icount", (int64_t)sn->icount);
    }
    return o;
}

static struct json_object *format_specific(const vd_info *info)
{
    if (!info->format_specific_json || !*info->format_specific_json) {
        return NULL;
    }
    struct json_object *fs = json_tokener_parse(info->format_specific_json);
    if (fs && !json_object_is_type(fs, json_type_object)) {
        json_object_put(fs);
        fs = NULL;
    }
    return fs;
}

static struct json_object *info_json(const vd_info *info)
{
    struct json_object *o = json_object_new_object();
    /* ImageInfo's member order (QAPI declaration order) */
    qjson_add_str(o, "filename", info->filename);
    qjson_add_str(o, "format", info->format);
    if (info->has_driver_info) {
        qjson_add_bool(o, "dirty-flag", info->dirty_flag);
    }
    if (info->actual_size >= 0) {
        qjson_add_int(o, "actual-size", info->actual_size);
    }
    qjson_add_int(o, "virtual-size", (int64_t)info->virtual_size);
    if (info->cluster_size) {
        qjson_add_int(o, "cluster-size", info->cluster_size);
    }
    if (info->encrypted) {
        qjson_add_bool(o, "encrypted", true);
    }
    if (info->backing_filename && *info->backing_filename) {
        qjson_add_str(o, "backing-filename", info->backing_filename);
        if (info->full_backing_filename) {
            qjson_add_str(o, "full-backing-filename", info->full_backing_filename);
        }
        if (info->backing_format && *info->backing_format) {
            qjson_add_str(o, "backing-filename-format", info->backing_format);
        }
    }
    if (info->nb_snapshots) {
        struct json_object *a = json_object_new_array();
        for (size_t i = 0; i < info->nb_snapshots; i++) {
            json_object_array_add(a, snapshot_json(&info->snapshots[i]));
        }
        json_object_object_add(o, "snapshots", a);
    }
    struct json_object *fs = format_specific(info);
    if (fs) {
        json_object_object_add(o, "format-specific", fs);
    }
    return o;
}

static void info_human(const vd_info *info)
{
    printf("image: %s\n", info->filename);
    printf("file format: %s\n", info->format);
    printf("virtual size: %s (%" PRIu64 " bytes)\n", tool_human_size(info->virtual_size),
           info->virtual_size);
    printf("disk size: %s\n",
           info->actual_size >= 0 ? tool_human_size((uint64_t)info->actual_size) : "unavailable");
    if (info->encrypted) {
        printf("encrypted: yes\n");
    }
    if (info->cluster_size) {
        printf("cluster_size: %u\n", info->cluster_size);
    }
    if (info->dirty_flag) {
        printf("cleanly shut down: no\n");
    }
    if (info->backing_filename && *info->backing_filename) {
        printf("backing file: %s", info->backing_filename);
        if (!info->full_backing_filename) {
            printf(" (cannot determine actual path)");
        } else if (strcmp(info->backing_filename, info->full_backing_filename)) {
            printf(" (actual path: %s)", info->full_backing_filename);
        }
        printf("\n");
        if (info->backing_format && *info->backing_format) {
            printf("backing file format: %s\n", info->backing_format);
        }
    }
    img_print_snapshots(info->snapshots, info->nb_snapshots);
    struct json_object *fs = format_specific(info);
    if (fs) {
        printf("Format specific information:\n");
        struct json_object *data = NULL;
        if (json_object_object_get_ex(fs, "data", &data)) {
            qjson_dump_human(stdout, data, 1);
        }
        json_object_put(fs);
    }
}

int cmd_info(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"format", required_argument, NULL, 'f'},
        {"output", required_argument, NULL, OPT_OUTPUT},
        {"backing-chain", no_argument, NULL, OPT_BACKING_CHAIN},
        {"object", required_argument, NULL, OPT_OBJECT},
        {"image-opts", no_argument, NULL, OPT_IMAGE_OPTS},
        {"force-share", no_argument, NULL, 'U'},
        {NULL, 0, NULL, 0},
    };
    img_common co = {0};
    bool chain = false;
    int c;

    while ((c = getopt_long(argc, argv, ":f:hU", longopts, NULL)) != -1) {
        switch (img_common_option(&co, "info", c, argv)) {
        case IMG_OPT_HANDLED:
            continue;
        case IMG_OPT_HELP:
            return 0;
        case IMG_OPT_FAIL:
            return 1;
        }
        switch (c) {
        case OPT_BACKING_CHAIN:
            chain = true;
            break;
        default:
            return img_bad_option(c, argv);
        }
    }
    const char *fmt = co.fmt, *output = co.output;
    bool image_opts = co.image_opts, force_share = co.force_share;
    if (optind != argc - 1) {
        return img_usage_error("Expecting one image file name");
    }
    enum img_output ofmt = IMG_OUTPUT_HUMAN;
    if (output && !img_parse_output(output, &ofmt)) {
        return 1;
    }

    layer *layers = NULL;
    size_t nlayers = 0;
    int ret = 1;
    char *name = strdup(argv[optind]);
    char *lfmt = fmt ? strdup(fmt) : NULL;

    while (name) {
        /* A chain that names an earlier layer again would never end. */
        for (size_t i = 0; i < nlayers; i++) {
            if (!strcmp(layers[i].opened_as, name)) {
                tool_error("Backing file '%s' creates an infinite loop.", name);
                goto out;
            }
        }
        unsigned flags = VD_OPEN_NO_BACKING | VD_OPEN_NO_IO;
        if (force_share) {
            flags |= VD_OPEN_FORCE_SHARE;
        }
        vd_image *img = tool_open(name, lfmt, image_opts, NULL, flags, false);
        if (!img) {
            goto out;
        }
        vd_info *info = NULL;
        if (vd_get_info(img, &info) < 0) {
            tool_error_lib("Could not get information about '%s'", name);
            vd_close(img);
            goto out;
        }
        vd_close(img);
        layer *nl = realloc(layers, (nlayers + 1) * sizeof(*layers));
        if (!nl) {
            vd_info_free(info);
            tool_error("Out of memory");
            goto out;
        }
        layers = nl;
        if (!info->filename) {
            info->filename = strdup(name);
        }
        layers[nlayers].info = info;
        layers[nlayers++].opened_as = name;
        name = NULL;
        if (!info->format) {
            info->format = strdup("");
        }

        free(lfmt);
        lfmt = NULL;
        /* only the top image is named by the command line's options */
        image_opts = false;
        if (chain && info->backing_filename && *info->backing_filename) {
            if (!info->full_backing_filename) {
                tool_error("Could not determine absolute backing filename, but backing "
                           "filename '%s' present",
                           info->backing_filename);
                goto out;
            }
            name = strdup(info->full_backing_filename);
            if (info->backing_format && *info->backing_format) {
                lfmt = strdup(info->backing_format);
            }
        }
    }

    if (ofmt == IMG_OUTPUT_JSON) {
        if (chain) {
            struct json_object *a = json_object_new_array();
            for (size_t i = 0; i < nlayers; i++) {
                json_object_array_add(a, info_json(layers[i].info));
            }
            qjson_print(stdout, a);
            json_object_put(a);
        } else {
            struct json_object *o = info_json(layers[0].info);
            qjson_print(stdout, o);
            json_object_put(o);
        }
    } else {
        for (size_t i = 0; i < nlayers; i++) {
            if (i) {
                printf("\n");
            }
            info_human(layers[i].info);
        }
    }
    ret = 0;
out:
    free(name);
    free(lfmt);
    for (size_t i = 0; i < nlayers; i++) {
        vd_info_free(layers[i].info);
        free(layers[i].opened_as);
    }
    free(layers);
    return ret;
}
