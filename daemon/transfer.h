/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Export and import of the ledger's own truths (names, expectations, volumes; unfinished
 * intents for the record), format in blkledger(1), EXPORT FORMAT. */
#pragma once

#include <json-c/json.h>

struct daemon;
struct client;

/* The states a volume may have (NULL-terminated): the volumes table's CHECK list. */
extern const char *const transfer_volume_states[];

int transfer_export(struct daemon *d, json_object **ret);
int method_export(struct client *c, json_object *params, unsigned flags, void *userdata);
int method_import(struct client *c, json_object *params, unsigned flags, void *userdata);
