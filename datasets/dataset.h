// dataset.h: the HDF5 dataset layout (DESIGN §2) and random access to it.
// Defines: DS_ERRLEN, ds_file, ds_open/ds_close, ds_read_user, ds_item_counts,
// ds_write, ds_fingerprint, ds_repeats, ds_verify_stats.
//
// Layout of one file: /items int32 (all histories concatenated, user by user,
// each in time order; items are 1..n_items, 0 is padding and never stored),
// /offsets int64 [n_users+1], optional /timestamps int64 (parallel to /items),
// /item_ids (original id of remapped item i at index i-1, fixed-length
// strings), /user_ids (original user ids, fixed-length strings), attributes
// n_users n_items source filter format_version fingerprint (uint64; files
// written before it existed lack it and are still read).
//
// Errors: functions return 0 (or a valid pointer) on success; on failure they
// return -1 (or NULL) and write a one-line message naming the file and what is
// wrong into err[DS_ERRLEN]. Nothing here exits the process.
#ifndef ELASTIC_DATASET_H
#define ELASTIC_DATASET_H

#include <stddef.h>
#include <stdint.h>

#define DS_ERRLEN 512
#define DS_FORMAT_VERSION 1

typedef struct ds_file ds_file;

// Opens and validates: datasets present with the right types, offsets
// monotone with offsets[0] == 0 and offsets[n_users] == len(items), every user
// has at least 3 items (train + validation + test target; the message names
// the user), n_items > 0. Item values are range-checked as they are read.
// Keeps /offsets in memory (8 bytes per user), never /items.
ds_file* ds_open(const char* path, char* err);
void ds_close(ds_file* f);

const char* ds_path(const ds_file* f);
int64_t ds_n_users(const ds_file* f);
int64_t ds_n_items(const ds_file* f);
int64_t ds_n_interactions(const ds_file* f);
int64_t ds_user_len(const ds_file* f, int64_t user);  // history length of user

// Reads items [start, start+count) of user's history into out (a hyperslab of
// /items). Fails, naming the user and position, if an item is outside
// 1..n_items. Safe to call from more than one thread (HDF5 is built
// thread-safe on Debian; the call also holds a module lock).
int ds_read_user(ds_file* f, int64_t user, int64_t start, int64_t count, int32_t* out, char* err);

// counts[0..n_items] = occurrences of each item in the training part of every
// history (all but the last `holdout` items of each user), read in chunks.
int ds_item_counts(ds_file* f, int holdout, int64_t* counts, char* err);

// Writes a complete file to `path` via `path`.tmp + rename, so a failure never
// leaves a partial file under the real name. timestamps, item_ids, user_ids
// may be NULL. item_ids[i] is the original id of item i+1.
typedef struct {
    const int32_t* items;         // [offsets[n_users]]
    const int64_t* offsets;       // [n_users+1]
    const int64_t* timestamps;    // [offsets[n_users]] or NULL
    const char* const* item_ids;  // [n_items] or NULL
    const char* const* user_ids;  // [n_users] or NULL
    int64_t n_users, n_items;
    const char* source;  // e.g. "movielens-csv:ratings.csv"
    const char* filter;  // e.g. "min_rating=0 kcore=0"
} ds_contents;
int ds_write(const char* path, const ds_contents* c, char* err);

// ---- additions for tools (exporters, `elastic_prep info`); nothing above
// changed.
int ds_has_timestamps(const ds_file* f);
const char* ds_source(const ds_file* f);  // attribute `source`
const char* ds_filter(const ds_file* f);  // attribute `filter`
// Timestamps [start, start+count) of user's history; fails if the file has none.
int ds_read_timestamps(ds_file* f, int64_t user, int64_t start, int64_t count, int64_t* out,
                       char* err);
// All original ids, one allocation (free() it): *ids = NULL when the file has
// no /item_ids (resp. /user_ids); then item i's id is "i" and user u's is "u".
int ds_item_ids(ds_file* f, char*** ids, char* err);
int ds_user_ids(ds_file* f, char*** ids, char* err);
// Reads every dataset through (checksums, item range, timestamps, ids): a
// full integrity check, streaming in chunks.
// Also recomputes a stored fingerprint and fails if the contents disagree.
int ds_verify(ds_file* f, char* err);

// A content fingerprint, e.g. for a checkpoint to refuse resuming on another
// dataset. ds_write and the streaming writer hash what they write with
// 64-bit FNV-1a (offset basis 0xcbf29ce484222325, prime 0x100000001b3), each
// integer as its little-endian bytes: O = hash of /offsets (n_users+1 int64),
// I = hash of /items (int32); fingerprint = hash of the 32 bytes of int64
// n_users, n_items, O, I. Two hashes combined, not one over everything in
// a row, because the writer learns n_users last and writes offsets and items
// interleaved. Stored as the attribute `fingerprint`; ds_open reads it.
// A file without the attribute (written before it) gets a fallback from what
// ds_open holds anyway: hash of int64 n_users, n_items, n_interactions, O, so
// opening never reads all of /items; it sees the shape and the history
// lengths, not the items. Rewriting such a file changes its fingerprint.
uint64_t ds_fingerprint(const ds_file* f);
int ds_fingerprint_stored(const ds_file* f);  // 1: the attribute, 0: the fallback

// Repeated items in histories: interactions whose item occurs earlier in the
// same history; users whose test target (last item), resp. validation target
// (second to last), occurs earlier in their history: with --mask-history
// those targets are masked out of the ranking, so they always count as misses.
typedef struct {
    int64_t repeats;        // interactions
    int64_t test_repeats;   // users
    int64_t valid_repeats;  // users
} ds_repeats;
// ds_verify that also counts repeats (rep may be NULL); the same single pass
// over /items, plus 8 bytes per item.
int ds_verify_stats(ds_file* f, ds_repeats* rep, char* err);

#endif
