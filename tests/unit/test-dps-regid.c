/* SPDX-License-Identifier: MIT */
/* test-dps-regid.c: registration id rules and the reasons given for each */
#include <errno.h>

#include "dps-macro.h"
#include "test-util.h"

static char *repeat(char c, size_t n) {
        char *s = malloc(n + 1);

        REQUIRE(s);
        memset(s, c, n);
        s[n] = '\0';
        return s;
}

static void check_ok(const char *id, bool x509) {
        const char *reason = "untouched";

        if (dps_registration_id_validate(id, x509, &reason) != 0)
                fprintf(stderr, "\"%s\" rejected: %s\n", id, reason);
        CHECK_INT(dps_registration_id_validate(id, x509, &reason), 0);
        CHECK_STR(reason, "untouched");
}

static void check_bad(const char *id, bool x509, const char *reason_expected) {
        const char *reason = NULL;

        CHECK_INT(dps_registration_id_validate(id, x509, &reason), -EINVAL);
        CHECK_STR(reason, reason_expected);
        /* the reason is optional */
        CHECK_INT(dps_registration_id_validate(id, x509, NULL), -EINVAL);
}

static void test_valid(void) {
        check_ok("dev-1", false);
        check_ok("sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6", false);
        check_ok("a", false);
        check_ok("A", true);
        check_ok("0", false);
        check_ok("site:line.3_dev-7", false);   /* ':' '.' '_' allowed inside */
        check_ok("ends-with-dash-", false);
        check_ok("MiXeD-CaSe", true);
}

static void test_length(void) {
        _cleanup_free_ char *s64 = repeat('a', 64), *s65 = repeat('a', 65),
                            *s128 = repeat('b', 128), *s129 = repeat('b', 129);

        check_ok(s64, true);
        check_ok(s128, false);
        check_ok(s64, false);
        check_bad(s65, true, "is 65 characters long; at most 64 are allowed with X.509 attestation (the certificate CN limit)");
        check_bad(s128, true, "is 128 characters long; at most 64 are allowed with X.509 attestation (the certificate CN limit)");
        check_bad(s129, false, "is 129 characters long; at most 128 are allowed");
        check_ok(s65, false);
}

static void test_empty(void) {
        check_bad("", false, "is empty");
        check_bad(NULL, false, "is empty");
        check_bad("", true, "is empty");
}

static void test_characters(void) {
        check_bad("dev/1", false, "contains '/' at position 4; only letters, digits and - . _ : are allowed");
        check_bad("dev 1", false, "contains byte 0x20 at position 4; only letters, digits and - . _ : are allowed");
        check_bad("#dev", false, "contains '#' at position 1; only letters, digits and - . _ : are allowed");
        check_bad("d\xc3\xa9v", false, "contains byte 0xc3 at position 2; only letters, digits and - . _ : are allowed");
        check_bad("dev+1", true, "contains '+' at position 4; only letters, digits and - . _ : are allowed");
        check_bad("dev\n", false, "contains byte 0x0a at position 4; only letters, digits and - . _ : are allowed");
        check_bad("a~b", false, "contains '~' at position 2; only letters, digits and - . _ : are allowed");
}

static void test_last_char(void) {
        check_bad("dev.", false, "ends with '.'; the last character must be a letter, a digit or '-'");
        check_bad("dev_", false, "ends with '_'; the last character must be a letter, a digit or '-'");
        check_bad("dev:", true, "ends with ':'; the last character must be a letter, a digit or '-'");
        check_bad(".", false, "ends with '.'; the last character must be a letter, a digit or '-'");
}

int main(void) {
        test_valid();
        test_length();
        test_empty();
        test_characters();
        test_last_char();
        return test_summary("test-dps-regid");
}
