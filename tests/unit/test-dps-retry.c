/* SPDX-License-Identifier: MIT */
/* test-dps-retry.c: the back-off law (see lib/dps-retry.c) */
#include <errno.h>

#include "dps-macro.h"
#include "test-util.h"

#define SEC 1000000ULL

static void test_deterministic(void) {
        DpsBackoff a, b, c;
        bool differs = false;

        dps_backoff_init(&a, 1 * SEC, 60 * SEC, 42);
        dps_backoff_init(&b, 1 * SEC, 60 * SEC, 42);
        dps_backoff_init(&c, 1 * SEC, 60 * SEC, 43);
        for (int i = 0; i < 20; i++) {
                uint64_t x = dps_backoff_next(&a, DPS_OUTCOME_TRANSIENT, -1);
                uint64_t y = dps_backoff_next(&b, DPS_OUTCOME_TRANSIENT, -1);
                uint64_t z = dps_backoff_next(&c, DPS_OUTCOME_TRANSIENT, -1);

                CHECK_INT(x, y);
                if (x != z)
                        differs = true;
        }
        CHECK(differs);
        CHECK_INT(a.attempt, 20);
}

static uint64_t cap_of(unsigned n, uint64_t min, uint64_t max) {
        uint64_t cap = min;

        for (unsigned i = 0; i < n && cap < max; i++)
                cap *= 2;
        return cap < max ? cap : max;
}

static void test_growth_and_cap(void) {
        const uint64_t min = 1 * SEC, max = 60 * SEC;
        uint64_t highest[12] = { 0 }, lowest[12];

        for (unsigned n = 0; n < ELEMENTSOF(lowest); n++)
                lowest[n] = UINT64_MAX;

        for (uint64_t seed = 1; seed <= 400; seed++) {
                DpsBackoff b;

                dps_backoff_init(&b, min, max, seed);
                for (unsigned n = 0; n < ELEMENTSOF(highest); n++) {
                        uint64_t d = dps_backoff_next(&b, DPS_OUTCOME_TRANSIENT, -1);

                        /* the law: uniform in [min/2, min(max, min * 2^n)] */
                        CHECK(d >= min / 2);
                        CHECK(d <= cap_of(n, min, max));
                        if (d > highest[n])
                                highest[n] = d;
                        if (d < lowest[n])
                                lowest[n] = d;
                }
        }

        /* it grows: the largest delay at n exceeds the cap of n-1 while the
         * cap doubles (1, 2, 4, 8, 16, 32 s), then reaches the cap 60 s */
        for (unsigned n = 1; n <= 5; n++)
                CHECK(highest[n] > cap_of(n - 1, min, max));
        for (unsigned n = 6; n < ELEMENTSOF(highest); n++) {
                CHECK(highest[n] > 55 * SEC);
                CHECK(highest[n] <= max);
                /* full jitter: the low end of the window is used too */
                CHECK(lowest[n] < 5 * SEC);
        }
}

static void test_spread(void) {
        /* at the cap, delays cover the whole window, not a narrow band */
        unsigned buckets[6] = { 0 };
        DpsBackoff b;

        dps_backoff_init(&b, 1 * SEC, 60 * SEC, 7);
        for (int i = 0; i < 10; i++)
                (void) dps_backoff_next(&b, DPS_OUTCOME_TRANSIENT, -1);
        for (int i = 0; i < 6000; i++) {
                uint64_t d = dps_backoff_next(&b, DPS_OUTCOME_TRANSIENT, -1);

                REQUIRE(d <= 60 * SEC);
                buckets[d / (10 * SEC) < 6 ? d / (10 * SEC) : 5]++;
        }
        for (unsigned i = 0; i < 6; i++)
                CHECK(buckets[i] > 800 && buckets[i] < 1200);   /* 1000 expected each */
}

static void test_retry_after_floor(void) {
        DpsBackoff b;

        /* never clamped down, even far above max */
        dps_backoff_init(&b, 1 * SEC, 60 * SEC, 1);
        for (int i = 0; i < 50; i++) {
                uint64_t d = dps_backoff_next(&b, DPS_OUTCOME_THROTTLED, 3600);

                CHECK(d >= 3600 * SEC);
                CHECK(d <= 3660 * SEC);
        }

        dps_backoff_init(&b, 1 * SEC, 60 * SEC, 2);
        uint64_t d = dps_backoff_next(&b, DPS_OUTCOME_TRANSIENT, 3);
        CHECK(d >= 3 * SEC + SEC / 2 && d <= 4 * SEC);
        CHECK_INT(b.attempt, 1);

        /* retry-after 0 is a floor of 0: plain back-off */
        d = dps_backoff_next(&b, DPS_OUTCOME_THROTTLED, 0);
        CHECK(d >= SEC / 2 && d <= 2 * SEC);

        /* absurd values saturate instead of wrapping */
        d = dps_backoff_next(&b, DPS_OUTCOME_THROTTLED, INT64_MAX);
        CHECK(d == UINT64_MAX);
}

