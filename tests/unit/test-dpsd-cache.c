/* SPDX-License-Identifier: MIT */
/* test-dpsd-cache.c: the provisioning cache and identity.env: round trip, atomicity, damaged files */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dps-macro.h"
#include "dpsd-cache.h"
#include "dpsd-util.h"
#include "test-util.h"

static char dir[] = "/tmp/test-dpsd-cache-XXXXXX";
static char path[512];

static void write_raw(const char *text, size_t len) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        REQUIRE(fd >= 0);
        REQUIRE(write(fd, text, len) == (ssize_t) len);
        close(fd);
}

/* Names in dir other than . and .. */
static unsigned count_entries(const char *prefix, char *ret_name, size_t size) {
        DIR *d = opendir(dir);
        struct dirent *de;
        unsigned n = 0;

        REQUIRE(d);
        while ((de = readdir(d))) {
                if (de->d_name[0] == '.')
                        continue;
                if (prefix && strncmp(de->d_name, prefix, strlen(prefix)) != 0)
                        continue;
                if (ret_name)
                        snprintf(ret_name, size, "%s", de->d_name);
                n++;
        }
        closedir(d);
        return n;
}

static void clean_dir(void) {
        DIR *d = opendir(dir);
        struct dirent *de;

        REQUIRE(d);
        while ((de = readdir(d))) {
                char p[600];
                if (de->d_name[0] == '.')
                        continue;
                snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
                (void) unlink(p);
        }
        closedir(d);
}

static void test_round_trip(void) {
        CacheData in = {
                .fingerprint = (char *) "5d41402abc4b2a76b9719d911017c592",
                .registration_id = (char *) "dev-1",
                .assigned_hub = (char *) "hub-a.azure-devices.net",
                .device_id = (char *) "device-1",
                .substatus = (char *) "initialAssignment",
                .payload = (char *) "{\"a\":[1,2,{\"b\":null}],\"s\":\"x\\\"y\"}",
                .tracking_id = (char *) "2f8c3c6e-0001",
                .provisioned_usec = 1764150000123456ULL,
                .attempts = 3,
                .next_attempt_usec = 1764150999000000ULL,
        };
        _cleanup_(cache_data_freep) CacheData *out = NULL;
        struct stat st;
        char name[256];

        clean_dir();
        CHECK_INT(cache_save(path, &in), 0);
        CHECK_INT(cache_load(path, &out), 0);
        REQUIRE(out);
        CHECK_STR(out->fingerprint, in.fingerprint);
        CHECK_STR(out->registration_id, in.registration_id);
        CHECK_STR(out->assigned_hub, in.assigned_hub);
        CHECK_STR(out->device_id, in.device_id);
        CHECK_STR(out->substatus, in.substatus);
        CHECK_STR(out->payload, in.payload);
        CHECK_STR(out->tracking_id, in.tracking_id);
        CHECK_INT(out->provisioned_usec, in.provisioned_usec);
        CHECK_INT(out->attempts, in.attempts);
        CHECK_INT(out->next_attempt_usec, in.next_attempt_usec);

        /* created with the final mode, and no temp file left behind */
        REQUIRE(stat(path, &st) == 0);
        CHECK_INT(st.st_mode & 07777, 0600);
        CHECK_INT(count_entries(NULL, name, sizeof name), 1);
        CHECK_STR(name, "cache.json");

        /* overwrite: still one file, new content */
        in.assigned_hub = (char *) "hub-b.azure-devices.net";
        in.payload = NULL;
        CHECK_INT(cache_save(path, &in), 0);
        out = cache_data_free(out);
        CHECK_INT(cache_load(path, &out), 0);
        REQUIRE(out);
        CHECK_STR(out->assigned_hub, "hub-b.azure-devices.net");
        CHECK(out->payload == NULL);
        CHECK_INT(count_entries(NULL, NULL, 0), 1);

        /* a retry-only record (not provisioned) */
        {
                CacheData r = { .fingerprint = (char *) "f", .attempts = 7, .next_attempt_usec = 42 };
                _cleanup_(cache_data_freep) CacheData *o = NULL;
                CHECK_INT(cache_save(path, &r), 0);
                CHECK_INT(cache_load(path, &o), 0);
                REQUIRE(o);
                CHECK(o->assigned_hub == NULL);
                CHECK_INT(o->attempts, 7);
                CHECK_INT(o->next_attempt_usec, 42);
                CHECK_STR(o->fingerprint, "f");
        }

        /* a missing directory is created */
        {
                char p2[600];
                _cleanup_(cache_data_freep) CacheData *o = NULL;
                snprintf(p2, sizeof p2, "%s/sub/cache.json", dir);
                CHECK_INT(cache_save(p2, &in), 0);
                CHECK_INT(cache_load(p2, &o), 0);
                (void) unlink(p2);
                snprintf(p2, sizeof p2, "%s/sub", dir);
                (void) rmdir(p2);
        }
}

