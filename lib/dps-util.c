/* SPDX-License-Identifier: MIT */
/* dps-util.c: base64, url-encoding, HMAC-SHA256 and secret wiping */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "dps-macro.h"
#include "dps-util.h"

char *dps_secret_free(char *secret) {
        if (secret) {
                OPENSSL_cleanse(secret, strlen(secret));
                free(secret);
        }
        return NULL;
}

void *dps_memory_free(void *p, size_t len) {
        if (p) {
                OPENSSL_cleanse(p, len);
                free(p);
        }
        return NULL;
}

static const char b64_alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int dps_base64_encode(const void *data, size_t len, char **ret) {
        const uint8_t *in = data;
        char *out, *p;

        if (!ret || (!data && len > 0))
                return -EINVAL;
        if (len > (SIZE_MAX - 1) / 4 * 3 - 3)
                return -ENOMEM;

        out = malloc((len + 2) / 3 * 4 + 1);
        if (!out)
                return -ENOMEM;

        p = out;
        for (size_t i = 0; i < len; i += 3) {
                uint32_t v = (uint32_t) in[i] << 16;
                size_t n = len - i;

                if (n > 1)
                        v |= (uint32_t) in[i + 1] << 8;
                if (n > 2)
                        v |= in[i + 2];
                *p++ = b64_alphabet[(v >> 18) & 0x3f];
                *p++ = b64_alphabet[(v >> 12) & 0x3f];
                *p++ = n > 1 ? b64_alphabet[(v >> 6) & 0x3f] : '=';
                *p++ = n > 2 ? b64_alphabet[v & 0x3f] : '=';
        }
        *p = '\0';
        *ret = out;
        return 0;
}

static int b64_value(char c) {
        if (c >= 'A' && c <= 'Z')
                return c - 'A';
        if (c >= 'a' && c <= 'z')
                return c - 'a' + 26;
        if (c >= '0' && c <= '9')
                return c - '0' + 52;
        if (c == '+')
                return 62;
        if (c == '/')
                return 63;
        return -1;
}

int dps_base64_decode(const char *s, uint8_t **ret_data, size_t *ret_len) {
        size_t len, pad = 0, n = 0;
        uint8_t *out;

        if (!s || !ret_data || !ret_len)
                return -EINVAL;

        len = strlen(s);
        if (len % 4 != 0)
                return -EINVAL;
        if (len > 0 && s[len - 1] == '=') {
                pad++;
                if (s[len - 2] == '=')
                        pad++;
        }

        out = malloc(len / 4 * 3 + 1);
        if (!out)
                return -ENOMEM;

        for (size_t i = 0; i < len; i += 4) {
                bool last = i + 4 == len;
                size_t data_chars = last ? 4 - pad : 4;
                uint32_t v = 0;

                for (size_t j = 0; j < 4; j++) {
                        int d;

                        if (j >= data_chars) {
                                /* s[i + j] is '=' here by construction of pad */
                                v <<= 6;
                                continue;
                        }
                        d = b64_value(s[i + j]);
                        if (d < 0) /* includes a '=' that is not final padding */
                                goto fail;
                        v = (v << 6) | (uint32_t) d;
                }

                /* Canonical form: the bits the padding hides must be zero. */
                if ((data_chars == 2 && (v & 0xffff) != 0) ||
                    (data_chars == 3 && (v & 0xff) != 0))
                        goto fail;

                out[n++] = (uint8_t) (v >> 16);
                if (data_chars > 2)
                        out[n++] = (uint8_t) (v >> 8);
                if (data_chars > 3)
                        out[n++] = (uint8_t) v;
        }
        out[n] = 0;

        *ret_data = out;
        *ret_len = n;
        return 0;

fail:
        dps_memory_free(out, len / 4 * 3 + 1);
        return -EINVAL;
}

bool dps_char_is_unreserved(char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
               c == '-' || c == '_' || c == '.' || c == '~';
}

int dps_url_encode(const char *s, char **ret) {
        static const char hex[] = "0123456789ABCDEF";
        size_t len;
        char *out, *p;

        if (!s || !ret)
                return -EINVAL;

        len = strlen(s);
        if (len > (SIZE_MAX - 1) / 3)
                return -ENOMEM;
        out = malloc(len * 3 + 1);
        if (!out)
                return -ENOMEM;

        p = out;
        for (const char *c = s; *c; c++) {
                if (dps_char_is_unreserved(*c))
                        *p++ = *c;
                else {
                        *p++ = '%';
                        *p++ = hex[(uint8_t) *c >> 4];
                        *p++ = hex[(uint8_t) *c & 0xf];
                }
        }
        *p = '\0';
        *ret = out;
        return 0;
}

static int hex_value(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

int dps_url_decode(const char *s, size_t len, char **ret) {
        char *out, *p;

        if ((!s && len > 0) || !ret)
                return -EINVAL;
        if (len == SIZE_MAX)
                return -ENOMEM;

        out = malloc(len + 1);
        if (!out)
                return -ENOMEM;

        p = out;
        for (size_t i = 0; i < len; i++) {
                if (s[i] == '\0')
                        goto fail;
                if (s[i] != '%') {
                        *p++ = s[i];
                        continue;
                }
                if (len - i < 3)
                        goto fail;
                int hi = hex_value(s[i + 1]), lo = hex_value(s[i + 2]);
                if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                        goto fail;
                *p++ = (char) (hi << 4 | lo);
                i += 2;
        }
        *p = '\0';
        *ret = out;
        return 0;

fail:
        dps_memory_free(out, len + 1);
        return -EINVAL;
}

int dps_hmac_sha256(const void *key, size_t key_len, const void *msg, size_t msg_len,
                    uint8_t out[static DPS_HMAC_SHA256_LEN]) {
        unsigned out_len = 0;

        if ((!key && key_len > 0) || (!msg && msg_len > 0) || key_len > INT32_MAX)
                return -EINVAL;

        /* HMAC() with a NULL key pointer would mean "no key": pass a valid
         * pointer even for an empty one. */
        if (!HMAC(EVP_sha256(), key_len > 0 ? key : "", (int) key_len,
                  msg_len > 0 ? msg : (const void *) "", msg_len, out, &out_len) ||
            out_len != DPS_HMAC_SHA256_LEN)
                return -EIO;
        return 0;
}

bool dps_secret_equal(const char *a, const char *b) {
        size_t la, lb;

        if (!a || !b)
                return false;
        la = strlen(a);
        lb = strlen(b);
        if (la != lb)
                return false;
        return CRYPTO_memcmp(a, b, la) == 0;
}

int dps_query_get(const char *query, const char *key, char **ret) {
        size_t key_len;
        const char *found = NULL;
        size_t found_len = 0;

        if (!query || !key || !ret)
                return -EINVAL;
        key_len = strlen(key);

        for (const char *p = query; ; ) {
                const char *amp = strchrnul(p, '&');
                const char *eq = memchr(p, '=', (size_t) (amp - p));
                size_t klen = eq ? (size_t) (eq - p) : (size_t) (amp - p);

                if (klen == key_len && memcmp(p, key, key_len) == 0) {
                        if (found)
                                return -EBADMSG;
                        found = eq ? eq + 1 : amp;
                        found_len = (size_t) (amp - found);
                }
                if (*amp == '\0')
                        break;
                p = amp + 1;
        }

        if (!found)
                return -ENOENT;
        return dps_url_decode(found, found_len, ret);
}
