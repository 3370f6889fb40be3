/* SPDX-License-Identifier: MIT */
/* test-dps-json.c: register bodies, response bodies and their classification */
#include <errno.h>

#include "dps-macro.h"
#include "test-util.h"

static DpsResponse *parse(const char *s) {
        DpsResponse *r = NULL;

        REQUIRE(dps_response_parse(s, strlen(s), &r) == 0 && r);
        return r;
}

static void test_status_strings(void) {
        for (DpsStatus s = DPS_STATUS_UNKNOWN; s < _DPS_STATUS_MAX; s++) {
                if (s == DPS_STATUS_UNKNOWN)
                        continue;
                CHECK_INT(dps_status_from_string(dps_status_to_string(s)), s);
        }
        CHECK_STR(dps_status_to_string(DPS_STATUS_ASSIGNED), "assigned");
        CHECK_STR(dps_status_to_string(DPS_STATUS_UNKNOWN), "unknown");
        CHECK_STR(dps_status_to_string(_DPS_STATUS_MAX), "unknown");
        CHECK_INT(dps_status_from_string("Assigned"), DPS_STATUS_ASSIGNED);
        CHECK_INT(dps_status_from_string("unknown"), DPS_STATUS_UNKNOWN);
        CHECK_INT(dps_status_from_string("assign"), DPS_STATUS_UNKNOWN);
        CHECK_INT(dps_status_from_string(""), DPS_STATUS_UNKNOWN);
        CHECK_INT(dps_status_from_string(NULL), DPS_STATUS_UNKNOWN);
}

static void test_body_register(void) {
        _cleanup_free_ char *a = NULL, *b = NULL, *c = NULL, *d = NULL;
        char *x = NULL;

        CHECK_INT(dps_body_register("dev-1", NULL, &a), 0);
        CHECK_STR(a, "{\"registrationId\":\"dev-1\"}");
        CHECK_INT(dps_body_register("dev-1", " {\"model\": \"m1\", \"n\": [1, 2.5, true]} \n", &b), 0);
        CHECK_STR(b, "{\"registrationId\":\"dev-1\",\"payload\":{\"model\":\"m1\",\"n\":[1,2.5,true]}}");
        CHECK_INT(dps_body_register("dev-1", "null", &c), 0);
        CHECK_STR(c, "{\"registrationId\":\"dev-1\",\"payload\":null}");
        CHECK_INT(dps_body_register("dev-1", "42", &d), 0);
        CHECK_STR(d, "{\"registrationId\":\"dev-1\",\"payload\":42}");

        static const char *const bad[] = {
                "", "{", "{\"a\":}", "{\"a\":1} x", "{\"a\":1}{}", "nul", "[1,]", "{\"a\":1,}",
                "\"\xff\"",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                int r = dps_body_register("dev-1", bad[i], &x);

                if (r != -EINVAL)
                        fprintf(stderr, "payload '%s' accepted\n", bad[i]);
                CHECK_INT(r, -EINVAL);
                CHECK(x == NULL);
        }
        /* json-c 0.16 accepts single-quoted strings even in strict mode;
         * what goes on the wire is always re-serialized, so still valid JSON */
        _cleanup_free_ char *q = NULL;
        CHECK_INT(dps_body_register("dev-1", "{'a':1}", &q), 0);
        CHECK_STR(q, "{\"registrationId\":\"dev-1\",\"payload\":{\"a\":1}}");

        CHECK_INT(dps_body_register("", NULL, &x), -EINVAL);
        CHECK_INT(dps_body_register(NULL, "{}", &x), -EINVAL);
        CHECK(x == NULL);
}

