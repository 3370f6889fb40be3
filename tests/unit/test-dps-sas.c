/* SPDX-License-Identifier: MIT */
/* test-dps-sas.c: SAS token signing and group key derivation */
#include <errno.h>
#include <stdio.h>
#include <unistd.h>

#include "dps-macro.h"
#include "dps-util.h"
#include "test-util.h"

/* The published derivation example (see the protocol notes). */
#define GROUP_KEY "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw=="
#define REG_ID    "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6"
#define DEV_KEY   "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="

static void test_derive_vector(void) {
        _cleanup_secret_ char *k = NULL;

        CHECK_INT(dps_sas_derive_key(GROUP_KEY, REG_ID, &k), 0);
        CHECK_STR(k, DEV_KEY);
}

static void test_derive_errors(void) {
        char *k = NULL;

        CHECK_INT(dps_sas_derive_key("", REG_ID, &k), -EINVAL);
        CHECK_INT(dps_sas_derive_key("not base64!", REG_ID, &k), -EINVAL);
        CHECK_INT(dps_sas_derive_key(GROUP_KEY, "", &k), -EINVAL);
        CHECK_INT(dps_sas_derive_key(GROUP_KEY, NULL, &k), -EINVAL);
        CHECK(k == NULL);
}

static void test_token_exact(void) {
        _cleanup_secret_ char *t = NULL;

        /* Expected value computed independently (Python hmac/base64/urllib);
         * this expiry makes a signature holding '+', '/' and '='. */
        CHECK_INT(dps_sas_sign("0ne00000A0A", "dev-1", DEV_KEY, 1764150001, &t), 0);
        CHECK_STR(t, "SharedAccessSignature sr=0ne00000A0A%2Fregistrations%2Fdev-1"
                     "&sig=MDxaw%2Fa0L%2BkW9jl1yLcUnNJMLAb%2BxeGr%2FhShL77eYeE%3D"
                     "&se=1764150001&skn=registration");
}

static void test_token_consistent(void) {
        _cleanup_secret_ char *t = NULL, *sig = NULL, *expect = NULL;
        _cleanup_free_ char *se = NULL, *sr = NULL, *skn = NULL, *msg = NULL;
        const char *prefix = "SharedAccessSignature ";

        /* A registration id needing escapes in sr: ':' */
        CHECK_INT(dps_sas_sign("0ne0000ABCD", "dev:42", DEV_KEY, 4102444800ULL, &t), 0);
        REQUIRE(t && strncmp(t, prefix, strlen(prefix)) == 0);

        const char *q = t + strlen(prefix);
        CHECK_INT(dps_query_get(q, "sr", &sr), 0);
        CHECK_STR(sr, "0ne0000ABCD/registrations/dev:42");
        CHECK(strstr(t, "sr=0ne0000ABCD%2Fregistrations%2Fdev%3A42&") != NULL);
        CHECK_INT(dps_query_get(q, "se", &se), 0);
        CHECK_STR(se, "4102444800");
        CHECK_INT(dps_query_get(q, "skn", &skn), 0);
        CHECK_STR(skn, "registration");
        CHECK_INT(dps_query_get(q, "sig", &sig), 0);

        /* the signature covers the *encoded* sr, a newline and se */
        REQUIRE(asprintf(&msg, "0ne0000ABCD%%2Fregistrations%%2Fdev%%3A42\n4102444800") > 0);
        CHECK_INT(dps_sas_hmac(DEV_KEY, msg, &expect), 0);
        CHECK_STR(sig, expect);
}

static void test_sign_errors(void) {
        char *t = NULL;

        CHECK_INT(dps_sas_sign("", "dev-1", DEV_KEY, 1, &t), -EINVAL);
        CHECK_INT(dps_sas_sign("0ne00000A0A", "", DEV_KEY, 1, &t), -EINVAL);
        CHECK_INT(dps_sas_sign("0ne00000A0A", "dev-1", "", 1, &t), -EINVAL);
        CHECK_INT(dps_sas_sign("0ne00000A0A", "dev-1", "abc", 1, &t), -EINVAL);
        CHECK_INT(dps_sas_sign("0ne00000A0A", "dev-1", "YWJj\n", 1, &t), -EINVAL);
        CHECK_INT(dps_sas_sign(NULL, "dev-1", DEV_KEY, 1, &t), -EINVAL);
        CHECK(t == NULL);
}

/* Runs the openssl command line on message (via a file, so the newline in a
 * SAS string survives) and returns the hex HMAC. */
