/* SPDX-License-Identifier: MIT */
/* dpsd-util.h: small file, time and hashing helpers used across dpsd */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#define USEC_PER_SEC  ((uint64_t) 1000000)
#define USEC_PER_MSEC ((uint64_t) 1000)

uint64_t now_usec(clockid_t clock);

/* Reads a whole file, at most max bytes (-EFBIG beyond), NUL-terminated.
 * -EBADFD for anything but a regular file (a fifo, a device). */
int read_file_full(const char *path, size_t max, char **ret, size_t *ret_len);

/* Writes a file atomically: a temp file in the same directory created with
 * O_CREAT|O_EXCL and the final mode, written, fsync'ed, renamed over path,
 * then the directory is fsync'ed. Creates the parent directory (0755) when
 * missing. */
int write_file_atomic(const char *path, const void *data, size_t len, mode_t mode);

/* Removes the temp files write_file_atomic() leaves behind when the process
 * is killed between creating and renaming them ("PATH.tmp-*"): call once at
 * start, before anything writes path. Returns how many were removed. */
int remove_stale_temp_files(const char *path);

/* Lowercase hex SHA-256 of data. */
int sha256_hex(const void *data, size_t len, char **ret);

/* Strips leading and trailing whitespace in place; returns s. */
char *strstrip(char *s);

/* path relative to the directory of base (when path is not absolute). */
int path_relative_to(const char *base_file, const char *path, char **ret);

static inline char *mfree_str(char *p) { free(p); return NULL; }
