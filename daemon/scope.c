/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <limits.h>
#include <sys/stat.h>

#include "scope.h"
#include "util.h"

int scope_add(struct scope *s, const char *spec, const char **ret_error) {
        const char *dir = startswith(spec, "loop:");
        char **n, *canon;
        struct stat st;

        if (!dir) {
                *ret_error = "scope must be loop:DIR";
                return -EINVAL;
        }
        if (dir[0] != '/') {
                *ret_error = "scope directory must be an absolute path";
                return -EINVAL;
        }
        canon = realpath(dir, NULL);
        if (!canon) {
                *ret_error = "scope directory does not exist";
                return -errno;
        }
        if (stat(canon, &st) < 0 || !S_ISDIR(st.st_mode)) {
                free(canon);
                *ret_error = "scope must name a directory";
                return -ENOTDIR;
        }
        n = realloc(s->loop_dirs, (s->n_loop_dirs + 1) * sizeof(char *));
        if (!n) {
                free(canon);
                return -ENOMEM;
        }
        s->loop_dirs = n;
        s->loop_dirs[s->n_loop_dirs++] = canon;
        return 0;
}

bool scope_is_set(const struct scope *s) {
        return s->n_loop_dirs > 0;
}

bool scope_covers_dir(const struct scope *s, const char *dir) {
        if (!scope_is_set(s))
                return true;
        for (size_t i = 0; i < s->n_loop_dirs; i++)
                if (path_is_under(dir, s->loop_dirs[i]))
                        return true;
        return false;
}

bool scope_match(const struct scope *s, const struct observation *o) {
        const char *file;
        char path[PATH_MAX];
        size_t l;

        if (!scope_is_set(s))
                return true;
        file = observation_get(o, "A:loop/backing_file");
        if (isempty(file))
                file = observation_get(o, "X:parent_backing_file");
        if (isempty(file) || strlen(file) >= sizeof(path))
                return false;
        /* The kernel appends " (deleted)" once the file is unlinked; it is still ours. */
        strcpy(path, file);
        l = strlen(path);
        if (l > 10 && streq(path + l - 10, " (deleted)"))
                path[l - 10] = 0;
        for (size_t i = 0; i < s->n_loop_dirs; i++)
                if (path_is_under(path, s->loop_dirs[i]))
                        return true;
        return false;
}

void scope_done(struct scope *s) {
        for (size_t i = 0; i < s->n_loop_dirs; i++)
                free(s->loop_dirs[i]);
        free(s->loop_dirs);
        *s = (struct scope) {};
}
