// outpath.c: resolving output paths (outpath.h).
#include "outpath.h"

#include <errno.h>
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
