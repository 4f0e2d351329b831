// strtab.h: string interning for the converters: each distinct string gets the
// index of its first appearance (0, 1, 2, ...). Internal to datasets/.
// Defines: strtab, strtab_init, strtab_intern, strtab_free.
#ifndef ELASTIC_STRTAB_H
#define ELASTIC_STRTAB_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char** s;  // [n] interned strings, NUL-terminated, in first-appearance order
    int64_t n, cap;
    int64_t* slots;  // open addressing: index+1, 0 = empty
    uint64_t mask;
    char** blocks;  // character storage
    int64_t n_blocks, block_used, block_cap;
} strtab;

void strtab_init(strtab* t);
// Index of s[0..len), added if new; -1 when out of memory.
int64_t strtab_intern(strtab* t, const char* s, size_t len);
void strtab_free(strtab* t);

#endif
