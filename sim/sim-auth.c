/* SPDX-License-Identifier: MIT */
/* sim-auth.c: dps-sim's credential checks: CONNECT username, SAS tokens, X.509 client certificates */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/x509_vfy.h>

#include "dps-macro.h"
#include "dps-util.h"
#include "sim-auth.h"

void sim_username_done(SimUsername *u) {
        free(u->id_scope);
        free(u->registration_id);
        free(u->api_version);
        *u = (SimUsername) {};
}

int sim_auth_parse_username(const char *username, SimUsername *ret) {
        _cleanup_(sim_username_done) SimUsername u = {};
        const char *slash = strchr(username, '/');
        static const char mid[] = "/registrations/";

        if (!slash || slash == username || strncmp(slash, mid, strlen(mid)) != 0)
                return -EBADMSG;
        const char *id = slash + strlen(mid);
        const char *end = strchr(id, '/');
        if (!end || end == id)
                return -EBADMSG;
        const char *params = end + 1;
        static const char av[] = "api-version=";
        if (strncmp(params, av, strlen(av)) != 0)
                return -EBADMSG;
        const char *v = params + strlen(av);
        size_t vl = strcspn(v, "&");
        if (vl == 0)
                return -EBADMSG;

        u.id_scope = strndup(username, slash - username);
        u.registration_id = strndup(id, end - id);
        u.api_version = strndup(v, vl);
        if (!u.id_scope || !u.registration_id || !u.api_version)
                return -ENOMEM;
        *ret = u;
        u = (SimUsername) {};
        return 0;
}

typedef struct SasFields {
        const char *sr, *sig, *se, *skn;
        size_t sr_len, sig_len, se_len, skn_len;
} SasFields;

static int sas_split(const char *token, SasFields *f) {
        static const char prefix[] = "SharedAccessSignature ";
        if (strncasecmp(token, prefix, strlen(prefix)) != 0)
                return -EBADMSG;
        const char *p = token + strlen(prefix);
        *f = (SasFields) {};
        while (*p) {
                size_t n = strcspn(p, "&");
                const char *eq = memchr(p, '=', n);
                if (!eq)
                        return -EBADMSG;
                size_t kl = eq - p, vl = n - kl - 1;
                const char *v = eq + 1;
                const char **slot = NULL;
                size_t *len = NULL;
                if (kl == 2 && memcmp(p, "sr", 2) == 0)
                        slot = &f->sr, len = &f->sr_len;
                else if (kl == 3 && memcmp(p, "sig", 3) == 0)
                        slot = &f->sig, len = &f->sig_len;
                else if (kl == 2 && memcmp(p, "se", 2) == 0)
                        slot = &f->se, len = &f->se_len;
                else if (kl == 3 && memcmp(p, "skn", 3) == 0)
                        slot = &f->skn, len = &f->skn_len;
                if (slot) {
                        if (*slot)              /* a field twice */
                                return -EBADMSG;
                        *slot = v;
                        *len = vl;
                }
                p += n;
                if (*p == '&')
                        p++;
        }
        if (!f->sr || !f->sig || !f->se || f->sr_len == 0 || f->sig_len == 0 || f->se_len == 0)
                return -EBADMSG;
        return 0;
}

