/* SPDX-License-Identifier: MIT */
/* test-dps-topic.c: request topics, response topic parsing and the CONNECT username */
#include <errno.h>

#include "dps-macro.h"
#include "test-util.h"

static void test_request_topics(void) {
        _cleanup_free_ char *a = NULL, *b = NULL, *c = NULL;
        char *x = NULL;

        CHECK_INT(dps_topic_register("1", &a), 0);
        CHECK_STR(a, "$dps/registrations/PUT/iotdps-register/?$rid=1");
        CHECK_INT(dps_topic_poll("42", "4.d0a671905ea5b2c8.42d78160-4c78-479e-8be7-61d5e55dac0d", &b), 0);
        CHECK_STR(b, "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=42"
                     "&operationId=4.d0a671905ea5b2c8.42d78160-4c78-479e-8be7-61d5e55dac0d");
        /* a hostile operation id cannot add a property or a topic level */
        CHECK_INT(dps_topic_poll("7", "x&$rid=9/#", &c), 0);
        CHECK_STR(c, "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=7&operationId=x%26%24rid%3D9%2F%23");

        CHECK_INT(dps_topic_register("", &x), -EINVAL);
        CHECK_INT(dps_topic_register(NULL, &x), -EINVAL);
        CHECK_INT(dps_topic_register("a&b", &x), -EINVAL);
        CHECK_INT(dps_topic_register("a/#", &x), -EINVAL);
        CHECK_INT(dps_topic_poll("1", "", &x), -EINVAL);
        CHECK_INT(dps_topic_poll("1", NULL, &x), -EINVAL);
        CHECK(x == NULL);
}

static void test_parse_ok(void) {
        static const struct {
                const char *topic;
                int status;
                const char *rid;
                int64_t retry_after;
        } ok[] = {
                { "$dps/registrations/res/202/?$rid=1&retry-after=3", 202, "1", 3 },
                { "$dps/registrations/res/202/?retry-after=3&$rid=1", 202, "1", 3 },    /* before $rid */
                { "$dps/registrations/res/200/?$rid=17", 200, "17", -1 },                /* missing */
                { "$dps/registrations/res/429/?$rid=ab-cd&foo=bar&retry-after=0&x", 429, "ab-cd", 0 },
                { "$dps/registrations/res/401/?$rid=3f2504e0-4f89-11d3-9a0c-0305e82c3301",
                  401, "3f2504e0-4f89-11d3-9a0c-0305e82c3301", -1 },
                { "$dps/registrations/res/202/?$rid=1&retry-after=604800", 202, "1", 604800 }, /* a week */
                { "$dps/registrations/res/500/?unknown=1&$rid=9", 500, "9", -1 },
                { "$dps/registrations/res/202/?$rid=a%2Fb", 202, "a/b", -1 },
                { "$dps/registrations/res/202/?$rid=1&retry-after=007", 202, "1", 7 },
        };

        for (size_t i = 0; i < ELEMENTSOF(ok); i++) {
                DpsResponseTopic t = { .status = -1 };

                CHECK_INT(dps_topic_parse_response(ok[i].topic, &t), 0);
                CHECK_INT(t.status, ok[i].status);
                CHECK_STR(t.rid, ok[i].rid);
                CHECK_INT(t.retry_after, ok[i].retry_after);
                dps_response_topic_done(&t);
                CHECK(t.rid == NULL);
        }
}

