/* SPDX-License-Identifier: MIT */
/* dps-util.h: encodings and crypto primitives shared inside libdps, dpsd and dps-sim (not installed) */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* SHA-256 output length, the size of every DPS HMAC. */
#define DPS_HMAC_SHA256_LEN 32

/* Standard base64 (RFC 4648 section 4, with '=' padding) of len bytes. */
int dps_base64_encode(const void *data, size_t len, char **ret);

/* Strict base64 decoding: the length must be a multiple of 4, only
 * A-Z a-z 0-9 + / are allowed, '=' only as one or two final padding
 * characters, and the unused bits before the padding must be zero (the
 * canonical encoding). No whitespace. -EINVAL otherwise. The result is
 * NUL-terminated for convenience (not counted in *ret_len); it may hold a
 * secret: free it with dps_memory_free(p, len). "" decodes to 0 bytes. */
int dps_base64_decode(const char *s, uint8_t **ret_data, size_t *ret_len);

/* Wipes len bytes with OPENSSL_cleanse() and frees p. Takes NULL. Returns NULL. */
void *dps_memory_free(void *p, size_t len);

/* True for the characters url-encoding leaves alone: A-Z a-z 0-9 - _ . ~ */
bool dps_char_is_unreserved(char c);

/* Percent-encodes every byte but A-Z a-z 0-9 - _ . ~ with upper-case hex
 * ("/" -> "%2F"), as the DPS SAS token and the CONNECT username want. */
int dps_url_encode(const char *s, char **ret);

/* Decodes len bytes of percent-encoding, accepting both hex cases (%2f and
 * %2F). '+' stays '+' (this is not form encoding). -EINVAL for a truncated
 * or non-hex escape or an escape that decodes to NUL. */
int dps_url_decode(const char *s, size_t len, char **ret);

/* HMAC-SHA256 of msg under key, into out[DPS_HMAC_SHA256_LEN]. -EIO if
 * OpenSSL fails. */
int dps_hmac_sha256(const void *key, size_t key_len, const void *msg, size_t msg_len,
                    uint8_t out[static DPS_HMAC_SHA256_LEN]);

/* Constant-time comparison of two NUL-terminated strings (for signatures):
 * true when equal. The time depends only on the lengths. */
bool dps_secret_equal(const char *a, const char *b);

/* Finds key in a query string "k1=v1&k2=v2" (no leading '?'; the first '='
 * of a pair separates key and value, a pair without '=' has an empty value)
 * and returns its url-decoded value. Keys compare exactly. 0 and *ret set
 * when found, -ENOENT when absent, -EINVAL for a bad escape in the value,
 * -EBADMSG if the key occurs more than once. */
int dps_query_get(const char *query, const char *key, char **ret);
