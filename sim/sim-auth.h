/* SPDX-License-Identifier: MIT */
/* sim-auth.h: dps-sim's credential checks: CONNECT username, SAS tokens, X.509 client certificates */
#pragma once

#include <stdint.h>

#include <openssl/x509.h>

typedef struct SimUsername {
        char *id_scope;
        char *registration_id;
        char *api_version;
} SimUsername;

/* Parses "{idScope}/registrations/{registrationId}/api-version={v}[&k=v...]":
 * any api-version, unknown '&' parameters ignored. -EBADMSG otherwise. */
int sim_auth_parse_username(const char *username, SimUsername *ret);
void sim_username_done(SimUsername *u);

/* Verifies a SAS token: fields in any order, skn optional; the HMAC is
 * computed over sr exactly as received + "\n" + se, with each key of keys_b64
 * (NULL-terminated) in turn; sr, once url-decoded (either hex case, or not
 * encoded at all), must equal id_scope/registrations/registration_id
 * case-insensitively; se must be in the future. Returns 0 when valid,
 * -EBADMSG for a malformed token, -EKEYEXPIRED, -EPERM for a resource that
 * names another scope or device, -EACCES for a signature that matches no key.
 * *ret_reason (optional) is a static sentence. */
int sim_auth_check_sas(const char *token, const char *id_scope, const char *registration_id,
                       const char *const *keys_b64, uint64_t now_sec, const char **ret_reason);

/* Returns the subject CN of a certificate (malloc'd), -ENOENT if none. */
int sim_auth_x509_cn(X509 *cert, char **ret_cn);

/* Verifies a client certificate for registration_id: the subject CN must equal
 * it; then either leaf is exactly enrolled (individual enrollment) or it
 * chains to ca through untrusted (group enrollment). -EACCES otherwise,
 * *ret_reason (optional) says why. */
int sim_auth_check_x509(X509 *leaf, STACK_OF(X509) *untrusted, X509 *enrolled, X509 *ca,
                        const char *registration_id, const char **ret_reason);
