// writer.h: streaming writer of the dataset layout (dataset.h), for files too
// big to hold: users are appended in blocks, whole chunks are compressed and
// written as they fill, and the file appears under its name only on finish.
// ds_write (dataset.h) is this writer fed in one block. Files use the HDF5
// 1.10 format (O(1) chunk lookups); HDF5 >= 1.10, h5py and h5dump read them.
// Defines: ds_writer, ds_writer_open, ds_writer_append, ds_writer_finish,
// ds_writer_abort, DS_ITEMS_CHUNK.
#ifndef ELASTIC_WRITER_H
#define ELASTIC_WRITER_H

#include <stdint.h>

// /items chunk in elements: a random window read decompresses whole chunks
// (zlib at ~200 MB/s here), so 4 KiB chunks keep one read near 20 us; the
// compression ratio drops little against 64K-element chunks (2.3 vs 2.7).
#define DS_ITEMS_CHUNK 1024
#define DS_OFFSETS_CHUNK 65536

typedef struct ds_writer ds_writer;

// Creates path.tmp. Items appended must lie in 1..n_items.
ds_writer* ds_writer_open(const char* path, int64_t n_items, int with_timestamps, char* err);
// Appends n_users users; lens[u] items each, items (and timestamps, when the
// writer has them) concatenated.
int ds_writer_append(ds_writer* w, int64_t n_users, const int64_t* lens, const int32_t* items,
                     const int64_t* timestamps, char* err);
// Writes ids (NULL: none) and attributes (the fingerprint of dataset.h
// among them), flushes and fsyncs, closes, renames path.tmp to path, frees w.
// On failure (a full disk included: the message names path and the system's
// reason) removes path.tmp and frees w too.
int ds_writer_finish(ds_writer* w, const char* const* item_ids, const char* const* user_ids,
                     const char* source, const char* filter, char* err);
// Closes without writing anything more, removes path.tmp, frees w (NULL is
// fine).
void ds_writer_abort(ds_writer* w);
int64_t ds_writer_users(const ds_writer* w);
int64_t ds_writer_interactions(const ds_writer* w);

#endif
