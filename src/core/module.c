/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Finding and loading driver modules (module.h).  Where a module is looked
 * for, in order:
 *   1. $VDISK_MODULE_DIR when it is set (a colon-separated list): then
 *      only there, so that a test or a package says exactly where modules
 *      come from;
 *   2. the build tree's module directory, when the running program is
 *      itself inside the build tree (build/vdisk works uninstalled);
 *   3. the installed module directory, LIBDIR/vdisk.
 */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "module-paths.h"
#include "module.h"

static char *host_vasprintf(const char *fmt, va_list ap)
{
    char *s = NULL;
    return vasprintf(&s, fmt, ap) < 0 ? NULL : s;
}

static int host_error_setv(vd_error **errp, int err, const char *fmt, va_list ap)
{
    char *msg = host_vasprintf(fmt, ap);
    int r = vd_error_set(errp, err, "%s", msg ? msg : "out of memory");
    free(msg);
    return r;
}

static int host_error_setg_errnov(vd_error **errp, int err, const char *fmt, va_list ap)
{
    char *msg = host_vasprintf(fmt, ap);
    int r = vd_error_setg_errno(errp, err, "%s", msg ? msg : "out of memory");
    free(msg);
    return r;
}

static void host_warnv(const char *fmt, va_list ap)
{
    char *msg = host_vasprintf(fmt, ap);
    vd_warn("%s", msg ? msg : "out of memory");
    free(msg);
}

static const vd_module_host host = {
    .abi = VD_MODULE_ABI,
    .size = sizeof(vd_module_host),
    .driver_size = sizeof(vd_driver),
    .node_size = sizeof(vd_node),
    .malloc = vd_malloc,
    .calloc = vd_calloc,
    .strdup = vd_strdup,
    .vasprintf = host_vasprintf,
    .uri_unescape = vd_uri_unescape,
    .prealloc_name = vd_prealloc_name,
    .snapshot_list_free = vd_snapshot_list_free,
    .error_setv = host_error_setv,
    .error_setg_errnov = host_error_setg_errnov,
    .warnv = host_warnv,
    .opts_new = vd_opts_new,
    .opts_free = vd_opts_free,
    .opts_set = vd_opts_set,
    .opts_get = vd_opts_get,
    .opts_count = vd_opts_count,
    .opts_key = vd_opts_key,
    .opts_get_u64 = vd_opts_get_u64,
    .opts_get_size = vd_opts_get_size,
    .opts_get_enum = vd_opts_get_enum,
    .opts_extract_prefix = vd_opts_extract_prefix,
    .opts_parse_json_filename = vd_opts_parse_json_filename,
    .secret_lookup = vd_secret_lookup,
    .secret_lookup_utf8 = vd_secret_lookup_utf8,
};

/* ------------------------------------------------------------ directories */

enum { MAX_DIRS = 8 };
static pthread_once_t dirs_once = PTHREAD_ONCE_INIT;
static char *dirs[MAX_DIRS];
static size_t ndirs;
static char dirs_text[1024]; /* for messages: "a, b" */

static void add_dir(const char *d, size_t n)
{
    if (n == 0 || ndirs == MAX_DIRS) {
        return;
    }
    char *s = strndup(d, n);
    if (!s) {
        return;
    }
    dirs[ndirs++] = s;
    size_t used = strlen(dirs_text);
    snprintf(dirs_text + used, sizeof(dirs_text) - used, "%s%s", used ? ", " : "", s);
}

/* Whether the running program lives in the build tree this library was
 * built in (so build/vdisk finds build/src/protocols/vdisk-*.so). */
static bool running_from_build_tree(void)
{
    char exe[PATH_MAX], root[PATH_MAX];
    if (!realpath("/proc/self/exe", exe) || !realpath(VD_BUILD_ROOT, root)) {
        return false; /* no build tree (any more) */
    }
    size_t n = strlen(root);
    return !strncmp(exe, root, n) && exe[n] == '/';
}

static void find_dirs(void)
{
    const char *env = secure_getenv("VDISK_MODULE_DIR");
    if (env) {
        while (*env) {
            size_t n = strcspn(env, ":");
            add_dir(env, n);
            env += n + (env[n] == ':');
        }
        if (!ndirs) {
            snprintf(dirs_text, sizeof(dirs_text), "VDISK_MODULE_DIR is empty");
        }
        return;
    }
    if (running_from_build_tree()) {
        add_dir(VD_BUILD_MODULE_DIR, strlen(VD_BUILD_MODULE_DIR));
    }
    add_dir(VD_INSTALL_MODULE_DIR, strlen(VD_INSTALL_MODULE_DIR));
}

/* The path of file in the first directory that has it, or NULL. */
static char *module_path(const char *file)
{
    pthread_once(&dirs_once, find_dirs);
    for (size_t i = 0; i < ndirs; i++) {
        char *p = vd_asprintf("%s/%s", dirs[i], file);
        if (p && access(p, R_OK) == 0) {
            return p;
        }
        free(p);
    }
    return NULL;
}

bool vd_module_exists(const char *file)
{
    char *p = module_path(file);
    free(p);
    return p != NULL;
}

const vd_driver *vd_module_load(const char *file, const char *driver, char *msg,
                                size_t msglen)
{
    char *path = module_path(file);
    if (!path) {
        snprintf(msg, msglen, "module %s not found (looked in %s)", file,
                 dirs_text[0] ? dirs_text : "no directory");
        return NULL;
    }
    /* RTLD_GLOBAL, as QEMU's modules (GModule's default): what a module's
     * library dlopens in turn (libglusterfs's translators, ceph's plugins)
     * sees its symbols in the global scope, as when it was linked in.  The
     * module itself exports vd_module_entry only, taken with dlsym on its
     * handle.  Never unloaded (its libraries' threads and atexit
     * handlers). */
    void *h = dlopen(path, RTLD_NOW | RTLD_GLOBAL | RTLD_NODELETE);
    if (!h) {
        snprintf(msg, msglen, "module %s cannot be loaded: %s", path, dlerror());
        free(path);
        return NULL;
    }
    vd_module_entry_fn *entry;
    *(void **)&entry = dlsym(h, VD_MODULE_ENTRY);
    const vd_driver *drv = entry ? entry(&host) : NULL;
    if (!drv || strcmp(drv->name, driver) != 0) {
        snprintf(msg, msglen, "module %s is not a %s driver of this vdisk build (%s)", path,
                 driver, VD_MODULE_ABI);
        dlclose(h);
        free(path);
        return NULL;
    }
    free(path);
    return drv;
}
