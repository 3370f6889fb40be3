/* SPDX-License-Identifier: MIT */
/* sim-conf.h: dps-sim's configuration: listeners, TLS, throttling, faults and enrollments */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/x509.h>

typedef enum SimFinal {
        SIM_FINAL_ASSIGNED,
        SIM_FINAL_FAILED,
        SIM_FINAL_DISABLED,
        _SIM_FINAL_MAX,
} SimFinal;

typedef enum SimDrop {
        SIM_DROP_NONE,
        SIM_DROP_AFTER_CONNECT,
        SIM_DROP_AFTER_SUBSCRIBE,
        SIM_DROP_AFTER_REGISTER,
        SIM_DROP_AFTER_PACKETS,
        _SIM_DROP_MAX,
} SimDrop;

/* Where wrong credentials are refused: DPS answers the register with 401;
 * "connack" refuses the CONNECT with return code 5 instead. */
typedef enum SimAuthFailure {
        SIM_AUTH_FAILURE_REGISTER,
        SIM_AUTH_FAILURE_CONNACK,
        _SIM_AUTH_FAILURE_MAX,
} SimAuthFailure;

typedef enum SimBody {
        SIM_BODY_NORMAL,
        SIM_BODY_MALFORMED,
        SIM_BODY_OVERSIZED,
        _SIM_BODY_MAX,
} SimBody;

/* Which keys a fault block sets, so an enrollment's block overrides the
 * defaults key by key. */
enum {
        SIM_FAULT_ASSIGNING_POLLS    = 1 << 0,
        SIM_FAULT_RETRY_AFTER        = 1 << 1,
        SIM_FAULT_FINAL_STATUS       = 1 << 2,
        SIM_FAULT_ERROR_CODE         = 1 << 3,
        SIM_FAULT_FAIL_FIRST         = 1 << 4,
        SIM_FAULT_FAIL_STATUS        = 1 << 5,
        SIM_FAULT_FAIL_PROBABILITY   = 1 << 6,
        SIM_FAULT_DROP               = 1 << 7,
        SIM_FAULT_DROP_AFTER_PACKETS = 1 << 8,
        SIM_FAULT_DELAY_MS           = 1 << 9,
        SIM_FAULT_SILENT             = 1 << 10,
        SIM_FAULT_BODY               = 1 << 11,
        SIM_FAULT_AUTH_FAILURE       = 1 << 12,
};

typedef struct SimFaults {
        unsigned set;                   /* SIM_FAULT_* mask */
        int assigning_polls;            /* 202s before the final answer */
        int retry_after;                /* seconds; -1 omits the property */
        SimFinal final_status;
        int64_t error_code;
        int fail_first;                 /* first N register/poll requests of a device fail */
        int fail_status;
        double fail_probability;
        SimDrop drop;
        int drop_after_packets;
        int delay_ms;
        bool silent;
        SimBody body;
        SimAuthFailure auth_failure;
} SimFaults;

typedef enum SimAttestation {
        SIM_ATTESTATION_SYMMETRIC_KEY,
        SIM_ATTESTATION_X509,
        _SIM_ATTESTATION_MAX,
} SimAttestation;

typedef enum SimAllocation {
        SIM_ALLOCATION_ROUND_ROBIN,
        SIM_ALLOCATION_HASHED,
        _SIM_ALLOCATION_MAX,
} SimAllocation;

typedef enum SimPayload {
        SIM_PAYLOAD_NONE,
        SIM_PAYLOAD_ECHO,
        SIM_PAYLOAD_JSON,
        _SIM_PAYLOAD_MAX,
} SimPayload;

typedef struct SimEnrollment {
        char *registration_id;          /* individual enrollment, or NULL */
        char *group;                    /* group enrollment name, or NULL */
        SimAttestation attestation;
        char *primary_key, *secondary_key;      /* secrets, base64 */
        X509 *certificate;              /* individual X.509 */
        X509 *ca;                       /* group X.509 */
        char **hubs;
        size_t n_hubs;
        SimAllocation allocation;
        char *device_id;
        bool enabled;
        SimPayload payload;
        char *payload_json;
        SimFaults faults;
        unsigned line;
} SimEnrollment;

typedef struct SimConfig {
        char *path;
        char *id_scope;
        char *tls_certificate, *tls_key;        /* absolute paths */
        char *listen_mqtt, *listen_ws;          /* "host:port"; ws may be NULL */
        char *state_file;                       /* may be NULL */
        unsigned registrations_per_minute, operations_per_minute, polls_per_10s;
        SimFaults defaults;
        SimEnrollment *enrollments;
        size_t n_enrollments;
} SimConfig;

/* Loads path. On failure returns a negative errno and, when ret_error is
 * non-NULL, a malloc'd message naming file:line, the key and what is valid. */
int sim_config_load(const char *path, SimConfig **ret, char **ret_error);
SimConfig *sim_config_free(SimConfig *c);

/* Applies "KEY=VALUE" to a fault block (as --set does). -EINVAL with a
 * malloc'd message on failure. */
int sim_faults_set(SimFaults *f, const char *assignment, char **ret_error);
/* The defaults of the contract: assigning-polls 1, retry-after 1, assigned,
 * fail-status 503, nothing else. */
void sim_faults_init(SimFaults *f);
/* Returns base with every key that over sets replaced. */
SimFaults sim_faults_merge(const SimFaults *base, const SimFaults *over);

const char *sim_final_to_string(SimFinal f);
const char *sim_drop_to_string(SimDrop d);
const char *sim_body_to_string(SimBody b);