static void expect_load(const char *text, int expected) {
        CacheData *out = NULL;

        write_raw(text, strlen(text));
        CHECK_INT(cache_load(path, &out), expected);
        CHECK(out == NULL);
        cache_data_free(out);
}

static void test_damaged(void) {
        _cleanup_free_ char *good = NULL, *huge = NULL;
        CacheData in = { .fingerprint = (char *) "abc", .assigned_hub = (char *) "h", .device_id = (char *) "d" };
        CacheData *out = NULL;
        size_t len;
        char name[256];

        clean_dir();
        CHECK_INT(cache_load(path, &out), -ENOENT);

        /* truncated at every length: never accepted */
        CHECK_INT(cache_save(path, &in), 0);
        REQUIRE(read_file_full(path, CACHE_SIZE_MAX, &good, &len) == 0);
        for (size_t cut = 0; cut < len - 1; cut++) {
                write_raw(good, cut);
                out = NULL;
                int r = cache_load(path, &out);
                if (r != -EBADMSG)
                        fprintf(stderr, "truncated to %zu bytes: %d\n", cut, r);
                CHECK(r == -EBADMSG);
                cache_data_free(out);
        }

        expect_load("not json at all", -EBADMSG);
        expect_load("[1,2,3]", -EBADMSG);
        expect_load("{\"foo\":1}", -EBADMSG);                         /* foreign */
        expect_load("{\"version\":\"1\",\"fingerprint\":\"a\"}", -EBADMSG);
        expect_load("{\"version\":2,\"fingerprint\":\"a\"}", -EPROTONOSUPPORT);
        expect_load("{\"version\":1}", -EBADMSG);                     /* no fingerprint */
        expect_load("{\"version\":1,\"fingerprint\":7}", -EBADMSG);
        expect_load("{\"version\":1,\"fingerprint\":\"a\",\"assignedHub\":\"h\"}", -EBADMSG);  /* hub without device */
        expect_load("{\"version\":1,\"fingerprint\":\"a\",\"attempts\":-1}", -EBADMSG);
        expect_load("{\"version\":1,\"fingerprint\":\"a\"} trailing", -EBADMSG);
        write_raw("{\"version\":1,\"fingerprint\":\"a\"}\0x", 33);
        out = NULL;
        CHECK_INT(cache_load(path, &out), -EBADMSG);

        huge = malloc(CACHE_SIZE_MAX + 2);
        REQUIRE(huge);
        memset(huge, ' ', CACHE_SIZE_MAX + 1);
        huge[CACHE_SIZE_MAX + 1] = 0;
        memcpy(huge, "{\"version\":1,\"fingerprint\":\"a\"}", strlen("{\"version\":1,\"fingerprint\":\"a\"}"));
        expect_load(huge, -EFBIG);

        /* set aside: renamed next to it, original gone */
        {
                _cleanup_free_ char *aside = NULL;
                expect_load("garbage", -EBADMSG);
                CHECK_INT(cache_set_aside(path, &aside), 0);
                CHECK(access(path, F_OK) < 0 && errno == ENOENT);
                CHECK(aside && access(aside, F_OK) == 0);
                CHECK_INT(count_entries("cache.json.corrupt-", name, sizeof name), 1);
                CHECK(strlen(name) > strlen("cache.json.corrupt-"));
                CHECK(strspn(name + strlen("cache.json.corrupt-"), "0123456789") == strlen(name + strlen("cache.json.corrupt-")));
                CHECK_INT(cache_set_aside(path, NULL), -ENOENT);
        }
}

