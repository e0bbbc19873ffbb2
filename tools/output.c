/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "config.h"

#include "cli.h"
#include "util.h"

/* Labels, models and serials come from devices and may hold anything; a terminal must
 * never receive their control characters. */
char *cli_escape(const char *s) {
        size_t len = strlen(s);
        char *out = malloc(len * 4 + 1), *o = out;
        const unsigned char *p = (const unsigned char *) s;

        if (!out)
                return NULL;
        while (*p) {
                size_t n = 0;

                if (*p >= 0x20 && *p < 0x7f) {
                        *o++ = (char) *p++;
                        continue;
                }
                if (*p >= 0xc0) {
                        /* Copy a whole valid multi-byte sequence, except the C1 controls
                         * U+0080..U+009F (0xc2 0x80..0x9f): U+009B acts as ESC [. */
                        n = (*p >= 0xf0) ? 4 : (*p >= 0xe0) ? 3 : 2;
                        if (strlen((const char *) p) < n || !utf8_is_valid((const char *) p, n) ||
                            (p[0] == 0xc2 && p[1] < 0xa0))
                                n = 0;
                }
                if (n > 0) {
                        memcpy(o, p, n);
                        o += n;
                        p += n;
                } else {
                        o += sprintf(o, "\\x%02x", *p);
                        p++;
                }
        }
        *o = 0;
        return out;
}

size_t cli_width(const char *s) {
        size_t w = 0;

        for (const unsigned char *p = (const unsigned char *) s; *p; p++)
                if ((*p & 0xc0) != 0x80)
                        w++;
        return w;
}

struct table {
        size_t n_columns;
        char **cells; /* rows * n_columns, row 0 = headers */
        size_t n_rows;
        bool *right;
};

struct table *table_new(const char *const *headers, size_t n_columns) {
        struct table *t = calloc(1, sizeof(*t));

        if (!t)
                return NULL;
        t->n_columns = n_columns;
        t->right = calloc(n_columns, sizeof(bool));
        if (!t->right || table_add_row(t, headers) < 0) {
                table_free(t);
                return NULL;
        }
        return t;
}

int table_add_row(struct table *t, const char *const *cells) {
        char **n = realloc(t->cells, (t->n_rows + 1) * t->n_columns * sizeof(char *));

        if (!n)
                return -ENOMEM;
        t->cells = n;
        for (size_t i = 0; i < t->n_columns; i++) {
                char **cell = &t->cells[t->n_rows * t->n_columns + i];
                *cell = cli_escape(cells[i] ? cells[i] : "-");
                if (!*cell) {
                        for (size_t k = 0; k < i; k++)
                                free(t->cells[t->n_rows * t->n_columns + k]);
                        return -ENOMEM;
                }
        }
        t->n_rows++;
        return 0;
}

void table_set_right_aligned(struct table *t, size_t column) {
        if (column < t->n_columns)
                t->right[column] = true;
}

void table_print(struct table *t, FILE *f, bool legend) {
        size_t *width = calloc(t->n_columns, sizeof(size_t));

        if (!width)
                return;
        for (size_t r = legend ? 0 : 1; r < t->n_rows; r++)
                for (size_t c = 0; c < t->n_columns; c++)
                        width[c] = MAX(width[c], cli_width(t->cells[r * t->n_columns + c]));
        for (size_t r = legend ? 0 : 1; r < t->n_rows; r++) {
                for (size_t c = 0; c < t->n_columns; c++) {
                        const char *cell = t->cells[r * t->n_columns + c];
                        size_t pad = width[c] - cli_width(cell);
                        bool last = c + 1 == t->n_columns;

                        if (t->right[c])
                                fprintf(f, "%*s%s", (int) pad, "", cell);
                        else
                                fprintf(f, "%s%*s", cell, last ? 0 : (int) pad, "");
                        if (!last)
                                fputc(' ', f);
                }
                fputc('\n', f);
        }
        free(width);
}

void table_free(struct table *t) {
        if (!t)
                return;
        for (size_t i = 0; i < t->n_rows * t->n_columns; i++)
                free(t->cells[i]);
        free(t->cells);
        free(t->right);
        free(t);
}

static void print_value(FILE *f, const char *key, json_object *v) {
        char buf[FORMAT_SIZE_MAX];

        if (!v) {
                fputs("-", f);
                return;
        }
        if (streq(key, "size_bytes") && json_object_is_type(v, json_type_int)) {
                fputs(format_size((uint64_t) json_object_get_int64(v), buf), f);
                return;
        }
        if (json_object_is_type(v, json_type_string)) {
                _cleanup_free_ char *e = cli_escape(json_object_get_string(v));
                fputs(e ? e : "?", f);
                return;
        }
        {
                _cleanup_free_ char *e = cli_escape(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
                fputs(e ? e : "?", f);
        }
}

char *cli_event_details(json_object *event) {
        json_object *kind_o, *before = NULL, *after = NULL;
        const char *kind;
        char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);
        bool first = true;

        if (!f)
                return NULL;
        kind = json_object_object_get_ex(event, "kind", &kind_o) ? json_object_get_string(kind_o) : "?";
        json_object_object_get_ex(event, "before", &before);
        json_object_object_get_ex(event, "after", &after);

        if (startswith(kind, "drift_")) {
                /* The item: what kind, of which expectation or device, with its facts. */
                json_object *item = after ? after : before, *v;
                if (item && json_object_object_get_ex(item, "kind", &v) && v) {
                        fprintf(f, "%s", json_object_get_string(v));
                        first = false;
                }
                if (item && json_object_object_get_ex(item, "name", &v) && v) {
                        fputs(" name=", f);
                        print_value(f, "name", v);
                }
                if (item && json_object_object_get_ex(item, "detail", &v) && v) {
                        fputc(' ', f);
                        print_value(f, "detail", v);
                }
        } else if (streq(kind, "appeared") && after) {
                /* A summary of what is there, not every field. */
                static const char *const keys[] = { "devnode", "size_bytes", "fs_type", "fs_label", "identity" };
                for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
                        json_object *v;
                        if (!json_object_object_get_ex(after, keys[i], &v) || !v)
                                continue;
                        fprintf(f, "%s%s=", first ? "" : " ", keys[i]);
                        print_value(f, keys[i], v);
                        first = false;
                }
        } else if (after && json_object_is_type(after, json_type_object)) {
                json_object_object_foreach(after, key, val) {
                        json_object *old = NULL;
                        if (streq(kind, "daemon_started")) {
                                fprintf(f, "%s%s=", first ? "" : " ", key);
                                print_value(f, key, val);
                                first = false;
                                continue;
                        }
                        if (before)
                                json_object_object_get_ex(before, key, &old);
                        fprintf(f, "%s%s ", first ? "" : ", ", key);
                        print_value(f, key, old);
                        fputs(" -> ", f);
                        print_value(f, key, val);
                        first = false;
                }
        }
        if (fclose(f) != 0) {
                free(buf);
                return NULL;
        }
        return buf;
}
