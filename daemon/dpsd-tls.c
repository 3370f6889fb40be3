/* SPDX-License-Identifier: MIT */
/* dpsd-tls.c: the client TLS context dpsd builds for one connection to DPS */
#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "dps-macro.h"
#include "dpsd-tls.h"

char *tls_error_string(void) {
        unsigned long e = ERR_get_error();
        char buf[256];

        ERR_clear_error();
        if (e == 0)
                return strdup("unknown TLS error");
        ERR_error_string_n(e, buf, sizeof buf);
        return strdup(buf);
}

static int fail(SSL_CTX *ctx, char **ret_error, const char *what, const char *file) {
        _cleanup_free_ char *e = tls_error_string();

        if (asprintf(ret_error, "%s%s%s: %s", what, file ? " " : "", file ?: "", e ?: "?") < 0)
                *ret_error = NULL;
        SSL_CTX_free(ctx);
        return -EPROTO;
}

int tls_context_new(const Config *c, SSL_CTX **ret, char **ret_error) {
        unsigned char addr[16];
        X509_VERIFY_PARAM *param;
        SSL_CTX *ctx;

        *ret_error = NULL;
        ERR_clear_error();
        ctx = SSL_CTX_new(TLS_client_method());
        if (!ctx)
                return fail(NULL, ret_error, "Cannot create a TLS context", NULL);

        /* "TLS 1.2 or newer, server certificate verified" */
        if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1)
                return fail(ctx, ret_error, "Cannot require TLS 1.2", NULL);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        /* Buffers are released between records: a provisioning session is
         * short and memory on the device is not. */
        SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);

        if (SSL_CTX_load_verify_locations(ctx, c->ca_file, c->ca_path) != 1)
                return fail(ctx, ret_error, "Cannot load the CA certificates from", c->ca_file ?: c->ca_path);

        param = SSL_CTX_get0_param(ctx);
        if (inet_pton(AF_INET, c->endpoint, addr) == 1 || inet_pton(AF_INET6, c->endpoint, addr) == 1) {
                if (X509_VERIFY_PARAM_set1_ip_asc(param, c->endpoint) != 1)
                        return fail(ctx, ret_error, "Cannot set the IP address to verify", c->endpoint);
        } else {
                X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
                if (X509_VERIFY_PARAM_set1_host(param, c->endpoint, 0) != 1)
                        return fail(ctx, ret_error, "Cannot set the host name to verify", c->endpoint);
        }

        if (c->attestation == ATTESTATION_X509) {
                if (SSL_CTX_use_certificate_chain_file(ctx, c->certificate_file) != 1)
                        return fail(ctx, ret_error, "Cannot load the device certificate", c->certificate_file);
                EVP_PKEY *key = NULL;
                _cleanup_free_ char *why = NULL;
                if (config_read_private_key(c, &key, &why) < 0)
                        return fail(ctx, ret_error, "Cannot load the device key", c->key_file);
                int ok = SSL_CTX_use_PrivateKey(ctx, key);
                EVP_PKEY_free(key);     /* the context keeps its own reference */
                if (ok != 1)
                        return fail(ctx, ret_error, "Cannot load the device key", c->key_file);
                if (SSL_CTX_check_private_key(ctx) != 1)
                        return fail(ctx, ret_error, "The device key does not match the certificate", c->certificate_file);
        }

        *ret = ctx;
        return 0;
}
