// export.c: dataset -> text (convert.h), the inverse of the seq and csv
// converters, so conversions can be checked by round trip.
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "convert.h"
#include "dataset.h"
#include "h5util.h"
#include "outpath.h"

static int write_user(FILE* fp, export_format fmt, const char* uid, const int32_t* items,
                      const int64_t* times, int64_t n, char* const* item_ids) {
    char num[24];
    if (fmt == EXPORT_SEQ && fputs(uid, fp) < 0) return -1;
    for (int64_t j = 0; j < n; j++) {
        const char* iid = item_ids ? item_ids[items[j] - 1] : num;
        if (!item_ids) snprintf(num, sizeof num, "%d", items[j]);
        if (fmt == EXPORT_SEQ) {
            if (fprintf(fp, " %s", iid) < 0) return -1;
        } else if (fprintf(fp, "%s,%s,%" PRId64 "\n", uid, iid, times[j]) < 0) {
            return -1;
        }
    }
    if (fmt == EXPORT_SEQ && fputc('\n', fp) == EOF) return -1;
    return 0;
}

int export_file(const char* h5, const char* out, export_format fmt, char* err) {
    err[0] = 0;
    if (strcmp(out, "-") != 0 && out_is_input(h5, out, err) < 0) return -1;
    ds_file* f = ds_open(h5, err);
    if (!f) return -1;
    int rc = -1, direct = 0;
    FILE* fp = NULL;
    char** item_ids = NULL;
    char** user_ids = NULL;
    int32_t* items = NULL;
    int64_t* times = NULL;
    char* target = NULL;
    char* tmp = NULL;
    // "-" is stdout; devices and pipes are written in place, files via .tmp.
    if (strcmp(out, "-") == 0)
        direct = 1;
    else if (out_resolve(out, &target, &direct, err) < 0)
        goto done;
    if (!direct) {
        size_t tl = strlen(target) + 5;
        if (!(tmp = malloc(tl))) {
            ds_err(err, "%s: out of memory", out);
            goto done;
        }
        snprintf(tmp, tl, "%s.tmp", target);
    }
    if (fmt == EXPORT_CSV && !ds_has_timestamps(f)) {
        ds_err(err, "%s: has no /timestamps; export it with --format seq", h5);
        goto done;
    }
    int64_t nu = ds_n_users(f), maxlen = 1;
    for (int64_t u = 0; u < nu; u++)
        if (ds_user_len(f, u) > maxlen) maxlen = ds_user_len(f, u);
    if (!(items = malloc((size_t)maxlen * sizeof *items)) ||
        (fmt == EXPORT_CSV && !(times = malloc((size_t)maxlen * sizeof *times)))) {
        ds_err(err, "%s: out of memory", h5);
        goto done;
    }
    if (ds_item_ids(f, &item_ids, err) < 0 || ds_user_ids(f, &user_ids, err) < 0) goto done;
    const char* dest = direct ? out : tmp;  // out itself when direct
    fp = !strcmp(out, "-") ? stdout : fopen(dest, "w");
    if (!fp) {
        ds_err(err, "%s: cannot create: %s", dest, strerror(errno));
        goto done;
    }
    if (fmt == EXPORT_CSV && fputs("user,item,timestamp\n", fp) < 0) goto write_failed;
    for (int64_t u = 0; u < nu; u++) {
        int64_t n = ds_user_len(f, u);
        char num[24];
        snprintf(num, sizeof num, "%" PRId64, u);
        if (ds_read_user(f, u, 0, n, items, err) < 0) goto done;
        if (times && ds_read_timestamps(f, u, 0, n, times, err) < 0) goto done;
        if (write_user(fp, fmt, user_ids ? user_ids[u] : num, items, times, n, item_ids) < 0)
            goto write_failed;
    }
    FILE* c = fp;
    fp = NULL;
    if ((c == stdout ? fflush(c) : fclose(c)) != 0) goto write_failed;
    if (!direct && rename(tmp, target) != 0) {
        ds_err(err, "%s: cannot rename %s to it: %s", out, tmp, strerror(errno));
        goto done;
    }
    rc = 0;
    goto done;
write_failed:
    if (direct)
        ds_err(err, "%s: write failed: %s", out, strerror(errno));
    else
        ds_err(err, "%s: writing %s failed: %s", out, tmp, strerror(errno));
done:
    if (fp && fp != stdout) fclose(fp);
    if (rc < 0 && tmp) unlink(tmp);
    free(tmp);
    free(target);
    free(items);
    free(times);
    free(item_ids);
    free(user_ids);
    ds_close(f);
    return rc;
}
