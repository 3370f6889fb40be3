/* SPDX-License-Identifier: MIT */
/* dpsd-cache.c: the durable provisioning cache (versioned JSON) and identity.env */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include <json-c/json.h>

#include "dps-macro.h"
#include "dpsd-cache.h"
#include "dpsd-util.h"

CacheData *cache_data_free(CacheData *d) {
        if (!d)
                return NULL;
        free(d->fingerprint);
        free(d->registration_id);
        free(d->assigned_hub);
        free(d->device_id);
        free(d->substatus);
        free(d->payload);
        free(d->tracking_id);
        free(d);
        return NULL;
}

static int get_str(json_object *o, const char *key, char **ret) {
        json_object *v;

        if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
                return 0;
        if (!json_object_is_type(v, json_type_string))
                return -EBADMSG;
        *ret = strdup(json_object_get_string(v));
        return *ret ? 0 : -ENOMEM;
}

static int get_u64(json_object *o, const char *key, uint64_t *ret) {
        json_object *v;

        if (!json_object_object_get_ex(o, key, &v))
                return 0;
        if (!json_object_is_type(v, json_type_int))
                return -EBADMSG;
        int64_t i = json_object_get_int64(v);
        if (i < 0)
                return -EBADMSG;
        *ret = (uint64_t) i;
        return 0;
}

int cache_load(const char *path, CacheData **ret) {
        _cleanup_(cache_data_freep) CacheData *d = NULL;
        _cleanup_free_ char *text = NULL;
        json_tokener *tok;
        json_object *o, *v;
        size_t len;
        uint64_t attempts = 0;
        int r;

        r = read_file_full(path, CACHE_SIZE_MAX, &text, &len);
        if (r < 0)
                return r;
        if (strlen(text) != len)
                return -EBADMSG;    /* embedded NUL */

        tok = json_tokener_new();
        if (!tok)
                return -ENOMEM;
        /* what it holds goes to D-Bus, which refuses strings that are not UTF-8 */
        json_tokener_set_flags(tok, JSON_TOKENER_VALIDATE_UTF8);
        o = json_tokener_parse_ex(tok, text, (int) len);
        /* One complete document and nothing but white space after it: a
         * truncated file does not parse, a file with junk appended does not
         * pass. */
        if (!o || json_tokener_get_error(tok) != json_tokener_success ||
            strspn(text + json_tokener_get_parse_end(tok), " \t\r\n") != len - json_tokener_get_parse_end(tok)) {
                json_object_put(o);
                json_tokener_free(tok);
                return -EBADMSG;
        }
        json_tokener_free(tok);

        if (!json_object_is_type(o, json_type_object) ||
            !json_object_object_get_ex(o, "version", &v) || !json_object_is_type(v, json_type_int)) {
                json_object_put(o);
                return -EBADMSG;
        }
        if (json_object_get_int64(v) != CACHE_VERSION) {
                json_object_put(o);
                return -EPROTONOSUPPORT;
        }

        d = calloc(1, sizeof *d);
        if (!d) {
                json_object_put(o);
                return -ENOMEM;
        }
        r = get_str(o, "fingerprint", &d->fingerprint);
        if (r >= 0) r = get_str(o, "registrationId", &d->registration_id);
        if (r >= 0) r = get_str(o, "assignedHub", &d->assigned_hub);
        if (r >= 0) r = get_str(o, "deviceId", &d->device_id);
        if (r >= 0) r = get_str(o, "substatus", &d->substatus);
        if (r >= 0) r = get_str(o, "trackingId", &d->tracking_id);
        if (r >= 0) r = get_u64(o, "provisionedUsec", &d->provisioned_usec);
        if (r >= 0) r = get_u64(o, "attempts", &attempts);
        if (r >= 0) r = get_u64(o, "nextAttemptUsec", &d->next_attempt_usec);
        if (r >= 0 && json_object_object_get_ex(o, "payload", &v) && !json_object_is_type(v, json_type_null)) {
                d->payload = strdup(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
                if (!d->payload)
                        r = -ENOMEM;
        }
        json_object_put(o);
        if (r < 0)
                return r;
        if (!d->fingerprint || attempts > UINT32_MAX ||
            (d->assigned_hub && !d->device_id))
                return -EBADMSG;
        d->attempts = (uint32_t) attempts;

        *ret = TAKE_PTR(d);
        return 0;
}

static int add_str(json_object *o, const char *key, const char *value) {
        if (!value)
                return 0;
        json_object *v = json_object_new_string(value);
        if (!v)
                return -ENOMEM;
        return json_object_object_add(o, key, v) < 0 ? -ENOMEM : 0;
}

static int add_u64(json_object *o, const char *key, uint64_t value) {
        json_object *v = json_object_new_int64((int64_t) value);
        if (!v)
                return -ENOMEM;
        return json_object_object_add(o, key, v) < 0 ? -ENOMEM : 0;
}

int cache_save(const char *path, const CacheData *d) {
        json_object *o;
        const char *text;
        int r;

        o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        r = add_u64(o, "version", CACHE_VERSION);
        if (r >= 0) r = add_str(o, "fingerprint", d->fingerprint);
        if (r >= 0) r = add_str(o, "registrationId", d->registration_id);
        if (r >= 0) r = add_str(o, "assignedHub", d->assigned_hub);
        if (r >= 0) r = add_str(o, "deviceId", d->device_id);
        if (r >= 0) r = add_str(o, "substatus", d->substatus);
        if (r >= 0) r = add_str(o, "trackingId", d->tracking_id);
        if (r >= 0 && d->payload) {
                json_object *p = json_tokener_parse(d->payload);
                if (!p && !streq(d->payload, "null"))
                        r = -EINVAL;
                else if (json_object_object_add(o, "payload", p) < 0)
                        r = -ENOMEM;
        }
        if (r >= 0) r = add_u64(o, "provisionedUsec", d->provisioned_usec);
        if (r >= 0) r = add_u64(o, "attempts", d->attempts);
        if (r >= 0) r = add_u64(o, "nextAttemptUsec", d->next_attempt_usec);
        if (r < 0) {
                json_object_put(o);
                return r;
        }
        text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED);
        _cleanup_free_ char *line = NULL;
        if (asprintf(&line, "%s\n", text) < 0)
                r = -ENOMEM;
        else
                r = write_file_atomic(path, line, strlen(line), 0600);
        json_object_put(o);
        return r;
}

