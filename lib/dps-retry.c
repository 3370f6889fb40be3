/* SPDX-License-Identifier: MIT */
/* dps-retry.c: classifying DPS answers and the back-off law between attempts */
#include <errno.h>

#include "dps-macro.h"

#define USEC_PER_SEC 1000000ULL

/* "Without retry-after, the SDKs poll every 1 to 2 s": we take the gentle end. */
#define PENDING_DEFAULT_USEC (2 * USEC_PER_SEC)
/* The quickest poll, whatever the service says: a "retry-after=0" would
 * otherwise poll at round-trip speed, into "5 polls per 10 s per device".
 * Raising a zero is not shortening a wait, so the floor rule holds. */
#define PENDING_MIN_USEC (1 * USEC_PER_SEC)
/* "back off exponentially from 1 s": what a zero minimum means, since a
 * zero cap never grows and would retry at loop speed for ever. */
#define EXPONENTIAL_MIN_USEC (1 * USEC_PER_SEC)

static const char *const outcome_table[_DPS_OUTCOME_MAX] = {
        [DPS_OUTCOME_ASSIGNED]    = "assigned",
        [DPS_OUTCOME_PENDING]     = "pending",
        [DPS_OUTCOME_TRANSIENT]   = "transient",
        [DPS_OUTCOME_THROTTLED]   = "throttled",
        [DPS_OUTCOME_CREDENTIALS] = "credentials",
        [DPS_OUTCOME_PERMANENT]   = "permanent",
};

const char *dps_outcome_to_string(DpsOutcome o) {
        if ((unsigned) o >= _DPS_OUTCOME_MAX)
                return NULL;
        return outcome_table[o];
}

static DpsOutcome classify_body_status(DpsStatus s, const DpsResponse *body) {
        switch (s) {
        case DPS_STATUS_ASSIGNED:
                /* An assignment without a hub cannot be used: treat it as a
                 * broken reply and try again later. */
                if (!body->has_registration_state || strempty(body->state.assigned_hub))
                        return DPS_OUTCOME_TRANSIENT;
                return DPS_OUTCOME_ASSIGNED;
        case DPS_STATUS_ASSIGNING:
        case DPS_STATUS_UNASSIGNED:
                return DPS_OUTCOME_PENDING;
        case DPS_STATUS_FAILED:
        case DPS_STATUS_DISABLED:
                return DPS_OUTCOME_PERMANENT;
        case DPS_STATUS_UNKNOWN:
        case _DPS_STATUS_MAX:
                break;
        }
        return _DPS_OUTCOME_MAX;
}

DpsOutcome dps_classify(int mqtt_status, const DpsResponse *body) {
        /* "A failed or disabled registration can arrive with MQTT status 200:
         * the body's status decides, not only the topic's code." The body
         * decides for the 2xx answers that carry a RegistrationOperationStatus;
         * an error code is never overridden by a body. */
        if (mqtt_status >= 200 && mqtt_status < 300 && body) {
                DpsStatus s = body->status;
                DpsOutcome o;

                if (s == DPS_STATUS_UNKNOWN && body->has_registration_state)
                        s = body->state.status;
                o = classify_body_status(s, body);
                if (o != _DPS_OUTCOME_MAX)
                        return o;
        }

        switch (mqtt_status) {
        case 202:
                return DPS_OUTCOME_PENDING;
        case 401:
        case 403:
                return DPS_OUTCOME_CREDENTIALS;
        case 429:
                return DPS_OUTCOME_THROTTLED;
        }

        /* 200 without a usable status, 1xx, 3xx, 5xx and nonsense: retry. */
        if (mqtt_status >= 400 && mqtt_status < 500)
                return DPS_OUTCOME_PERMANENT; /* 400, 404, 412, ... */
        return DPS_OUTCOME_TRANSIENT;
}