static void test_parse_bad(void) {
        static const struct { const char *topic; int error; } bad[] = {
                { "", -EBADMSG },
                { "$dps/registrations/res/", -EBADMSG },                 /* truncated */
                { "$dps/registrations/res/20", -EBADMSG },
                { "$dps/registrations/res/202", -EBADMSG },
                { "$dps/registrations/res/202/", -EBADMSG },
                { "$dps/registrations/res/202/?", -EBADMSG },              /* no $rid */
                { "$dps/registrations/res/202/?retry-after=3", -EBADMSG },
                { "$dps/registrations/res/202/?$rid=", -EBADMSG },         /* empty rid */
                { "$dps/registrations/res/202/?$rid", -EBADMSG },
                { "$dps/registrations/res/202/?$rid=1&$rid=2", -EBADMSG }, /* ambiguous */
                { "$dps/registrations/res/202/?$rid=%zz", -EBADMSG },
                { "$dps/registrations/res/2020/?$rid=1", -EBADMSG },       /* 4 digits */
                { "$dps/registrations/res/20a/?$rid=1", -EBADMSG },
                { "$dps/registrations/res/099/?$rid=1", -EBADMSG },
                { "$dps/registrations/res/202?$rid=1", -EBADMSG },
                { "$dps/registrations/req/202/?$rid=1", -EBADMSG },        /* wrong prefix */
                { "dps/registrations/res/202/?$rid=1", -EBADMSG },
                { "$DPS/registrations/res/202/?$rid=1", -EBADMSG },
                { "$iothub/twin/res/200/?$rid=1", -EBADMSG },
                { "$dps/registrations/res/202/?$rid=1&retry-after=", -ERANGE },
                { "$dps/registrations/res/202/?$rid=1&retry-after=abc", -ERANGE },
                { "$dps/registrations/res/202/?$rid=1&retry-after=3s", -ERANGE },
                { "$dps/registrations/res/202/?$rid=1&retry-after=-1", -ERANGE },
                { "$dps/registrations/res/202/?$rid=1&retry-after=+3", -ERANGE },
                { "$dps/registrations/res/202/?$rid=1&retry-after=1.5", -ERANGE },
                { "$dps/registrations/res/202/?$rid=1&retry-after=604801", -ERANGE },
                { "$dps/registrations/res/202/?$rid=1&retry-after=99999999999999999999999", -ERANGE },
                { "$dps/registrations/res/202/?$rid=1&retry-after=1&retry-after=2", -ERANGE },
        };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                DpsResponseTopic t = { .status = -7, .rid = NULL, .retry_after = -7 };
                int r = dps_topic_parse_response(bad[i].topic, &t);

                if (r != bad[i].error)
                        fprintf(stderr, "topic \"%s\"\n", bad[i].topic);
                CHECK_INT(r, bad[i].error);
                /* written only on success */
                CHECK(t.status == -7 && t.rid == NULL && t.retry_after == -7);
        }
}

static void test_username(void) {
        _cleanup_free_ char *a = NULL, *b = NULL, *c = NULL;
        char *x = NULL;

        CHECK_INT(dps_username("0ne00000A0A", "dev-1", NULL, NULL, &a), 0);
        CHECK_STR(a, "0ne00000A0A/registrations/dev-1/api-version=2019-03-31");
        CHECK_INT(dps_username("0ne00000A0A", "dev-1", NULL, "dpsd/0.1.0 (Linux; x86_64)", &b), 0);
        CHECK_STR(b, "0ne00000A0A/registrations/dev-1/api-version=2019-03-31"
                     "&ClientVersion=dpsd%2F0.1.0%20%28Linux%3B%20x86_64%29");
        CHECK_INT(dps_username("0ne00000A0A", "dev-1", "2021-06-01", "a&b=c", &c), 0);
        CHECK_STR(c, "0ne00000A0A/registrations/dev-1/api-version=2021-06-01&ClientVersion=a%26b%3Dc");

        CHECK_INT(dps_username("", "dev-1", NULL, NULL, &x), -EINVAL);
        CHECK_INT(dps_username("0ne00000A0A", "", NULL, NULL, &x), -EINVAL);
        CHECK_INT(dps_username("0ne00000A0A", "dev-1", "", NULL, &x), -EINVAL);
        CHECK(x == NULL);
}

int main(void) {
        test_request_topics();
        test_parse_ok();
        test_parse_bad();
        test_username();
        return test_summary("test-dps-topic");
}
