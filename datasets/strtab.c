// strtab.c: string interning with an open-addressing hash table (strtab.h).
#include "strtab.h"

#include <stdlib.h>
#include <string.h>

#define BLOCK (1 << 20)

void strtab_init(strtab* t) { memset(t, 0, sizeof *t); }

static uint64_t hash(const char* s, size_t len) {
    uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

static int grow_slots(strtab* t) {
    uint64_t size = t->mask ? 2 * (t->mask + 1) : 1024;
    int64_t* slots = calloc(size, sizeof *slots);
    if (!slots) return -1;
    for (int64_t i = 0; i < t->n; i++) {
        uint64_t h = hash(t->s[i], strlen(t->s[i])) & (size - 1);
        while (slots[h]) h = (h + 1) & (size - 1);
        slots[h] = i + 1;
    }
    free(t->slots);
    t->slots = slots;
    t->mask = size - 1;
    return 0;
}

static char* store(strtab* t, const char* s, size_t len) {
    if (t->n_blocks == 0 || t->block_used + (int64_t)len + 1 > t->block_cap) {
        int64_t cap = len + 1 > BLOCK ? (int64_t)len + 1 : BLOCK;
        char** blocks = realloc(t->blocks, (size_t)(t->n_blocks + 1) * sizeof *blocks);
        if (!blocks) return NULL;
        t->blocks = blocks;
        if (!(blocks[t->n_blocks] = malloc((size_t)cap))) return NULL;
        t->n_blocks++;
        t->block_used = 0;
        t->block_cap = cap;
    }
    char* p = t->blocks[t->n_blocks - 1] + t->block_used;
    memcpy(p, s, len);
    p[len] = 0;
    t->block_used += (int64_t)len + 1;
    return p;
}

int64_t strtab_intern(strtab* t, const char* s, size_t len) {
    if ((uint64_t)(t->n + 1) * 2 > t->mask && grow_slots(t) < 0) return -1;
    uint64_t h = hash(s, len) & t->mask;
    while (t->slots[h]) {
        const char* c = t->s[t->slots[h] - 1];
        if (strncmp(c, s, len) == 0 && c[len] == 0) return t->slots[h] - 1;
        h = (h + 1) & t->mask;
    }
    if (t->n == t->cap) {
        int64_t cap = t->cap ? 2 * t->cap : 1024;
        char** p = realloc(t->s, (size_t)cap * sizeof *p);
        if (!p) return -1;
        t->s = p;
        t->cap = cap;
    }
    char* c = store(t, s, len);
    if (!c) return -1;
    t->s[t->n] = c;
    t->slots[h] = ++t->n;
    return t->n - 1;
}

void strtab_free(strtab* t) {
    for (int64_t i = 0; i < t->n_blocks; i++) free(t->blocks[i]);
    free(t->blocks);
    free(t->s);
    free(t->slots);
    memset(t, 0, sizeof *t);
}