static void test_identity_env(void) {
        _cleanup_free_ char *text = NULL, *content = NULL;
        char p[600];
        struct stat st;

        CHECK_INT(identity_env_format("hub-a.azure-devices.net", "dev 1", &text), 0);
        CHECK_STR(text, "DPS_ASSIGNED_HUB='hub-a.azure-devices.net'\nDPS_DEVICE_ID='dev 1'\n");

        char *x = NULL;
        CHECK_INT(identity_env_format("hub\nDPS_DEVICE_ID=evil", "d", &x), -EINVAL);
        CHECK_INT(identity_env_format("hub\t", "d", &x), -EINVAL);
        CHECK_INT(identity_env_format("hub", "d\x7f", &x), -EINVAL);
        CHECK_INT(identity_env_format(NULL, "d", &x), -EINVAL);
        CHECK_INT(identity_env_format("hub", "", &x), -EINVAL);
        CHECK(x == NULL);

        /* literal in single quotes, for a shell and for systemd alike */
        {
                _cleanup_free_ char *t = NULL;
                CHECK_INT(identity_env_format("hub", "$(reboot)`id`\\\"", &t), 0);
                CHECK_STR(t, "DPS_ASSIGNED_HUB='hub'\nDPS_DEVICE_ID='$(reboot)`id`\\\"'\n");
        }
        /* a single quote: double quotes, with \ before " \ ` $ */
        {
                _cleanup_free_ char *t = NULL;
                CHECK_INT(identity_env_format("hub", "d'; rm -rf /; $x \"`\\", &t), 0);
                CHECK_STR(t, "DPS_ASSIGNED_HUB='hub'\nDPS_DEVICE_ID=\"d'; rm -rf /; \\$x \\\"\\`\\\\\"\n");
        }
        /* and a shell reads back exactly the value */
        {
                static const char *const values[] = { "d'; rm -rf /; $x \"`\\", "$(reboot)`id`\\\"", "plain-1" };
                for (size_t i = 0; i < ELEMENTSOF(values); i++) {
                        _cleanup_free_ char *t = NULL, *cmd = NULL, *out = NULL;
                        char envp[600], outp[600];
                        snprintf(envp, sizeof envp, "%s/shell.env", dir);
                        snprintf(outp, sizeof outp, "%s/shell.out", dir);
                        REQUIRE(identity_env_format("hub", values[i], &t) == 0);
                        REQUIRE(write_file_atomic(envp, t, strlen(t), 0600) == 0);
                        REQUIRE(asprintf(&cmd, "sh -c '. \"%s\" && printf %%s \"$DPS_DEVICE_ID\"' > '%s'", envp, outp) >= 0);
                        REQUIRE(system(cmd) == 0);
                        REQUIRE(read_file_full(outp, 4096, &out, NULL) == 0);
                        CHECK_STR(out, values[i]);
                        (void) unlink(envp);
                        (void) unlink(outp);
                }
        }

        snprintf(p, sizeof p, "%s/run/identity.env", dir);
        CHECK_INT(identity_env_write(p, "hub-a", "dev-1"), 0);
        REQUIRE(stat(p, &st) == 0);
        CHECK_INT(st.st_mode & 07777, 0644);
        REQUIRE(read_file_full(p, 4096, &content, NULL) == 0);
        CHECK_STR(content, "DPS_ASSIGNED_HUB='hub-a'\nDPS_DEVICE_ID='dev-1'\n");

        /* The same identity again leaves the file alone (same inode: no
         * rename, no fsync); another identity replaces it. */
        struct stat st2;
        CHECK_INT(identity_env_write(p, "hub-a", "dev-1"), 0);
        REQUIRE(stat(p, &st2) == 0);
        CHECK_INT(st2.st_ino == st.st_ino, 1);
        CHECK_INT(identity_env_write(p, "hub-b", "dev-1"), 0);
        REQUIRE(stat(p, &st2) == 0);
        CHECK_INT(st2.st_ino != st.st_ino, 1);
        /* ... and so does the same content with a wrong mode */
        REQUIRE(chmod(p, 0600) == 0);
        REQUIRE(stat(p, &st) == 0);
        CHECK_INT(identity_env_write(p, "hub-b", "dev-1"), 0);
        REQUIRE(stat(p, &st2) == 0);
        CHECK_INT(st2.st_ino != st.st_ino && (st2.st_mode & 07777) == 0644, 1);
        CHECK_INT(identity_env_write(p, "hub-a", "bad\x01"), -EINVAL);
        (void) unlink(p);
        snprintf(p, sizeof p, "%s/run", dir);
        (void) rmdir(p);
}

int main(void) {
        REQUIRE(mkdtemp(dir));
        snprintf(path, sizeof path, "%s/cache.json", dir);

        test_round_trip();
        test_damaged();
        test_identity_env();

        clean_dir();
        (void) rmdir(dir);
        return test_summary("test-dpsd-cache");
}
