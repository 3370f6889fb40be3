/* SPDX-License-Identifier: MIT */
/* dps.h: libdps, the Azure IoT Hub Device Provisioning Service device protocol */
#pragma once

/*
 * libdps is the protocol core shared by dpsd, dpsctl and dps-sim: pure
 * functions over strings and buffers, no network I/O, no logging above debug.
 * Every function returns 0 (or a documented positive value) on success and a
 * negative errno on failure. Out-parameters come last, are named ret_*, and
 * are written only on success. Strings handed out are owned by the caller and
 * freed with free(), except secrets, which are freed with dps_secret_free().
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Protocol constants (see the DPS device API over MQTT). */
#define DPS_API_VERSION          "2019-03-31"
#define DPS_GLOBAL_ENDPOINT      "global.azure-devices-provisioning.net"
#define DPS_PORT_MQTT            8883
#define DPS_PORT_MQTT_WS         443
#define DPS_WS_PATH              "/$iothub/websocket"
#define DPS_SUBSCRIBE_TOPIC      "$dps/registrations/res/#"
/* "max message: 96 KB" */
#define DPS_MAX_MESSAGE_SIZE     (96u * 1024u)
/* "Alphanumerics and - . _ :, up to 128 characters (64 for X.509, the CN limit)" */
#define DPS_REGISTRATION_ID_MAX      128
#define DPS_REGISTRATION_ID_MAX_X509 64

/* ---- secrets ---------------------------------------------------------- */

/* Wipes a NUL-terminated secret with OPENSSL_cleanse() and frees it. Takes
 * NULL. Returns NULL. */
char *dps_secret_free(char *secret);

/* ---- SAS tokens (dps-sas.c) ------------------------------------------- */

/* Signs a DPS SAS token:
 *   sr  = url-encode(id_scope + "/registrations/" + registration_id)
 *   sig = base64(HMAC-SHA256(base64-decode(key_b64), sr + "\n" + expiry))
 *   "SharedAccessSignature sr=<sr>&sig=<url-encode(sig)>&se=<expiry>&skn=registration"
 * -EINVAL for an empty or non-base64 key or an empty scope or id.
 * *ret_token is a secret: free it with dps_secret_free(). */
int dps_sas_sign(const char *id_scope, const char *registration_id, const char *key_b64,
                 uint64_t expiry, char **ret_token);

/* Derives a group-enrollment device key:
 *   base64(HMAC-SHA256(base64-decode(group_key_b64), registration_id))
 * *ret_device_key_b64 is a secret: free it with dps_secret_free(). */
int dps_sas_derive_key(const char *group_key_b64, const char *registration_id,
                       char **ret_device_key_b64);

/* base64(HMAC-SHA256(base64-decode(key_b64), message)), the primitive both of
 * the above use; dps-sim verifies signatures with it. Secret result. */
int dps_sas_hmac(const char *key_b64, const char *message, char **ret_sig_b64);

/* ---- registration id (dps-regid.c) ------------------------------------ */

/* Validates a registration id: 1..128 characters (64 when x509), only
 * A-Z a-z 0-9 - . _ :, the last one alphanumeric or '-'. On failure returns
 * -EINVAL and, if ret_reason is non-NULL, points it to a static English
 * sentence saying what is wrong (e.g. "contains '/' at position 4; only
 * letters, digits and - . _ : are allowed"). */
int dps_registration_id_validate(const char *id, bool x509, const char **ret_reason);

/* ---- topics and CONNECT username (dps-topic.c) ------------------------ */

/* "$dps/registrations/PUT/iotdps-register/?$rid={rid}" */
int dps_topic_register(const char *rid, char **ret_topic);
/* "$dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={op}" */
int dps_topic_poll(const char *rid, const char *operation_id, char **ret_topic);

typedef struct DpsResponseTopic {
        int status;             /* MQTT-level status, e.g. 200, 202, 429 */
        char *rid;              /* the echoed $rid, never NULL after a parse */
        int64_t retry_after;    /* seconds, -1 when absent */
} DpsResponseTopic;

/* Parses "$dps/registrations/res/{status}/?$rid={rid}[&retry-after={s}]":
 * properties in any order, unknown ones ignored. -EBADMSG for anything that
 * is not a DPS response topic (wrong prefix, truncated, status not 3 digits,
 * missing $rid), -ERANGE for a retry-after that is not a number in
 * 0..86400*7. Free with dps_response_topic_done(). */
int dps_topic_parse_response(const char *topic, DpsResponseTopic *ret);
void dps_response_topic_done(DpsResponseTopic *t);

/* "{id_scope}/registrations/{registration_id}/api-version={api_version}"
 * followed by "&ClientVersion={url-encoded client_version}" when
 * client_version is non-NULL. api_version NULL means DPS_API_VERSION. */
int dps_username(const char *id_scope, const char *registration_id, const char *api_version,
                 const char *client_version, char **ret_username);