static void test_assigned(void) {
        _cleanup_(dps_response_freep) DpsResponse *r = parse(
                "{\"operationId\":\"4.d0a671905ea5b2c8.42d78160\",\"status\":\"assigned\","
                "\"registrationState\":{\"x509\":{},\"registrationId\":\"dev-1\","
                "\"createdDateTimeUtc\":\"2026-11-26T10:00:00.1Z\",\"assignedHub\":\"hub-a.azure-devices.net\","
                "\"deviceId\":\"dev-1-id\",\"status\":\"assigned\",\"substatus\":\"initialAssignment\","
                "\"lastUpdatedDateTimeUtc\":\"2026-11-26T10:00:01.2Z\",\"etag\":\"IjAwMDAi\","
                "\"payload\":{\"url\":\"https://x/y\",\"n\":1}}}");

        CHECK_STR(r->operation_id, "4.d0a671905ea5b2c8.42d78160");
        CHECK_INT(r->status, DPS_STATUS_ASSIGNED);
        CHECK(r->has_registration_state);
        CHECK_STR(r->state.registration_id, "dev-1");
        CHECK_STR(r->state.created_utc, "2026-11-26T10:00:00.1Z");
        CHECK_STR(r->state.assigned_hub, "hub-a.azure-devices.net");
        CHECK_STR(r->state.device_id, "dev-1-id");
        CHECK_INT(r->state.status, DPS_STATUS_ASSIGNED);
        CHECK_STR(r->state.substatus, "initialAssignment");
        CHECK_STR(r->state.last_updated_utc, "2026-11-26T10:00:01.2Z");
        CHECK_STR(r->state.etag, "IjAwMDAi");
        CHECK_STR(r->state.payload, "{\"url\":\"https://x/y\",\"n\":1}");   /* no "\/" escaping */
        CHECK(r->state.error_message == NULL);
        CHECK_INT(r->error_code, 0);
        CHECK_INT(dps_classify(200, r), DPS_OUTCOME_ASSIGNED);
}

static void test_assigning(void) {
        _cleanup_(dps_response_freep) DpsResponse *r = parse(
                "{\"operationId\":\"op-1\",\"status\":\"assigning\"}");

        CHECK_STR(r->operation_id, "op-1");
        CHECK_INT(r->status, DPS_STATUS_ASSIGNING);
        CHECK(!r->has_registration_state);
        CHECK(r->state.payload == NULL);
        CHECK_INT(dps_classify(202, r), DPS_OUTCOME_PENDING);

        _cleanup_(dps_response_freep) DpsResponse *u = parse("{\"operationId\":\"op-1\",\"status\":\"unassigned\"}");
        CHECK_INT(dps_classify(202, u), DPS_OUTCOME_PENDING);
}

static void test_failed_with_200(void) {
        /* "A failed or disabled registration can arrive with MQTT status 200" */
        _cleanup_(dps_response_freep) DpsResponse *f = parse(
                "{\"operationId\":\"op\",\"status\":\"failed\",\"registrationState\":"
                "{\"registrationId\":\"dev-1\",\"status\":\"failed\",\"errorCode\":400209,"
                "\"errorMessage\":\"Custom allocation failed\"}}");
        _cleanup_(dps_response_freep) DpsResponse *d = parse(
                "{\"operationId\":\"op\",\"status\":\"disabled\",\"registrationState\":"
                "{\"registrationId\":\"dev-1\",\"status\":\"disabled\"}}");
        _cleanup_(dps_response_freep) DpsResponse *s = parse(
                /* no top-level status: the registration state's decides */
                "{\"operationId\":\"op\",\"registrationState\":{\"status\":\"failed\",\"errorCode\":401002}}");

        CHECK_INT(f->status, DPS_STATUS_FAILED);
        CHECK_INT(f->state.error_code, 400209);
        CHECK_STR(f->state.error_message, "Custom allocation failed");
        CHECK_INT(dps_classify(200, f), DPS_OUTCOME_PERMANENT);
        CHECK_INT(dps_classify(202, f), DPS_OUTCOME_PERMANENT);
        CHECK_INT(dps_classify(200, d), DPS_OUTCOME_PERMANENT);
        CHECK_INT(dps_classify(200, s), DPS_OUTCOME_PERMANENT);
}

