/* SPDX-License-Identifier: MIT */
/* dpsd-conf.h: dpsd's configuration file (/etc/dps.conf, libconfig) */
#pragma once

#include <openssl/evp.h>

#include <stdbool.h>
#include <stdint.h>

#include "dps-proxy.h"
#include "dpsd-manager.h"

#define CONFIG_DEFAULT_PATH SYSCONFDIR "/dps.conf"
/* "Exit status for a bad config is 78 (EX_CONFIG)" */
#define EXIT_CONFIG 78

typedef enum AttestationType {
        ATTESTATION_SYMMETRIC_KEY,
        ATTESTATION_X509,
        _ATTESTATION_MAX,
} AttestationType;

const char *attestation_type_to_string(AttestationType t);

struct Config {
        char *path;                     /* the file it came from */

        char *endpoint;
        uint16_t port;
        char *transport;                /* "mqtt" or "mqtt-ws" */
        DpsProxy proxy;                 /* HTTP CONNECT proxy; host NULL: direct. Credentials are secrets */
        char *id_scope;
        char *registration_id;          /* resolved, validated */
        char *registration_id_source;   /* "config", "machine-id", "hostname", "file:...", "certificate-cn" */

        AttestationType attestation;
        char *key_file;                 /* symmetric key (device or group), or the X.509 private key */
        bool group_key;                 /* key_file holds a group key: derive the device key */
        char *certificate_file;         /* x509 only */
        uint64_t certificate_not_before_usec;  /* x509: notBefore, for the clock sanity check */
        uint64_t certificate_not_after_usec;   /* x509: notAfter, named when the service refuses it */
        char *certificate_sha256;       /* x509: fingerprint of the leaf, part of the cache fingerprint */

        char *ca_file, *ca_path;        /* at least one is set: default ca_path /etc/ssl/certs */

        char *payload;                  /* compact JSON or NULL */

        uint64_t retry_min_usec, retry_max_usec, retry_credentials_usec;
        uint64_t connect_timeout_usec, response_timeout_usec, total_timeout_usec;
        unsigned keepalive_sec;

        char *cache_path;
        char *identity_env_path;
};

/* Parses and validates path. On failure writes one human line naming
 * file:line, the key, what is wrong and what is valid, to *ret_error (when
 * non-NULL; free() it) and returns -EINVAL (or -ENOENT/-EACCES... for the file
 * itself). Does not touch the network. */
int config_load(const char *path, Config **ret, char **ret_error);
Config *config_free(Config *c);
static inline void config_freep(Config **c) { if (*c) config_free(*c); }

/* The symmetric device key (base64), derived from the group key when
 * configured so. Re-read from key_file each time, with the permission check.
 * A secret: dps_secret_free() it. */
int config_read_device_key(const Config *c, char **ret_key, char **ret_error);
/* The X.509 device key, parsed from memory that is wiped (no passphrase). */
int config_read_private_key(const Config *c, EVP_PKEY **ret, char **ret_error);

/* sha256 over what makes an assignment valid: scope, registration id,
 * attestation type and certificate identity, endpoint and port. */
int config_fingerprint(const Config *c, char **ret);