/* ---- bodies (dps-json.c) ---------------------------------------------- */

typedef enum DpsStatus {
        DPS_STATUS_UNKNOWN = 0,  /* absent or not one of the words below */
        DPS_STATUS_UNASSIGNED,
        DPS_STATUS_ASSIGNING,
        DPS_STATUS_ASSIGNED,
        DPS_STATUS_FAILED,
        DPS_STATUS_DISABLED,
        _DPS_STATUS_MAX,
} DpsStatus;

const char *dps_status_to_string(DpsStatus s);   /* "assigned", ...; "unknown" */
DpsStatus dps_status_from_string(const char *s); /* DPS_STATUS_UNKNOWN if no match */

/* DeviceRegistrationResult. Every string may be NULL when absent. */
typedef struct DpsRegistrationState {
        char *registration_id;
        char *created_utc;
        char *assigned_hub;
        char *device_id;
        DpsStatus status;
        char *substatus;
        int64_t error_code;      /* 0 when absent */
        char *error_message;
        char *last_updated_utc;
        char *etag;
        char *payload;           /* the returned JSON, re-serialized; NULL when absent */
} DpsRegistrationState;

/* RegistrationOperationStatus, or an error body, or both. */
typedef struct DpsResponse {
        char *operation_id;
        DpsStatus status;
        bool has_registration_state;
        DpsRegistrationState state;
        /* error body: {"errorCode":401002,"trackingId":...,"message":...,"timestampUtc":...} */
        int64_t error_code;      /* 0 when absent */
        char *tracking_id;
        char *message;
        char *timestamp_utc;
} DpsResponse;

/* Builds {"registrationId":"...","payload":<payload_json>}; payload omitted
 * when payload_json is NULL. -EINVAL when payload_json is not valid JSON. */
int dps_body_register(const char *registration_id, const char *payload_json, char **ret_body);

/* Parses a response body. An empty body (len 0) parses to an all-empty
 * response. -EMSGSIZE over DPS_MAX_MESSAGE_SIZE, -EBADMSG for invalid JSON or
 * a top level that is not an object; fields of the wrong type are ignored. */
int dps_response_parse(const char *body, size_t len, DpsResponse **ret);
DpsResponse *dps_response_free(DpsResponse *r);

/* ---- outcomes and retry policy (dps-retry.c) -------------------------- */

typedef enum DpsOutcome {
        DPS_OUTCOME_ASSIGNED,     /* 200 + body status assigned: done */
        DPS_OUTCOME_PENDING,      /* 202 or body status assigning/unassigned: poll after retry-after */
        DPS_OUTCOME_TRANSIENT,    /* 5xx, network error, timeout, unparseable reply: back off */
        DPS_OUTCOME_THROTTLED,    /* 429: wait at least retry-after, retry the same request */
        DPS_OUTCOME_CREDENTIALS,  /* 401, 403, CONNACK refused for credentials: long back-off */
        DPS_OUTCOME_PERMANENT,    /* 400, 404, 412, body failed or disabled: final for this config */
        _DPS_OUTCOME_MAX,
} DpsOutcome;

const char *dps_outcome_to_string(DpsOutcome o);

/* Classifies one response: the body's status decides when present (a failed
 * or disabled registration may arrive with status 200). body may be NULL. */
DpsOutcome dps_classify(int mqtt_status, const DpsResponse *body);

typedef struct DpsBackoff {
        uint64_t min_usec;          /* first delay's upper bound */
        uint64_t max_usec;          /* cap of the exponential */
        uint64_t credentials_min_usec; /* floor for credentials failures */
        unsigned attempt;           /* failures since the last reset */
        uint64_t rng;               /* PRNG state: deterministic for a seed */
} DpsBackoff;

/* Default credentials floor: a wrong key stays wrong, do not hammer. */
#define DPS_BACKOFF_CREDENTIALS_MIN_USEC (300ULL * 1000000ULL)

void dps_backoff_init(DpsBackoff *b, uint64_t min_usec, uint64_t max_usec, uint64_t seed);
void dps_backoff_reset(DpsBackoff *b);

/* Delay before the next request, in microseconds, and counts the attempt.
 * For a failure (TRANSIENT, THROTTLED, CREDENTIALS, PERMANENT) the result is
 * floor + uniform in [min/2, min(max, min * 2^attempt)], then attempt++;
 * floor is retry_after_sec (>= 0; never clamped down), raised to
 * credentials_min_usec for CREDENTIALS and PERMANENT; a zero min_usec counts
 * as 1 s. PENDING returns retry-after (2 s when absent, at least 1 s) plus up
 * to a tenth of it as jitter and does not count as a failure. ASSIGNED resets attempt and returns 0. Saturates
 * instead of overflowing. See dps-retry.c for why. */
uint64_t dps_backoff_next(DpsBackoff *b, DpsOutcome outcome, int64_t retry_after_sec);

#ifdef __cplusplus
}
#endif