int cache_set_aside(const char *path, char **ret_new) {
        _cleanup_free_ char *n = NULL;

        if (asprintf(&n, "%s.corrupt-%llu", path, (unsigned long long) now_usec(CLOCK_REALTIME)) < 0)
                return -ENOMEM;
        if (rename(path, n) < 0)
                return negative_errno();
        if (ret_new)
                *ret_new = TAKE_PTR(n);
        return 0;
}

/* Values come from the service (validated by the manager, and again here):
 * control characters are refused rather than escaped. The rest is quoted so
 * that a shell (". identity.env") and systemd's EnvironmentFile= read the
 * same bytes: single quotes keep everything literal in both; a value that
 * holds a single quote (IoT Hub device ids may) is double-quoted, with \
 * before " \ ` $, which both read as the character itself. */
static int env_quote(const char *v, char **ret) {
        size_t n = 0, extra = 0;
        char *r, *q;

        for (const unsigned char *p = (const unsigned char *) v; *p; p++, n++) {
                if (*p < 0x20 || *p == 0x7f)
                        return -EINVAL;
                if (strchr("\"\\`$", *p))
                        extra++;
        }
        if (!strchr(v, '\'')) {
                if (asprintf(&r, "'%s'", v) < 0)
                        return -ENOMEM;
                *ret = r;
                return 0;
        }
        r = q = malloc(n + extra + 3);
        if (!r)
                return -ENOMEM;
        *q++ = '"';
        for (const char *p = v; *p; p++) {
                if (strchr("\"\\`$", *p))
                        *q++ = '\\';
                *q++ = *p;
        }
        *q++ = '"';
        *q = 0;
        *ret = r;
        return 0;
}

int identity_env_format(const char *hub, const char *device_id, char **ret) {
        _cleanup_free_ char *h = NULL, *d = NULL;

        if (!hub || !device_id || !*hub || !*device_id)
                return -EINVAL;
        if (env_quote(hub, &h) < 0 || env_quote(device_id, &d) < 0)
                return -EINVAL;
        if (asprintf(ret, "DPS_ASSIGNED_HUB=%s\nDPS_DEVICE_ID=%s\n", h, d) < 0)
                return -ENOMEM;
        return 0;
}

int identity_env_write(const char *path, const char *hub, const char *device_id) {
        _cleanup_free_ char *text = NULL, *old = NULL;
        size_t old_len;
        struct stat st;
        int r;

        r = identity_env_format(hub, device_id, &text);
        if (r < 0)
                return r;
        /* A restart with the same identity leaves the file alone: no fsync
         * on the boot path, and consumers watching it see no change. */
        if (read_file_full(path, strlen(text) + 1, &old, &old_len) >= 0 && old_len == strlen(text) &&
            memcmp(old, text, old_len) == 0 && lstat(path, &st) >= 0 && S_ISREG(st.st_mode) &&
            (st.st_mode & 07777) == 0644)
                return 0;
        return write_file_atomic(path, text, strlen(text), 0644);
}