/*
 * The back-off law.
 *
 * Failures (TRANSIENT, THROTTLED, CREDENTIALS, PERMANENT) count attempts. For
 * the n-th consecutive failure (n = 0 for the first):
 *
 *     cap_n = min(max, min * 2^n)
 *     E_n   = uniform in [min/2, cap_n]
 *     delay = floor + E_n
 *
 * where floor is the server's retry-after when given, raised to
 * credentials_min for CREDENTIALS and PERMANENT answers (a wrong key or a
 * disabled enrollment stays that way; retrying fast only adds to the bill and
 * the throttle), and 0 otherwise.
 *
 * Why this shape: the cap doubles from min, so a short outage costs little
 * and a long one backs off to max, as Microsoft's fleet guidance asks
 * ("back off exponentially from 1 s with random jitter up to the maximum
 * delay"). The jitter spans almost the whole window ("full jitter"), which is
 * what spreads a fleet that rebooted together, but it never goes below min/2,
 * so a single device never retries in a tight loop. retry-after is a floor
 * that is never clamped down (official SDKs that replace large values cause
 * throttling storms); the jitter is added on top so that a fleet told "retry
 * after 30 s" does not come back in the same millisecond.
 *
 * PENDING is not a failure: the operation is progressing. The delay is
 * retry-after (2 s when absent) plus up to a tenth of it as jitter, and the
 * attempt counter does not move. ASSIGNED resets the counter and returns 0.
 *
 * The PRNG is SplitMix64: tiny, good enough to decorrelate devices, and
 * deterministic for a seed so tests can check exact sequences. It is not
 * cryptographic and does not need to be.
 */

static uint64_t splitmix64(uint64_t *state) {
        uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);

        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
}

/* Uniform in [lo, hi] (hi >= lo). The modulo bias is below 2^-40 for any
 * delay a device will ever use. */
static uint64_t uniform(DpsBackoff *b, uint64_t lo, uint64_t hi) {
        uint64_t span = hi - lo;

        if (span == UINT64_MAX)
                return splitmix64(&b->rng);
        return lo + splitmix64(&b->rng) % (span + 1);
}

static uint64_t sat_add(uint64_t a, uint64_t b) {
        return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static uint64_t sec_to_usec(int64_t s) {
        if (s <= 0)
                return 0;
        if ((uint64_t) s > UINT64_MAX / USEC_PER_SEC)
                return UINT64_MAX;
        return (uint64_t) s * USEC_PER_SEC;
}

void dps_backoff_init(DpsBackoff *b, uint64_t min_usec, uint64_t max_usec, uint64_t seed) {
        if (!b)
                return;
        *b = (DpsBackoff) {
                .min_usec = min_usec,
                .max_usec = max_usec < min_usec ? min_usec : max_usec,
                .credentials_min_usec = DPS_BACKOFF_CREDENTIALS_MIN_USEC,
                .attempt = 0,
                .rng = seed,
        };
}

void dps_backoff_reset(DpsBackoff *b) {
        if (b)
                b->attempt = 0;
}

static uint64_t exponential(DpsBackoff *b) {
        uint64_t min = b->min_usec ?: EXPONENTIAL_MIN_USEC;
        uint64_t max = b->max_usec < min ? min : b->max_usec;
        uint64_t cap, lo;

        /* cap_n = min(max, min * 2^n), without overflowing */
        if (b->attempt >= 63 || min > (max >> b->attempt))
                cap = max;
        else
                cap = min << b->attempt;
        lo = min / 2;
        if (lo > cap)
                lo = cap;
        return uniform(b, lo, cap);
}

uint64_t dps_backoff_next(DpsBackoff *b, DpsOutcome outcome, int64_t retry_after_sec) {
        uint64_t floor = retry_after_sec >= 0 ? sec_to_usec(retry_after_sec) : 0, d;

        if (!b)
                return 0;

        switch (outcome) {
        case DPS_OUTCOME_ASSIGNED:
                b->attempt = 0;
                return 0;

        case DPS_OUTCOME_PENDING: {
                uint64_t base = retry_after_sec >= 0 ? floor : PENDING_DEFAULT_USEC;

                if (base < PENDING_MIN_USEC)
                        base = PENDING_MIN_USEC;

                return sat_add(base, uniform(b, 0, base / 10));
        }

        case DPS_OUTCOME_CREDENTIALS:
        case DPS_OUTCOME_PERMANENT:
                if (floor < b->credentials_min_usec)
                        floor = b->credentials_min_usec;
                break;

        case DPS_OUTCOME_TRANSIENT:
        case DPS_OUTCOME_THROTTLED:
                break;

        case _DPS_OUTCOME_MAX:
                return PENDING_DEFAULT_USEC;
        }

        d = sat_add(floor, exponential(b));
        if (b->attempt < UINT32_MAX)
                b->attempt++;
        return d;
}
