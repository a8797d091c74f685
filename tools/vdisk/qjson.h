/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * JSON documents the way qemu-img prints them: QEMU's pretty printer (four
 * spaces, "key": value) with object members in the order QEMU's QDict hash
 * table iterates them, so `--output=json` is byte-identical to qemu-img's
 * when members are added in QAPI declaration order.  Also the human
 * rendering qemu-img uses for "Format specific information".
 */
#ifndef VDISK_QJSON_H
#define VDISK_QJSON_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <json-c/json.h>

/* Pretty text of obj (malloc'ed, no trailing newline). */
char *qjson_to_string(struct json_object *obj);
/* Print obj followed by a newline. */
void qjson_print(FILE *f, struct json_object *obj);
/* qemu's dump of a QAPI object: "key: value" lines, '-' in keys shown as
 * ' ', nested objects and lists indented by four spaces per level. */
void qjson_dump_human(FILE *f, struct json_object *obj, int indent);

/* Shorthands for building documents (add in QAPI declaration order). */
void qjson_add_str(struct json_object *o, const char *key, const char *val);
void qjson_add_int(struct json_object *o, const char *key, int64_t val);
void qjson_add_uint(struct json_object *o, const char *key, uint64_t val);
void qjson_add_bool(struct json_object *o, const char *key, bool val);

#endif
