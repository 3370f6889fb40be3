/* SPDX-License-Identifier: MIT */
/* dps-sas.c: DPS shared access signatures and group key derivation */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

#include "dps-macro.h"
#include "dps-util.h"


int dps_sas_hmac(const char *key_b64, const char *message, char **ret_sig_b64) {
        uint8_t *key = NULL, mac[DPS_HMAC_SHA256_LEN];
        size_t key_len = 0;
        int r;

        if (!key_b64 || !message || !ret_sig_b64)
                return -EINVAL;

        r = dps_base64_decode(key_b64, &key, &key_len);
        if (r < 0)
                return r;
        if (key_len == 0) {
                dps_memory_free(key, key_len + 1);
                return -EINVAL;
        }

        r = dps_hmac_sha256(key, key_len, message, strlen(message), mac);
        dps_memory_free(key, key_len + 1);
        if (r >= 0)
                r = dps_base64_encode(mac, sizeof(mac), ret_sig_b64);
        OPENSSL_cleanse(mac, sizeof(mac));
        return r;
}

int dps_sas_derive_key(const char *group_key_b64, const char *registration_id,
                       char **ret_device_key_b64) {
        if (!group_key_b64 || strempty(registration_id) || !ret_device_key_b64)
                return -EINVAL;

        /* deviceKey = base64(HMAC-SHA256(base64-decode(groupKey), registrationId)) */
        return dps_sas_hmac(group_key_b64, registration_id, ret_device_key_b64);
}

int dps_sas_sign(const char *id_scope, const char *registration_id, const char *key_b64,
                 uint64_t expiry, char **ret_token) {
        _cleanup_free_ char *resource = NULL, *sr = NULL, *message = NULL;
        _cleanup_secret_ char *sig = NULL, *sig_enc = NULL;
        char *token;
        int r;

        if (strempty(id_scope) || strempty(registration_id) || !key_b64 || !ret_token)
                return -EINVAL;

        /* sr = url-encode(idScope + "/registrations/" + registrationId) */
        if (asprintf(&resource, "%s/registrations/%s", id_scope, registration_id) < 0)
                return -ENOMEM;
        r = dps_url_encode(resource, &sr);
        if (r < 0)
                return r;

        /* sig = base64(HMAC-SHA256(base64-decode(key), sr + "\n" + se)) */
        if (asprintf(&message, "%s\n%" PRIu64, sr, expiry) < 0)
                return -ENOMEM;
        r = dps_sas_hmac(key_b64, message, &sig);
        if (r < 0)
                return r;
        r = dps_url_encode(sig, &sig_enc);
        if (r < 0)
                return r;

        if (asprintf(&token, "SharedAccessSignature sr=%s&sig=%s&se=%" PRIu64 "&skn=registration",
                     sr, sig_enc, expiry) < 0)
                return -ENOMEM;

        *ret_token = token;
        return 0;
}
