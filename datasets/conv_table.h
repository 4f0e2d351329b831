// conv_table.h: the rows a converter reads, before filtering and ordering.
// Internal to datasets/ (convert_read.c fills it, convert.c processes it).
// Defines: conv_table, conv_read, conv_table_free.
#ifndef ELASTIC_CONV_TABLE_H
#define ELASTIC_CONV_TABLE_H

#include <stdint.h>

#include "convert.h"
#include "strtab.h"

typedef struct {
    strtab users, items;  // original ids; index = order of first appearance
    int32_t* user;        // [n] per row, in file order (the row number is the index)
    int32_t* item;        // [n]
    int64_t* ts;          // [n] when has_ts: as stored (integers exact, others rounded)
    float* ts_frac;       // [n] value - ts; NULL until a non-integral timestamp appears
    float* rating;        // [n] when has_rating
    int64_t n, cap;
    int has_ts, has_rating;
} conv_table;

int conv_read(const char* path, const conv_options* o, conv_table* t, char* err);
void conv_table_free(conv_table* t);

#endif
