/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include <ctype.h>

#include "observation.h"
#include "util.h"

static bool key_valid(const char *key) {
        size_t n = strlen(key);

        /* "E:", "A:", "B:" or "X:" followed by printable ASCII without '=' or spaces. */
        if (n < 3 || n > OBS_KEY_MAX || key[1] != ':' || !strchr("EABX", key[0]))
                return false;
        for (size_t i = 2; i < n; i++)
                if (!isgraph((unsigned char) key[i]) || key[i] == '=')
                        return false;
        return true;
}

int observation_set(struct observation *o, const char *key, const char *value) {
        char *v;

        if (!key_valid(key))
                return -EINVAL;
        v = strndup(value ? value : "", OBS_VALUE_MAX);
        if (!v)
                return -ENOMEM;
        for (size_t i = 0; i < o->n_entries; i++)
                if (streq(o->entries[i].key, key)) {
                        free(o->entries[i].value);
                        o->entries[i].value = v;
                        return 0;
                }
        if (o->n_entries >= OBS_ENTRIES_MAX) {
                free(v);
                return -E2BIG;
        }
        struct obs_entry *e = realloc(o->entries, (o->n_entries + 1) * sizeof(*e));
        if (!e) {
                free(v);
                return -ENOMEM;
        }
        o->entries = e;
        e[o->n_entries].key = strdup(key);
        if (!e[o->n_entries].key) {
                free(v);
                return -ENOMEM;
        }
        e[o->n_entries].value = v;
        o->n_entries++;
        return 0;
}

int observation_add_udev_property(struct observation *o, const char *name, const char *value) {
        char key[OBS_KEY_MAX + 1];

        if (o->n_entries >= OBS_ENTRIES_MAX - OBS_RESERVED)
                return -ENOSPC;
        if (!name || strlen(name) + 2 > OBS_KEY_MAX)
                return 0;
        snprintf(key, sizeof(key), "E:%s", name);
        return observation_set(o, key, value) == -ENOMEM ? -ENOMEM : 0;
}

const char *observation_get(const struct observation *o, const char *key) {
        for (size_t i = 0; i < o->n_entries; i++)
                if (streq(o->entries[i].key, key))
                        return o->entries[i].value;
        return NULL;
}

void observation_done(struct observation *o) {
        for (size_t i = 0; i < o->n_entries; i++) {
                free(o->entries[i].key);
                free(o->entries[i].value);
        }
        free(o->entries);
        free(o->kname);
        *o = (struct observation) {};
}

/* Values are written with C-style escapes so that any byte survives the text form. */
static void escape_value(FILE *f, const char *v) {
        for (const unsigned char *p = (const unsigned char *) v; *p; p++) {
                if (*p == '\\')
                        fputs("\\\\", f);
                else if (*p < 0x20 || *p == 0x7f)
                        fprintf(f, "\\x%02x", *p);
                else
                        fputc(*p, f);
        }
}

static int unescape_value(const char *s, char **ret) {
        char *out = malloc(strlen(s) + 1), *o = out;

        if (!out)
                return -ENOMEM;
        while (*s) {
                if (*s != '\\') {
                        *o++ = *s++;
                        continue;
                }
                s++;
                if (*s == '\\') {
                        *o++ = '\\';
                        s++;
                } else if (*s == 'x' && isxdigit((unsigned char) s[1]) && isxdigit((unsigned char) s[2])) {
                        char hex[3] = { s[1], s[2], 0 };
                        unsigned long c = strtoul(hex, NULL, 16);
                        if (c == 0) {
                                free(out);
                                return -EINVAL;
                        }
                        *o++ = (char) c;
                        s += 3;
                } else {
                        free(out);
                        return -EINVAL;
                }
        }
        *o = 0;
        *ret = out;
        return 0;
}

int observation_parse(const char *text, struct observation *ret, unsigned *ret_line) {
        struct observation o = {};
        unsigned line = 0;
        const char *p = text;
        int r = 0;

        while (*p) {
                const char *eol = strchrnul(p, '\n');
                _cleanup_free_ char *l = strndup(p, (size_t) (eol - p));
                char *eq;

                line++;
                p = *eol ? eol + 1 : eol;
                if (!l) {
                        r = -ENOMEM;
                        break;
                }
                if (l[0] == 0 || l[0] == '#')
                        continue;
                eq = strchr(l, '=');
                if (!eq) {
                        r = -EINVAL;
                        break;
                }
                *eq = 0;
                if (streq(l, "kname")) {
                        free(o.kname);
                        o.kname = strdup(eq + 1);
                        if (!o.kname) {
                                r = -ENOMEM;
                                break;
                        }
                        continue;
                }
                _cleanup_free_ char *v = NULL;
                r = unescape_value(eq + 1, &v);
                if (r < 0)
                        break;
                r = observation_set(&o, l, v);
                if (r < 0)
                        break;
        }
        if (r == 0 && !o.kname)
                r = -EINVAL;
        if (r < 0) {
                observation_done(&o);
                if (ret_line)
                        *ret_line = line;
                return r;
        }
        *ret = o;
        return 0;
}

int observation_format(const struct observation *o, char **ret) {
        char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);

        if (!f)
                return -ENOMEM;
        fprintf(f, "kname=%s\n", o->kname ? o->kname : "");
        for (size_t i = 0; i < o->n_entries; i++) {
                fprintf(f, "%s=", o->entries[i].key);
                escape_value(f, o->entries[i].value);
                fputc('\n', f);
        }
        if (fclose(f) != 0) {
                free(buf);
                return -ENOMEM;
        }
        *ret = buf;
        return 0;
}
