// outpath.c: resolving output paths (outpath.h).
#include "outpath.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "h5util.h"

int out_resolve(const char* path, char** target, int* special, char* err) {
    struct stat sb;
    *special = 0;
    *target = NULL;
    if (!strncmp(path, "/dev/", 5) || !strncmp(path, "/proc/", 6)) {  // /dev/stdout & co.
        *special = 1;
        if (!(*target = strdup(path))) return ds_err(err, "%s: out of memory", path);
        return 0;
    }
    if (lstat(path, &sb) == 0 && S_ISLNK(sb.st_mode)) {
        if (!(*target = realpath(path, NULL)))
            return ds_err(err, "%s: cannot follow the symbolic link: %s", path, strerror(errno));
    } else if (!(*target = strdup(path))) {
        return ds_err(err, "%s: out of memory", path);
    }
    const char* t = *target;
    if (!strncmp(t, "/dev/", 5) || !strncmp(t, "/proc/", 6) ||
        (stat(t, &sb) == 0 && !S_ISREG(sb.st_mode)))
        *special = 1;
    return 0;
}

// 1 when p exists and is the file st describes.
static int same_file(const struct stat* st, const char* p) {
    struct stat sb;
    return stat(p, &sb) == 0 && sb.st_dev == st->st_dev && sb.st_ino == st->st_ino;
}

// 1 when both paths resolve to the same canonical path.
static int same_realpath(const char* a, const char* b) {
    char* ra = realpath(a, NULL);
    char* rb = ra ? realpath(b, NULL) : NULL;
    int same = ra && rb && !strcmp(ra, rb);
    free(ra);
    free(rb);
    return same;
}

int out_is_input(const char* in, const char* out, char* err) {
    struct stat si;
    if (stat(in, &si) != 0) return 0;
    char* target;
    int special;
    if (out_resolve(out, &target, &special, err) < 0) return -1;
    size_t n = strlen(target) + 5;
    char* tmp = malloc(n);
    if (!tmp) {
        free(target);
        return ds_err(err, "%s: out of memory", out);
    }
    snprintf(tmp, n, "%s.tmp", target);
    int rc = 0;
    if (same_file(&si, out) || same_file(&si, target) || same_realpath(in, target))
        rc = ds_err(err,
                    "%s: is the input file %s; choose another output (the input is never "
                    "replaced)",
                    out, in);
    else if (same_file(&si, tmp) || same_realpath(in, tmp))
        rc = ds_err(err,
                    "%s: its temporary file %s is the input file; choose another output (the "
                    "input is never replaced)",
                    out, tmp);
    free(tmp);
    free(target);
    return rc;
}
