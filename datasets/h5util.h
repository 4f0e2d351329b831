// h5util.h: the HDF5 check macro and small helpers shared by the dataset
// reader, the writer, the tools and the checkpoints (src/ckpt.c).
// Defines: h5Check, tryCheck, h5_quiet, h5_error, ds_err, h5_write_attr_*,
// h5_read_attr_* (i64, i32, u64, str), h5_write_strings, h5_read_strings, h5_read_string_at.
// The helpers take the file's path and err[DS_ERRLEN] and return 0 or -1 with
// err set, like the public API.
#ifndef ELASTIC_H5UTIL_H
#define ELASTIC_H5UTIL_H

#include <hdf5.h>
#include <stdint.h>

// Every HDF5 call goes through h5Check: on a negative return it writes
// "PATH: WHAT: H5Xxx failed: <HDF5's innermost message> [file.c:line]" into
// `err` (a char[DS_ERRLEN] in scope) and jumps to the function's `fail:` label.
#define h5Check(expr, path, what)                                     \
    do {                                                              \
        if ((expr) < 0) {                                             \
            h5_error(err, __FILE__, __LINE__, #expr, (path), (what)); \
            goto fail;                                                \
        }                                                             \
    } while (0)

// For our own functions that already wrote err: propagate without rewriting it.
#define tryCheck(expr)             \
    do {                           \
        if ((expr) < 0) goto fail; \
    } while (0)

// Turns off HDF5's automatic error printing for the calling thread (the error
// stack is per thread in thread-safe builds). Cheap; call at every entry point.
void h5_quiet(void);
void h5_error(char* err, const char* file, int line, const char* call, const char* path,
              const char* what);
// printf into err[DS_ERRLEN]; returns -1 so callers can `return ds_err(...)`.
int ds_err(char* err, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

int h5_write_attr_i64(hid_t obj, const char* name, int64_t v, const char* path, char* err);
int h5_write_attr_i32(hid_t obj, const char* name, int32_t v, const char* path, char* err);
int h5_write_attr_u64(hid_t obj, const char* name, uint64_t v, const char* path, char* err);
int h5_write_attr_str(hid_t obj, const char* name, const char* s, const char* path, char* err);
int h5_read_attr_i64(hid_t obj, const char* name, int64_t* v, const char* path, char* err);
int h5_read_attr_i32(hid_t obj, const char* name, int32_t* v, const char* path, char* err);
int h5_read_attr_u64(hid_t obj, const char* name, uint64_t* v, const char* path, char* err);
// Reads a scalar fixed-length string attribute into a malloc'd string.
int h5_read_attr_str(hid_t obj, const char* name, char** s, const char* path, char* err);

// 1-D fixed-length string dataset (h5py reads it as bytes 'S<width>').
int h5_write_strings(hid_t file, const char* name, const char* const* s, int64_t n,
                     const char* path, char* err);
// Reads all n strings of a 1-D fixed-length string dataset; *out is one
// allocation (the pointer array followed by the characters), freed with free().
int h5_read_strings(hid_t file, const char* name, int64_t n, char*** out, const char* path,
                    char* err);
// Reads element i of a 1-D fixed-length string dataset into buf[cap].
int h5_read_string_at(hid_t file, const char* name, int64_t i, char* buf, size_t cap,
                      const char* path, char* err);

#endif
