/* SPDX-License-Identifier: MIT */
/* sim-dps.h: the simulated DPS: enrollments, authentication, allocation, operations, throttling, faults */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/x509.h>

#include "sim-conf.h"

typedef struct SimDps SimDps;

/* Who a connection is, decided once at CONNECT. */
typedef struct SimClient {
        char *registration_id;          /* the CONNECT ClientId */
        const SimEnrollment *enrollment;        /* NULL: unknown device */
        SimFaults faults;               /* defaults merged with the enrollment's */
        bool authorized;                /* credentials verified */
        const char *auth;               /* "sas", "x509" or "none": what was presented */
        const char *reason;             /* static: why not authorized */
} SimClient;

void sim_client_done(SimClient *c);

typedef struct SimConnectRequest {
        const char *client_id;
        const char *username;           /* may be NULL */
        const char *password;           /* may be NULL */
        X509 *cert;                     /* TLS client certificate, may be NULL */
        STACK_OF(X509) *chain;          /* the rest of the peer's chain, may be NULL */
} SimConnectRequest;

/* Decides the CONNACK return code. Like DPS, wrong credentials (bad key,
 * expired token, other scope, wrong certificate) are accepted at CONNECT and
 * refused with 401 at register (fault auth-failure "connack": CONNACK 5
 * instead); a ClientId that is no registration id gets 2, an unparseable
 * username or password 4, no credentials at all 5. */
int sim_dps_connect(SimDps *d, const SimConnectRequest *req, SimClient *ret_client, uint8_t *ret_code);

typedef struct SimReply {
        int status;                     /* MQTT-level status in the topic */
        int retry_after;                /* seconds, -1: none */
        char *body;
        size_t body_len;
        char *body_status;              /* the body's "status", NULL for error bodies */
        bool silent;                    /* send nothing */
        int delay_ms;                   /* delay before sending */
        const char *fault;              /* injected fault kind, or NULL */
        const char *throttle;           /* throttle kind, or NULL */
} SimReply;

void sim_reply_done(SimReply *r);

/* A register request; the body may be empty or JSON. */
int sim_dps_register(SimDps *d, SimClient *c, const void *body, size_t len, SimReply *ret);
/* An operation status poll; the body is ignored. */
int sim_dps_poll(SimDps *d, SimClient *c, const char *operation_id, SimReply *ret);

/* The config is borrowed and must outlive the object. */
int sim_dps_new(const SimConfig *cfg, uint64_t seed, SimDps **ret);
SimDps *sim_dps_free(SimDps *d);

/* State file (config state-file): registrations that reached "assigned". */
int sim_dps_load_state(SimDps *d);
int sim_dps_save_state(SimDps *d);
bool sim_dps_state_dirty(const SimDps *d);
