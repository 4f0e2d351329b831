// convert.h: public interaction files -> the HDF5 layout (dataset.h), and
// back to text. One pipeline for every format:
//   read rows (user, item, timestamp, rating, row number); a number out of
//   range (a timestamp beyond int64, a rating beyond float) is an error
//   naming file:line like a malformed line. Timestamps are stored as int64:
//   integers exactly, other numbers rounded (rows still order by the exact
//   value). Ids are strings, never parsed as numbers.
//   -> keep rating >= min_rating (optional)
//   -> duplicates: a row repeating an earlier row's (user, item, timestamp)
//      is counted, and dropped unless keep_duplicates (the first row in the
//      file stays). Files without timestamps are not checked: there a
//      repeated (user, item) is a repeat in time (seq lines are histories),
//      so such rows are left as they are
//   -> iterative k-core: users and items with >= k interactions, repeated
//      until stable (optional)
//   -> drop users with fewer than 3 interactions (counted in conv_stats)
//   -> users in order of first appearance in the input; each history sorted
//      by timestamp, ties (and files without timestamps) by row order
//   -> items remapped to 1..N in order of first appearance in that output
//      order (user by user, oldest first), so a file whose ids were assigned
//      that way, like the Amazon sequence files, keeps its ids
//   -> original user and item ids kept as strings; written with ds_write.
// Defines: conv_format, conv_options, conv_stats, conv_format_parse,
// conv_format_name, convert_file, export_format, export_file.
#ifndef ELASTIC_CONVERT_H
#define ELASTIC_CONVERT_H

#include <stdint.h>

typedef enum {
    CONV_MOVIELENS_CSV,  // header userId,movieId,rating,timestamp (columns found by name)
    CONV_MOVIELENS_DAT,  // user::item::rating::timestamp, no header
    CONV_RECBOLE,        // .inter: tab-separated, header `name:type`, columns by name
    CONV_SEQ,            // `user item item ...` per line, already in time order
    CONV_CSV,            // user,item[,timestamp] (or named columns when a header names them)
} conv_format;

typedef struct {
    conv_format format;
    int use_min_rating;  // keep rows with rating >= min_rating
    double min_rating;
    int kcore;            // 0 = off
    char delimiter;       // CONV_CSV: 0 = detect from the first line ('\t', ',', ';')
    int header;           // CONV_CSV: -1 = detect, 0 = none, 1 = first line is a header
    int keep_duplicates;  // keep repeated (user, item, timestamp) rows (default: drop)
    int progress;         // 1: on stderr every 2 s for inputs of 64 MB or more; 2: always; 0: never
} conv_options;

typedef struct {
    int64_t rows;                // interactions read
    int64_t rating_dropped;      // rows below min_rating
    int64_t duplicates;          // rows repeating an earlier (user, item, timestamp)
    int64_t duplicates_dropped;  // of those, dropped (all, unless keep_duplicates)
    int64_t kcore_dropped;       // rows removed by the k-core filter
    int64_t kcore_rounds;
    int64_t short_users;  // users dropped for fewer than 3 interactions
    int64_t short_rows;
    int64_t users, items, interactions;  // what was written
    int has_timestamps;
} conv_stats;

// "movielens-csv", "movielens-dat", "recbole", "seq", "csv".
int conv_format_parse(const char* name, conv_format* f);
const char* conv_format_name(conv_format f);

// Converts `input` to `output` (via output.tmp + rename). Errors name the file
// and, for bad lines, the line number ("ratings.csv:1234: expected 4
// comma-separated fields, got 3"). An output that is the input file (or whose
// .tmp is) is refused before anything is read. st may be NULL.
int convert_file(const char* input, const char* output, const conv_options* o, conv_stats* st,
                 char* err);

typedef enum {
    EXPORT_SEQ,  // `user item item ...`, original ids, one user per line
    EXPORT_CSV,  // header `user,item,timestamp`, then one row per interaction
} export_format;

// Writes the dataset at h5 as text to out (via out.tmp + rename; "-" is
// stdout). Users and items without stored original ids are written as their
// index (user u, item i). EXPORT_CSV needs /timestamps. out must not be h5.
int export_file(const char* h5, const char* out, export_format fmt, char* err);

#endif