static void test_credentials_floor(void) {
        DpsBackoff b;

        dps_backoff_init(&b, 1 * SEC, 60 * SEC, 3);
        CHECK_INT(b.credentials_min_usec, DPS_BACKOFF_CREDENTIALS_MIN_USEC);
        for (int i = 0; i < 20; i++) {
                uint64_t d = dps_backoff_next(&b, DPS_OUTCOME_CREDENTIALS, -1);

                CHECK(d >= DPS_BACKOFF_CREDENTIALS_MIN_USEC);
                CHECK(d <= DPS_BACKOFF_CREDENTIALS_MIN_USEC + 60 * SEC);
        }
        CHECK_INT(b.attempt, 20);

        /* a larger retry-after wins over the credentials floor */
        uint64_t d = dps_backoff_next(&b, DPS_OUTCOME_CREDENTIALS, 1000);
        CHECK(d >= 1000 * SEC);

        /* the floor is configurable */
        dps_backoff_init(&b, 1 * SEC, 60 * SEC, 3);
        b.credentials_min_usec = 10 * SEC;
        d = dps_backoff_next(&b, DPS_OUTCOME_CREDENTIALS, -1);
        CHECK(d >= 10 * SEC && d <= 11 * SEC);

        /* a permanent failure is not retried fast either */
        d = dps_backoff_next(&b, DPS_OUTCOME_PERMANENT, -1);
        CHECK(d >= 10 * SEC);
}

static void test_pending(void) {
        DpsBackoff b;

        dps_backoff_init(&b, 1 * SEC, 60 * SEC, 4);
        (void) dps_backoff_next(&b, DPS_OUTCOME_TRANSIENT, -1);
        CHECK_INT(b.attempt, 1);

        for (int i = 0; i < 50; i++) {
                uint64_t d = dps_backoff_next(&b, DPS_OUTCOME_PENDING, -1);

                CHECK(d >= 2 * SEC && d <= 2 * SEC + 2 * SEC / 10);
        }
        CHECK_INT(b.attempt, 1);   /* polling is not failing */

        uint64_t d = dps_backoff_next(&b, DPS_OUTCOME_PENDING, 5);
        CHECK(d >= 5 * SEC && d <= 5 * SEC + SEC / 2);
        d = dps_backoff_next(&b, DPS_OUTCOME_PENDING, 600);   /* a long wait is honoured */
        CHECK(d >= 600 * SEC && d <= 660 * SEC);
        /* "retry-after=0" does not poll at round-trip speed */
        for (int i = 0; i < 50; i++) {
                d = dps_backoff_next(&b, DPS_OUTCOME_PENDING, 0);
                CHECK(d >= 1 * SEC && d <= 1 * SEC + SEC / 10);
        }
        CHECK_INT(b.attempt, 1);
}

static void test_zero_minimum(void) {
        DpsBackoff b;

        /* a zero minimum would keep the cap at zero for ever: it counts as 1 s */
        dps_backoff_init(&b, 0, 60 * SEC, 6);
        b.credentials_min_usec = 0;
        uint64_t d = dps_backoff_next(&b, DPS_OUTCOME_TRANSIENT, -1);
        CHECK(d >= SEC / 2 && d <= 1 * SEC);
        for (int i = 0; i < 10; i++)
                d = dps_backoff_next(&b, DPS_OUTCOME_CREDENTIALS, -1);
        CHECK(d >= SEC / 2 && d <= 60 * SEC);
        CHECK_INT(b.attempt, 11);
}

static void test_reset(void) {
        DpsBackoff b;

        dps_backoff_init(&b, 1 * SEC, 60 * SEC, 5);
        for (int i = 0; i < 10; i++)
                (void) dps_backoff_next(&b, DPS_OUTCOME_TRANSIENT, -1);
        CHECK_INT(b.attempt, 10);
        dps_backoff_reset(&b);
        CHECK_INT(b.attempt, 0);
        /* after a reset the window is back to [min/2, min] */
        uint64_t d = dps_backoff_next(&b, DPS_OUTCOME_TRANSIENT, -1);
        CHECK(d >= SEC / 2 && d <= SEC);

        (void) dps_backoff_next(&b, DPS_OUTCOME_TRANSIENT, -1);
        CHECK_INT(dps_backoff_next(&b, DPS_OUTCOME_ASSIGNED, -1), 0);
        CHECK_INT(b.attempt, 0);
}

static void test_odd_parameters(void) {
        DpsBackoff b;

        /* max below min is raised to min */
        dps_backoff_init(&b, 10 * SEC, 1 * SEC, 6);
        CHECK_INT(b.max_usec, 10 * SEC);
        for (int i = 0; i < 100; i++) {
                uint64_t d = dps_backoff_next(&b, DPS_OUTCOME_TRANSIENT, -1);

                CHECK(d >= 5 * SEC && d <= 10 * SEC);
        }
        CHECK_INT(b.attempt, 100);

        /* huge attempt counts do not overflow the shift */
        dps_backoff_init(&b, 1 * SEC, 3600 * SEC, 8);
        b.attempt = 200;
        uint64_t d = dps_backoff_next(&b, DPS_OUTCOME_TRANSIENT, -1);
        CHECK(d >= SEC / 2 && d <= 3600 * SEC);

        /* min 0, max 0 never means immediate retries: 1 s is the least */
        dps_backoff_init(&b, 0, 0, 9);
        d = dps_backoff_next(&b, DPS_OUTCOME_TRANSIENT, -1);
        CHECK(d >= SEC / 2 && d <= 1 * SEC);
}

int main(void) {
        test_deterministic();
        test_growth_and_cap();
        test_spread();
        test_retry_after_floor();
        test_credentials_floor();
        test_pending();
        test_zero_minimum();
        test_reset();
        test_odd_parameters();
        return test_summary("test-dps-retry");
}
