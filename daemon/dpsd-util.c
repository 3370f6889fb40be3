/* SPDX-License-Identifier: MIT */
/* dpsd-util.c: small file, time and hashing helpers used across dpsd */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "dps-macro.h"
#include "dps-util.h"
#include "dpsd-util.h"

uint64_t now_usec(clockid_t clock) {
        struct timespec ts;

        if (clock_gettime(clock, &ts) < 0)
                return 0;
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

/* Key files pass through here: nothing is handed back to malloc unwiped
 * (no realloc(), and every error path wipes what was read). */
int read_file_full(const char *path, size_t max, char **ret, size_t *ret_len) {
        _cleanup_close_ int fd = -1;
        char *buf = NULL;
        size_t len = 0, size = 0;
        struct stat st;
        int r;

        /* O_NONBLOCK: opening a fifo must not wait for a writer. Only
         * regular files: a fifo or a device would block or never end. */
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0)
                return negative_errno();
        if (fstat(fd, &st) < 0)
                return negative_errno();
        if (!S_ISREG(st.st_mode))
                return -EBADFD;

        for (;;) {
                ssize_t n;

                if (len + 1 >= size) {
                        size_t nsize = size ? size * 2 : 4096;
                        char *p;

                        if (size > max + 1) {
                                r = -EFBIG;
                                goto fail;
                        }
                        p = malloc(nsize);
                        if (!p) {
                                r = -ENOMEM;
                                goto fail;
                        }
                        if (buf) {
                                memcpy(p, buf, len);
                                dps_memory_free(buf, size);
                        }
                        buf = p;
                        size = nsize;
                }
                n = read(fd, buf + len, size - len - 1);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        r = negative_errno();
                        goto fail;
                }
                if (n == 0)
                        break;
                len += (size_t) n;
                if (len > max) {
                        r = -EFBIG;
                        goto fail;
                }
        }
        buf[len] = 0;
        *ret = buf;
        if (ret_len)
                *ret_len = len;
        return 0;

fail:
        dps_memory_free(buf, size);
        return r;
}

static int mkdir_parent(const char *path) {
        _cleanup_free_ char *copy = strdup(path);
        char *d;

        if (!copy)
                return -ENOMEM;
        d = dirname(copy);
        if (mkdir(d, 0755) < 0 && errno != EEXIST) {
                int r = negative_errno();
                if (r == -ENOENT) {
                        /* one more level, e.g. /var/lib/dpsd when /var/lib exists is the common case */
                        r = mkdir_parent(d);
                        if (r < 0)
                                return r;
                        if (mkdir(d, 0755) < 0 && errno != EEXIST)
                                return negative_errno();
                        return 0;
                }
                return r;
        }
        return 0;
}

int write_file_atomic(const char *path, const void *data, size_t len, mode_t mode) {
        _cleanup_free_ char *tmp = NULL, *dircopy = NULL;
        _cleanup_close_ int fd = -1, dfd = -1;
        const char *p = data;
        int r;

        r = mkdir_parent(path);
        if (r < 0)
                return r;

        if (asprintf(&tmp, "%s.tmp-%ld-%llx", path, (long) getpid(),
                     (unsigned long long) now_usec(CLOCK_MONOTONIC)) < 0)
                return -ENOMEM;

        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
        if (fd < 0)
                return negative_errno();
        /* The umask (UMask=0077 in dpsd.service) narrows what open() made;
         * identity.env is public on purpose. The temp file has no content
         * and is not under its final name yet: no window with a wrong mode. */
        if (fchmod(fd, mode) < 0) {
                r = negative_errno();
                goto fail;
        }

        while (len > 0) {
                ssize_t n = write(fd, p, len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        r = negative_errno();
                        goto fail;
                }
                p += n;
                len -= (size_t) n;
        }
        if (fsync(fd) < 0) {
                r = negative_errno();
                goto fail;
        }
        if (rename(tmp, path) < 0) {
                r = negative_errno();
                goto fail;
        }

        dircopy = strdup(path);
        if (!dircopy)
                return -ENOMEM;
        dfd = open(dirname(dircopy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0)
                (void) fsync(dfd);
        return 0;

fail:
        (void) unlink(tmp);
        return r;
}

int remove_stale_temp_files(const char *path) {
        _cleanup_free_ char *dcopy = strdup(path), *bcopy = strdup(path), *prefix = NULL;
        DIR *d;
        struct dirent *de;
        int n = 0;

        if (!dcopy || !bcopy || asprintf(&prefix, "%s.tmp-", basename(bcopy)) < 0)
                return -ENOMEM;
        d = opendir(dirname(dcopy));
        if (!d)
                return errno == ENOENT ? 0 : negative_errno();
        while ((de = readdir(d)))
                if (strncmp(de->d_name, prefix, strlen(prefix)) == 0 &&
                    unlinkat(dirfd(d), de->d_name, 0) >= 0)
                        n++;
        closedir(d);
        return n;
}

int sha256_hex(const void *data, size_t len, char **ret) {
        unsigned char md[SHA256_DIGEST_LENGTH];
        char *hex;

        if (!EVP_Digest(data, len, md, NULL, EVP_sha256(), NULL))
                return -EIO;
        hex = malloc(2 * sizeof md + 1);
        if (!hex)
                return -ENOMEM;
        for (size_t i = 0; i < sizeof md; i++)
                sprintf(hex + 2 * i, "%02x", md[i]);
        *ret = hex;
        return 0;
}

char *strstrip(char *s) {
        size_t n;

        while (isspace((unsigned char) *s))
                memmove(s, s + 1, strlen(s));
        n = strlen(s);
        while (n > 0 && isspace((unsigned char) s[n - 1]))
                s[--n] = 0;
        return s;
}

int path_relative_to(const char *base_file, const char *path, char **ret) {
        _cleanup_free_ char *copy = NULL;
        char *r;

        if (path[0] == '/' || !base_file) {
                r = strdup(path);
        } else {
                copy = strdup(base_file);
                if (!copy)
                        return -ENOMEM;
                if (asprintf(&r, "%s/%s", dirname(copy), path) < 0)
                        r = NULL;
        }
        if (!r)
                return -ENOMEM;
        *ret = r;
        return 0;
}
