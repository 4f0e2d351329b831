// outpath.h: where a tool's output really goes. Outputs are written to
// TARGET.tmp and renamed to TARGET, and a rename must never replace a
// symbolic link, a device or a pipe (`-o /dev/null` run as root would).
// Defines: out_resolve, out_is_input.
#ifndef ELASTIC_OUTPATH_H
#define ELASTIC_OUTPATH_H

// *target (malloc'd): path, or what a symbolic link at path points to.
// *special = 1 when that is not a regular file (device, pipe, directory) or
// lies under /dev or /proc: it can only be written in place, not renamed to.
int out_resolve(const char* path, char** target, int* special, char* err);

// -1 with err set when writing `out` would replace or truncate the file
// `in`: out (or where its link points, or its .tmp) is the same file by
// device and inode, or by realpath. 0 otherwise, also when in is missing
// (its reader reports that).
int out_is_input(const char* in, const char* out, char* err);

#endif
