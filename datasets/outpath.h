// outpath.h: where a tool's output really goes. Outputs are written to
// TARGET.tmp and renamed to TARGET, and a rename must never replace a
// symbolic link, a device or a pipe (`-o /dev/null` run as root would).
// Defines: out_resolve.
#ifndef ELASTIC_OUTPATH_H
#define ELASTIC_OUTPATH_H

// *target (malloc'd): path, or what a symbolic link at path points to.
// *special = 1 when that is not a regular file (device, pipe, directory) or
// lies under /dev or /proc: it can only be written in place, not renamed to.
int out_resolve(const char* path, char** target, int* special, char* err);

#endif