static void test_error_body(void) {
        _cleanup_(dps_response_freep) DpsResponse *r = parse(
                "{\"errorCode\":401002,\"trackingId\":\"8ad0e8b6-1\",\"message\":\"The request is unauthorized.\","
                "\"timestampUtc\":\"2026-11-26T10:00:00.000Z\"}");

        CHECK_INT(r->error_code, 401002);
        CHECK_STR(r->tracking_id, "8ad0e8b6-1");
        CHECK_STR(r->message, "The request is unauthorized.");
        CHECK_STR(r->timestamp_utc, "2026-11-26T10:00:00.000Z");
        CHECK_INT(r->status, DPS_STATUS_UNKNOWN);
        CHECK(r->operation_id == NULL);
        CHECK_INT(dps_classify(401, r), DPS_OUTCOME_CREDENTIALS);
}

static void test_classify_status_codes(void) {
        static const struct { int code; DpsOutcome o; } t[] = {
                { 200, DPS_OUTCOME_TRANSIENT },  /* 200 without a usable body */
                { 202, DPS_OUTCOME_PENDING },
                { 400, DPS_OUTCOME_PERMANENT },
                { 401, DPS_OUTCOME_CREDENTIALS },
                { 403, DPS_OUTCOME_CREDENTIALS },
                { 404, DPS_OUTCOME_PERMANENT },
                { 412, DPS_OUTCOME_PERMANENT },
                { 429, DPS_OUTCOME_THROTTLED },
                { 500, DPS_OUTCOME_TRANSIENT },
                { 503, DPS_OUTCOME_TRANSIENT },
                { 0, DPS_OUTCOME_TRANSIENT },
                { -1, DPS_OUTCOME_TRANSIENT },
                { 302, DPS_OUTCOME_TRANSIENT },
        };

        for (size_t i = 0; i < ELEMENTSOF(t); i++)
                CHECK_INT(dps_classify(t[i].code, NULL), t[i].o);

        /* a body never overrides an error code */
        _cleanup_(dps_response_freep) DpsResponse *a = parse(
                "{\"status\":\"assigned\",\"registrationState\":{\"assignedHub\":\"h\"}}");
        CHECK_INT(dps_classify(200, a), DPS_OUTCOME_ASSIGNED);
        CHECK_INT(dps_classify(429, a), DPS_OUTCOME_THROTTLED);
        CHECK_INT(dps_classify(503, a), DPS_OUTCOME_TRANSIENT);

        /* assigned without a hub is unusable: retry, do not report success */
        _cleanup_(dps_response_freep) DpsResponse *n = parse("{\"status\":\"assigned\"}");
        CHECK_INT(dps_classify(200, n), DPS_OUTCOME_TRANSIENT);
        _cleanup_(dps_response_freep) DpsResponse *e = parse(
                "{\"status\":\"assigned\",\"registrationState\":{\"assignedHub\":\"\"}}");
        CHECK_INT(dps_classify(200, e), DPS_OUTCOME_TRANSIENT);

        /* an unknown word in 202 is still "in progress" */
        _cleanup_(dps_response_freep) DpsResponse *w = parse("{\"status\":\"pondering\"}");
        CHECK_INT(w->status, DPS_STATUS_UNKNOWN);
        CHECK_INT(dps_classify(202, w), DPS_OUTCOME_PENDING);
        CHECK_INT(dps_classify(200, w), DPS_OUTCOME_TRANSIENT);

        for (DpsOutcome o = DPS_OUTCOME_ASSIGNED; o < _DPS_OUTCOME_MAX; o++)
                CHECK(dps_outcome_to_string(o) != NULL);
        CHECK_STR(dps_outcome_to_string(DPS_OUTCOME_THROTTLED), "throttled");
}

