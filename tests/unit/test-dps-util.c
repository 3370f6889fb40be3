/* SPDX-License-Identifier: MIT */
/* test-dps-util.c: base64, url-encoding, query strings, HMAC and secret helpers */
#include <errno.h>

#include "dps-macro.h"
#include "dps-util.h"
#include "test-util.h"

static void test_base64_roundtrip(void) {
        /* RFC 4648 section 10 vectors */
        static const char *const plain[] = { "", "f", "fo", "foo", "foob", "fooba", "foobar" };
        static const char *const enc[] = { "", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy" };

        for (size_t i = 0; i < ELEMENTSOF(plain); i++) {
                _cleanup_free_ char *e = NULL;
                uint8_t *d = NULL;
                size_t n = 0;

                CHECK_INT(dps_base64_encode(plain[i], strlen(plain[i]), &e), 0);
                CHECK_STR(e, enc[i]);
                CHECK_INT(dps_base64_decode(enc[i], &d, &n), 0);
                CHECK_INT(n, strlen(plain[i]));
                CHECK(d && memcmp(d, plain[i], n) == 0 && d[n] == 0);
                dps_memory_free(d, n);
        }

        /* all 256 byte values survive */
        uint8_t all[256];
        for (unsigned i = 0; i < 256; i++)
                all[i] = (uint8_t) i;
        _cleanup_free_ char *e = NULL;
        uint8_t *d = NULL;
        size_t n = 0;
        CHECK_INT(dps_base64_encode(all, sizeof(all), &e), 0);
        CHECK_INT(dps_base64_decode(e, &d, &n), 0);
        CHECK_INT(n, 256);
        CHECK(d && memcmp(d, all, 256) == 0);
        dps_memory_free(d, n);
}

static void test_base64_strict(void) {
        static const char *const bad[] = {
                "Zg",           /* missing padding */
                "Zg=",          /* short padding */
                "Zg===",        /* too much padding */
                "Z===",         /* three pad characters */
                "====",
                "Zm9v\n",       /* whitespace */
                " Zm9v",
                "Zm 9v",
                "Zm9v-_==",     /* url-safe alphabet */
                "Zm=v",         /* '=' in the middle */
                "Zg==Zm9v",     /* padding before more data */
                "Zh==",         /* non-zero bits under the padding */
                "Zm9=",         /* ditto for one pad character */
                "Zm9v!A==",
                "\xc3\xa9xyz",
        };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                uint8_t *d = (uint8_t *) 0x1;
                size_t n = 77;

                CHECK_INT(dps_base64_decode(bad[i], &d, &n), -EINVAL);
                /* out-parameters untouched on failure */
                CHECK(d == (uint8_t *) 0x1 && n == 77);
        }
}

static void test_url_encode(void) {
        _cleanup_free_ char *a = NULL, *b = NULL, *c = NULL;

        CHECK_INT(dps_url_encode("AZaz09-_.~", &a), 0);
        CHECK_STR(a, "AZaz09-_.~");
        CHECK_INT(dps_url_encode("0ne00000A0A/registrations/dev 1+=:&?#%\xc3\xa9", &b), 0);
        CHECK_STR(b, "0ne00000A0A%2Fregistrations%2Fdev%201%2B%3D%3A%26%3F%23%25%C3%A9");
        CHECK_INT(dps_url_encode("", &c), 0);
        CHECK_STR(c, "");
}

static void test_url_decode(void) {
        static const struct { const char *in, *out; } ok[] = {
                { "a%2fb%2Fc", "a/b/c" },
                { "sig%2B%3d", "sig+=" },
                { "a+b", "a+b" },
                { "", "" },
                { "%C3%A9", "\xc3\xa9" },
        };
        static const char *const bad[] = { "%", "%2", "abc%g1", "%1x", "%00" };

        for (size_t i = 0; i < ELEMENTSOF(ok); i++) {
                _cleanup_free_ char *d = NULL;

                CHECK_INT(dps_url_decode(ok[i].in, strlen(ok[i].in), &d), 0);
                CHECK_STR(d, ok[i].out);
        }
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                char *d = NULL;

                CHECK_INT(dps_url_decode(bad[i], strlen(bad[i]), &d), -EINVAL);
                CHECK(d == NULL);
        }

        /* len bounds the input: "%2F" cut after 2 bytes is truncated */
        char *d = NULL;
        CHECK_INT(dps_url_decode("%2F", 2, &d), -EINVAL);
        CHECK_INT(dps_url_decode("abcdef", 3, &d), 0);
        CHECK_STR(d, "abc");
        free(d);
}

static void test_query_get(void) {
        _cleanup_free_ char *v1 = NULL, *v2 = NULL, *v3 = NULL, *v4 = NULL;
        char *x = NULL;

        CHECK_INT(dps_query_get("$rid=1&retry-after=3", "$rid", &v1), 0);
        CHECK_STR(v1, "1");
        CHECK_INT(dps_query_get("a=1&retry-after=3&b", "retry-after", &v2), 0);
        CHECK_STR(v2, "3");
        CHECK_INT(dps_query_get("a=1&flag&b=2", "flag", &v3), 0);
        CHECK_STR(v3, "");
        CHECK_INT(dps_query_get("sig=a%2Fb%3D", "sig", &v4), 0);
        CHECK_STR(v4, "a/b=");
        CHECK_INT(dps_query_get("a=1&b=2", "c", &x), -ENOENT);
        CHECK_INT(dps_query_get("a=1&ab=2", "b", &x), -ENOENT);  /* keys match whole */
        CHECK_INT(dps_query_get("a=1&a=2", "a", &x), -EBADMSG);
        CHECK_INT(dps_query_get("a=%zz", "a", &x), -EINVAL);
        CHECK(x == NULL);
}

static void test_hmac(void) {
        /* RFC 4231 test case 2 */
        static const uint8_t expect[DPS_HMAC_SHA256_LEN] = {
                0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24, 0x26, 0x08, 0x95, 0x75, 0xc7,
                0x5a, 0x00, 0x3f, 0x08, 0x9d, 0x27, 0x39, 0x83, 0x9d, 0xec, 0x58, 0xb9, 0x64, 0xec, 0x38, 0x43,
        };
        uint8_t out[DPS_HMAC_SHA256_LEN];
        const char *msg = "what do ya want for nothing?";

        CHECK_INT(dps_hmac_sha256("Jefe", 4, msg, strlen(msg), out), 0);
        CHECK(memcmp(out, expect, sizeof(out)) == 0);
}

static void test_secrets(void) {
        char *s = strdup("secret");

        REQUIRE(s);
        CHECK(dps_secret_free(s) == NULL);
        CHECK(dps_secret_free(NULL) == NULL);
        CHECK(dps_memory_free(NULL, 10) == NULL);

        CHECK(dps_secret_equal("abc", "abc"));
        CHECK(!dps_secret_equal("abc", "abd"));
        CHECK(!dps_secret_equal("abc", "abcd"));
        CHECK(!dps_secret_equal(NULL, "abc"));
        CHECK(dps_secret_equal("", ""));
}

int main(void) {
        test_base64_roundtrip();
        test_base64_strict();
        test_url_encode();
        test_url_decode();
        test_query_get();
        test_hmac();
        test_secrets();
        return test_summary("test-dps-util");
}