static int openssl_hmac_hex(const char *key_hex, const char *message, char *ret_hex, size_t size) {
        char path[] = "/tmp/test-dps-sas-XXXXXX", cmd[512];
        _cleanup_close_ int fd = -1;
        FILE *p;
        int r = -EIO;

        fd = mkstemp(path);
        if (fd < 0)
                return -errno;
        if (write(fd, message, strlen(message)) != (ssize_t) strlen(message)) {
                unlink(path);
                return -EIO;
        }
        snprintf(cmd, sizeof(cmd), "openssl dgst -sha256 -mac HMAC -macopt hexkey:%s -r < %s", key_hex, path);
        p = popen(cmd, "r");
        if (p) {
                if (fscanf(p, "%64[0-9a-f]", ret_hex) == 1 && strlen(ret_hex) == 64)
                        r = 0;
                if (pclose(p) != 0)
                        r = -EIO;
        }
        unlink(path);
        (void) size;
        return r;
}

static void hex_of(const uint8_t *d, size_t n, char *out) {
        for (size_t i = 0; i < n; i++)
                sprintf(out + 2 * i, "%02x", d[i]);
}

static void test_openssl_cross_check(void) {
        static const char *const keys[] = { DEV_KEY, GROUP_KEY, "AA==", "/////w==" };
        static const char *const msgs[] = {
                "0ne00000A0A%2Fregistrations%2Fdev-1\n1764150000",
                REG_ID,
                "x",
                "0ne00000A0A%2Fregistrations%2Fa.b_c%3Ad\n0",
        };

        REQUIRE(system("command -v openssl >/dev/null 2>&1") == 0 ||
                (fprintf(stderr, "openssl not found on PATH (Debian package 'openssl')\n"), 0));

        for (size_t i = 0; i < ELEMENTSOF(keys); i++)
                for (size_t j = 0; j < ELEMENTSOF(msgs); j++) {
                        _cleanup_secret_ char *sig = NULL;
                        uint8_t *key = NULL, *mac = NULL;
                        size_t key_len = 0, mac_len = 0;
                        char key_hex[256] = "", mac_hex[65] = "", cli_hex[65] = "";

                        REQUIRE(dps_base64_decode(keys[i], &key, &key_len) == 0 && key_len < 120);
                        hex_of(key, key_len, key_hex);
                        dps_memory_free(key, key_len);

                        CHECK_INT(dps_sas_hmac(keys[i], msgs[j], &sig), 0);
                        REQUIRE(sig && dps_base64_decode(sig, &mac, &mac_len) == 0);
                        CHECK_INT(mac_len, 32);
                        hex_of(mac, mac_len, mac_hex);
                        dps_memory_free(mac, mac_len);

                        CHECK_INT(openssl_hmac_hex(key_hex, msgs[j], cli_hex, sizeof(cli_hex)), 0);
                        CHECK_STR(mac_hex, cli_hex);
                }

        /* and the full token path: sig of the token == openssl over sr\nse */
        _cleanup_secret_ char *t = NULL;
        _cleanup_free_ char *sig = NULL;
        uint8_t *mac = NULL, *key = NULL;
        size_t mac_len = 0, key_len = 0;
        char key_hex[256] = "", mac_hex[65] = "", cli_hex[65] = "";

        CHECK_INT(dps_sas_sign("0ne00000A0A", REG_ID, DEV_KEY, 1893456000, &t), 0);
        REQUIRE(t);
        CHECK_INT(dps_query_get(t + strlen("SharedAccessSignature "), "sig", &sig), 0);
        REQUIRE(sig && dps_base64_decode(sig, &mac, &mac_len) == 0);
        hex_of(mac, mac_len, mac_hex);
        dps_memory_free(mac, mac_len);
        REQUIRE(dps_base64_decode(DEV_KEY, &key, &key_len) == 0);
        hex_of(key, key_len, key_hex);
        dps_memory_free(key, key_len);
        CHECK_INT(openssl_hmac_hex(key_hex, "0ne00000A0A%2Fregistrations%2F" REG_ID "\n1893456000",
                                   cli_hex, sizeof(cli_hex)), 0);
        CHECK_STR(mac_hex, cli_hex);
}

int main(void) {
        test_derive_vector();
        test_derive_errors();
        test_token_exact();
        test_token_consistent();
        test_sign_errors();
        test_openssl_cross_check();
        return test_summary("test-dps-sas");
}
