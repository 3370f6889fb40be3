/* SPDX-License-Identifier: MIT */
/* dpsd-tls.h: the client TLS context dpsd builds for one connection to DPS */
#pragma once

#include <openssl/ssl.h>

#include "dpsd-conf.h"

/* TLS 1.2+, peer verification against the configured CA file or hashed CA
 * directory (looked up lazily: far less memory than loading a bundle), the
 * endpoint's host name (or IP) checked against the certificate, and for
 * x509 attestation the client certificate chain and key. On failure
 * *ret_error says what failed (free() it). */
int tls_context_new(const Config *c, SSL_CTX **ret, char **ret_error);

/* The first OpenSSL error on the thread's queue as text, then clears it. */
char *tls_error_string(void);
