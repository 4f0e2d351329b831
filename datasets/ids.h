// ids.h: a dataset's original user or item ids, looked up by value (the
// tools that take ids from people: elastic_eval --stream, --user-ids).
// Defines: ds_ids, ds_ids_open, ds_ids_find, ds_ids_name, ds_ids_close.
#ifndef ELASTIC_DATASETS_IDS_H
#define ELASTIC_DATASETS_IDS_H

#include <stddef.h>
#include <stdint.h>

#include "dataset.h"

typedef struct ds_ids ds_ids;

// The users' ids (users = 1) or the items' (users = 0) of f, sorted for
// bisection; a file without an id table has the decimal numbers as ids
// (users from 0, items from 1), parsed strictly. NULL with err[512].
ds_ids* ds_ids_open(ds_file* f, int users, char* err);
// The index of id (a user's from 0, an item's from 1), or -1 when f has none.
int64_t ds_ids_find(const ds_ids* x, const char* id);
// The id of index i: the table's string, or the number written into buf[n].
const char* ds_ids_name(const ds_ids* x, int64_t i, char* buf, size_t n);
void ds_ids_close(ds_ids* x);

#endif