int sim_auth_check_sas(const char *token, const char *id_scope, const char *registration_id,
                       const char *const *keys_b64, uint64_t now_sec, const char **ret_reason) {
        _cleanup_free_ char *resource = NULL, *expected = NULL, *message = NULL;
        _cleanup_secret_ char *sig = NULL;
        SasFields f;
        const char *reason = NULL;
        int r;

#define REJECT(err, why) do { reason = (why); r = (err); goto finish; } while (0)
        if (sas_split(token, &f) < 0)
                REJECT(-EBADMSG, "the password is not a SAS token with sr, sig and se");

        uint64_t se = 0;
        for (size_t i = 0; i < f.se_len; i++) {
                if (f.se[i] < '0' || f.se[i] > '9' || se > UINT64_MAX / 10 - 10)
                        REJECT(-EBADMSG, "se is not a number of seconds");
                se = se * 10 + (uint64_t) (f.se[i] - '0');
        }

        if (dps_url_decode(f.sr, f.sr_len, &resource) < 0)
                REJECT(-EBADMSG, "sr holds a bad %-escape");
        if (asprintf(&expected, "%s/registrations/%s", id_scope, registration_id) < 0)
                return -ENOMEM;
        if (strcasecmp(resource, expected) != 0)
                REJECT(-EPERM, "sr names another id scope or registration id");
        if (se <= now_sec)
                REJECT(-EKEYEXPIRED, "the SAS token has expired (se is in the past)");

        if (dps_url_decode(f.sig, f.sig_len, &sig) < 0)
                REJECT(-EBADMSG, "sig holds a bad %-escape");

        /* The HMAC covers sr exactly as received, not re-encoded. */
        if (asprintf(&message, "%.*s\n%.*s", (int) f.sr_len, f.sr, (int) f.se_len, f.se) < 0)
                return -ENOMEM;
        r = -EACCES;
        reason = "the signature matches no key of the enrollment";
        for (size_t i = 0; keys_b64 && keys_b64[i]; i++) {
                _cleanup_secret_ char *want = NULL;
                if (dps_sas_hmac(keys_b64[i], message, &want) < 0)
                        continue;
                if (dps_secret_equal(want, sig)) {
                        r = 0;
                        reason = NULL;
                        break;
                }
        }
#undef REJECT
finish:
        if (ret_reason)
                *ret_reason = reason;
        return r;
}

int sim_auth_x509_cn(X509 *cert, char **ret_cn) {
        X509_NAME *name = X509_get_subject_name(cert);
        int i = name ? X509_NAME_get_index_by_NID(name, NID_commonName, -1) : -1;
        if (i < 0)
                return -ENOENT;
        ASN1_STRING *d = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
        unsigned char *utf8 = NULL;
        int n = ASN1_STRING_to_UTF8(&utf8, d);
        if (n < 0)
                return -EBADMSG;
        char *s = strndup((char *) utf8, n);
        OPENSSL_free(utf8);
        if (!s)
                return -ENOMEM;
        if (strlen(s) != (size_t) n) {  /* embedded NUL */
                free(s);
                return -EBADMSG;
        }
        *ret_cn = s;
        return 0;
}

static void x509_store_freep(X509_STORE **s) { X509_STORE_free(*s); }
static void x509_store_ctx_freep(X509_STORE_CTX **c) { X509_STORE_CTX_free(*c); }

int sim_auth_check_x509(X509 *leaf, STACK_OF(X509) *untrusted, X509 *enrolled, X509 *ca,
                        const char *registration_id, const char **ret_reason) {
        _cleanup_free_ char *cn = NULL;
        const char *reason = NULL;
        int r = -EACCES;

        if (!leaf) {
                reason = "no client certificate and no password";
                goto finish;
        }
        if (sim_auth_x509_cn(leaf, &cn) < 0 || !streq(cn, registration_id)) {
                reason = "the certificate's subject CN is not the registration id";
                goto finish;
        }
        if (enrolled) {
                if (X509_cmp(leaf, enrolled) != 0) {
                        reason = "the certificate is not the enrolled one";
                        goto finish;
                }
                if (X509_cmp_current_time(X509_get0_notBefore(leaf)) >= 0 ||
                    X509_cmp_current_time(X509_get0_notAfter(leaf)) <= 0) {
                        reason = "the certificate is not valid now";
                        goto finish;
                }
                r = 0;
        } else if (ca) {
                _cleanup_(x509_store_freep) X509_STORE *store = X509_STORE_new();
                _cleanup_(x509_store_ctx_freep) X509_STORE_CTX *ctx = X509_STORE_CTX_new();
                if (!store || !ctx || X509_STORE_add_cert(store, ca) != 1 ||
                    X509_STORE_CTX_init(ctx, store, leaf, untrusted) != 1)
                        return -ENOMEM;
                if (X509_verify_cert(ctx) != 1) {
                        reason = "the certificate does not chain to the enrollment group's CA";
                        goto finish;
                }
                r = 0;
        } else
                reason = "the enrollment has no certificate or CA";
finish:
        if (ret_reason)
                *ret_reason = reason;
        return r;
}