static void test_wrong_types(void) {
        /* fields of the wrong type are ignored, not fatal */
        _cleanup_(dps_response_freep) DpsResponse *r = parse(
                "{\"operationId\":5,\"status\":[\"assigned\"],\"errorCode\":\"401002\","
                "\"registrationState\":{\"assignedHub\":7,\"deviceId\":null,\"payload\":null,\"errorCode\":1.5}}");

        CHECK(r->operation_id == NULL);
        CHECK_INT(r->status, DPS_STATUS_UNKNOWN);
        CHECK_INT(r->error_code, 0);
        CHECK(r->has_registration_state);
        CHECK(r->state.assigned_hub == NULL);
        CHECK(r->state.device_id == NULL);
        CHECK(r->state.payload == NULL);
        CHECK_INT(r->state.error_code, 0);

        _cleanup_(dps_response_freep) DpsResponse *s = parse("{\"registrationState\":\"assigned\"}");
        CHECK(!s->has_registration_state);
}

static void test_bad_bodies(void) {
        static const char *const bad[] = {
                "{", "{\"a\":1", "not json", "{\"a\":1}}", "{\"a\":1} trailing",
                "[]", "[{\"status\":\"assigned\"}]", "\"assigned\"", "42", "null", "true",
                "{\"a\":\"\xff\xfe\"}", " ", "{\"a\":1,}",
        };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                DpsResponse *r = (DpsResponse *) 0x1;

                int e = dps_response_parse(bad[i], strlen(bad[i]), &r);

                if (e != -EBADMSG)
                        fprintf(stderr, "body '%s' not rejected\n", bad[i]);
                CHECK_INT(e, -EBADMSG);
                CHECK(r == (DpsResponse *) 0x1);
        }

        /* len decides, not a NUL: an embedded NUL is garbage */
        DpsResponse *r = NULL;
        CHECK_INT(dps_response_parse("{}\0{}", 5, &r), -EBADMSG);
        /* a body cut by len */
        CHECK_INT(dps_response_parse("{\"a\":1}", 5, &r), -EBADMSG);
        CHECK(r == NULL);

        /* trailing whitespace is fine */
        CHECK_INT(dps_response_parse("{\"status\":\"assigning\"} \r\n", 25, &r), 0);
        CHECK(r && r->status == DPS_STATUS_ASSIGNING);
        r = dps_response_free(r);
        CHECK(r == NULL);
}

static void test_empty_and_size(void) {
        DpsResponse *r = NULL;

        CHECK_INT(dps_response_parse("", 0, &r), 0);
        REQUIRE(r);
        CHECK(r->operation_id == NULL && r->status == DPS_STATUS_UNKNOWN && !r->has_registration_state);
        r = dps_response_free(r);
        CHECK_INT(dps_response_parse(NULL, 0, &r), 0);
        r = dps_response_free(r);

        /* exactly 96 KB parses, one byte more is refused before parsing */
        size_t n = DPS_MAX_MESSAGE_SIZE;
        char *big = malloc(n + 2);
        REQUIRE(big);
        memset(big, ' ', n + 1);
        memcpy(big, "{\"message\":\"", 12);
        memset(big + 12, 'a', n - 14);
        memcpy(big + n - 2, "\"}", 2);
        big[n + 1] = '\0';

        CHECK_INT(dps_response_parse(big, n, &r), 0);
        CHECK(r && r->message && strlen(r->message) == n - 14);
        r = dps_response_free(r);
        CHECK_INT(dps_response_parse(big, n + 1, &r), -EMSGSIZE);
        CHECK(r == NULL);
        free(big);

        CHECK(dps_response_free(NULL) == NULL);
}

static void test_deep_nesting(void) {
        /* json-c's depth limit turns a stack bomb into an error, not a crash */
        size_t depth = 10000;
        char *s = malloc(2 * depth + 1);
        DpsResponse *r = NULL;

        REQUIRE(s);
        memset(s, '[', depth);
        memset(s + depth, ']', depth);
        s[2 * depth] = '\0';
        CHECK_INT(dps_response_parse(s, 2 * depth, &r), -EBADMSG);
        free(s);
}

int main(void) {
        test_status_strings();
        test_body_register();
        test_assigned();
        test_assigning();
        test_failed_with_200();
        test_error_body();
        test_classify_status_codes();
        test_wrong_types();
        test_bad_bodies();
        test_empty_and_size();
        test_deep_nesting();
        return test_summary("test-dps-json");
}
