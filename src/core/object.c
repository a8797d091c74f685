/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The object registry behind --object (QEMU's user-creatable objects).
 * The core knows no object type: each registers {type, props, add, del,
 * ref} in drivers.c's vd_object_types[] (secret in options.c, the TLS
 * credentials in src/nbd/tls.c).  Here: the checks common to every type
 * (qom-type known, id present and well-formed, unique across types, no
 * unknown property) and the id -> object table.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

typedef struct vd_object {
    char *id;
    const vd_object_type *type;
    void *obj;
    struct vd_object *next;
} vd_object;

static pthread_mutex_t objects_lock = PTHREAD_MUTEX_INITIALIZER;
static vd_object *objects;

size_t vd_object_type_count(void)
{
    size_t n = 0;
    while (vd_object_types[n]) {
        n++;
    }
    return n;
}

const char *vd_object_type_name(size_t i)
{
    return i < vd_object_type_count() ? vd_object_types[i]->type : NULL;
}

static const vd_object_type *type_find(const char *name)
{
    for (size_t i = 0; vd_object_types[i]; i++) {
        if (!strcmp(vd_object_types[i]->type, name)) {
            return vd_object_types[i];
        }
    }
    return NULL;
}

/* QEMU's id_wellformed: a letter, then letters, digits, '-', '.', '_'. */
static bool id_wellformed(const char *id)
{
    if (!isalpha((unsigned char)id[0])) {
        return false;
    }
    for (const char *p = id + 1; *p; p++) {
        if (!isalnum((unsigned char)*p) && !strchr("-._", *p)) {
            return false;
        }
    }
    return true;
}

static vd_object *find_locked(const char *id)
{
    for (vd_object *o = objects; id && o; o = o->next) {
        if (!strcmp(o->id, id)) {
            return o;
        }
    }
    return NULL;
}

static int unsupported_type(const char *type, vd_error **errp)
{
    char list[512] = "";
    size_t used = 0;
    for (size_t i = 0; vd_object_types[i] && used < sizeof(list); i++) {
        int n = snprintf(list + used, sizeof(list) - used, "%s%s", i ? ", " : "",
                         vd_object_types[i]->type);
        used += n > 0 ? (size_t)n : 0;
    }
    return vd_error_set(errp, ENOTSUP, "Object type '%s' is not supported (supported: %s)",
                        type, list);
}

int vd_object_add_parsed(const vd_opts *props, vd_error **errp)
{
    const char *type_name = vd_opts_get(props, "qom-type");
    const char *id = vd_opts_get(props, "id");
    if (!type_name) {
        return vd_error_set(errp, EINVAL, "Parameter 'qom-type' is missing");
    }
    const vd_object_type *type = type_find(type_name);
    if (!type) {
        return unsupported_type(type_name, errp);
    }
    if (!id) {
        return vd_error_set(errp, EINVAL, "Parameter 'id' is missing");
    }
    if (!id_wellformed(id)) {
        return vd_error_set(errp, EINVAL,
                            "Parameter 'id' expects an identifier (a letter, then letters, "
                            "digits, '-', '.' or '_'), not '%s'",
                            id);
    }
    if (type->props) {
        for (size_t i = 0; i < vd_opts_count(props); i++) {
            const char *k = vd_opts_key(props, i);
            bool known = !strcmp(k, "qom-type") || !strcmp(k, "id");
            for (const vd_opt_desc *d = type->props; d->name && !known; d++) {
                known = !strcmp(d->name, k);
            }
            if (!known) {
                return vd_error_set(errp, EINVAL, "Invalid parameter '%s' for object type '%s'",
                                    k, type_name);
            }
        }
    }
    /* A taken id is refused before anything is loaded, and checked again
     * when registering: add runs without the lock (it may look other
     * objects up). */
    pthread_mutex_lock(&objects_lock);
    bool taken = find_locked(id) != NULL;
    pthread_mutex_unlock(&objects_lock);
    if (taken) {
        return vd_error_set(errp, EEXIST, "An object with id '%s' already exists", id);
    }
    vd_object *o = calloc(1, sizeof(*o));
    if (!o || !(o->id = strdup(id))) {
        free(o);
        return vd_error_set(errp, ENOMEM, "Out of memory");
    }
    o->type = type;
    int r = type->add(id, props, &o->obj, errp);
    if (r < 0) {
        free(o->id);
        free(o);
        return r;
    }
    pthread_mutex_lock(&objects_lock);
    if (find_locked(id)) {
        r = vd_error_set(errp, EEXIST, "An object with id '%s' already exists", id);
    } else {
        o->next = objects;
        objects = o;
    }
    pthread_mutex_unlock(&objects_lock);
    if (r < 0) {
        type->del(o->obj);
        free(o->id);
        free(o);
    }
    return r;
}

void *vd_object_find(const char *id, const vd_object_type **type, bool ref)
{
    void *obj = NULL;
    pthread_mutex_lock(&objects_lock);
    vd_object *o = find_locked(id);
    if (o) {
        obj = ref && o->type->ref ? o->type->ref(o->obj) : o->obj;
        if (type) {
            *type = o->type;
        }
    }
    pthread_mutex_unlock(&objects_lock);
    if (!o) {
        errno = ENOENT;
    }
    return obj;
}

int vd_object_del(const char *id)
{
    pthread_mutex_lock(&objects_lock);
    vd_object *o = NULL;
    for (vd_object **p = &objects; id && *p; p = &(*p)->next) {
        if (!strcmp((*p)->id, id)) {
            o = *p;
            *p = o->next;
            break;
        }
    }
    pthread_mutex_unlock(&objects_lock);
    if (!o) {
        vd_set_public_error(ENOENT, "No object with id '%s'", id ? id : "");
        errno = ENOENT;
        return -1;
    }
    o->type->del(o->obj);
    free(o->id);
    free(o);
    return 0;
}
