/* SPDX-License-Identifier: MIT */
/* test-util.h: the few assertions the unit tests share */
#pragma once

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Each failed check prints where and why and makes the test exit 1 at the
 * end (so one run reports every failure, not only the first). */
static unsigned test_failures;
static unsigned test_checks;

#define CHECK(expr) do {                                                        \
                test_checks++;                                                  \
                if (!(expr)) {                                                  \
                        fprintf(stderr, "%s:%d: check failed: %s\n",            \
                                __FILE__, __LINE__, #expr);                     \
                        test_failures++;                                        \
                }                                                               \
        } while (0)

#define CHECK_INT(a, b) do {                                                    \
                long long _a = (long long) (a), _b = (long long) (b);           \
                test_checks++;                                                  \
                if (_a != _b) {                                                 \
                        fprintf(stderr, "%s:%d: %s == %lld, expected %s == %lld\n", \
                                __FILE__, __LINE__, #a, _a, #b, _b);            \
                        test_failures++;                                        \
                }                                                               \
        } while (0)

#define CHECK_STR(a, b) do {                                                    \
                const char *_a = (a), *_b = (b);                                \
                test_checks++;                                                  \
                if (!_a || !_b || strcmp(_a, _b) != 0) {                        \
                        fprintf(stderr, "%s:%d: %s == \"%s\", expected \"%s\"\n", \
                                __FILE__, __LINE__, #a, _a ? _a : "(null)",     \
                                _b ? _b : "(null)");                            \
                        test_failures++;                                        \
                }                                                               \
        } while (0)

/* Aborts the test right away: for preconditions later checks rely on. */
#define REQUIRE(expr) do {                                                      \
                if (!(expr)) {                                                  \
                        fprintf(stderr, "%s:%d: requirement failed: %s\n",      \
                                __FILE__, __LINE__, #expr);                     \
                        exit(1);                                                \
                }                                                               \
        } while (0)

static inline int test_summary(const char *name) {
        fprintf(stderr, "%s: %u checks, %u failed\n", name, test_checks, test_failures);
        return test_failures == 0 && test_checks > 0 ? 0 : 1;
}
