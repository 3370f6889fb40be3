/* SPDX-License-Identifier: MIT */
/* dps-json.c: DPS request and response bodies (json-c stays inside this file) */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <json-c/json.h>

#include "dps-macro.h"

static const char *const status_table[_DPS_STATUS_MAX] = {
        [DPS_STATUS_UNKNOWN]    = "unknown",
        [DPS_STATUS_UNASSIGNED] = "unassigned",
        [DPS_STATUS_ASSIGNING]  = "assigning",
        [DPS_STATUS_ASSIGNED]   = "assigned",
        [DPS_STATUS_FAILED]     = "failed",
        [DPS_STATUS_DISABLED]   = "disabled",
};

const char *dps_status_to_string(DpsStatus s) {
        if ((unsigned) s >= _DPS_STATUS_MAX)
                return "unknown";
        return status_table[s];
}

DpsStatus dps_status_from_string(const char *s) {
        if (!s)
                return DPS_STATUS_UNKNOWN;
        /* The service writes lower case; be liberal in what we accept. */
        for (DpsStatus i = DPS_STATUS_UNASSIGNED; i < _DPS_STATUS_MAX; i++)
                if (strcasecmp(s, status_table[i]) == 0)
                        return i;
        return DPS_STATUS_UNKNOWN;
}

static void json_object_putp(json_object **p) {
        if (*p)
                json_object_put(*p);
}
#define _cleanup_json_ _cleanup_(json_object_putp)

static void json_tokener_freep(json_tokener **p) {
        if (*p)
                json_tokener_free(*p);
}

#define SERIALIZE_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

/* Parses exactly len bytes as one JSON value (trailing whitespace allowed).
 * Returns 1 with *ret (which may be NULL for the literal null), or -EBADMSG. */
static int json_parse_exact(const char *s, size_t len, json_object **ret) {
        _cleanup_(json_tokener_freep) json_tokener *tok = NULL;
        _cleanup_json_ json_object *o = NULL;
        enum json_tokener_error err;
        size_t end;

        if (len > INT32_MAX)
                return -EMSGSIZE;

        tok = json_tokener_new();
        if (!tok)
                return -ENOMEM;
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_ALLOW_TRAILING_CHARS |
                                    JSON_TOKENER_VALIDATE_UTF8);

        o = json_tokener_parse_ex(tok, s, (int) len);
        err = json_tokener_get_error(tok);
        if (err == json_tokener_continue) {
                /* A bare number at the very end needs a terminator: feed one. */
                o = json_tokener_parse_ex(tok, " ", 1);
                err = json_tokener_get_error(tok);
                if (err != json_tokener_success)
                        return -EBADMSG;
                end = len;
        } else if (err != json_tokener_success)
                return -EBADMSG;
        else
                end = json_tokener_get_parse_end(tok);

        for (size_t i = end; i < len; i++)
                if (!strchr(" \t\r\n", s[i]) || s[i] == '\0')
                        return -EBADMSG;

        *ret = TAKE_PTR(o);
        return 1;
}

int dps_body_register(const char *registration_id, const char *payload_json, char **ret_body) {
        _cleanup_json_ json_object *root = NULL, *payload = NULL;
        const char *s;
        char *body;
        int r;

        if (strempty(registration_id) || !ret_body)
                return -EINVAL;

        if (payload_json) {
                r = json_parse_exact(payload_json, strlen(payload_json), &payload);
                if (r == -EBADMSG || r == -EMSGSIZE)
                        return -EINVAL;
                if (r < 0)
                        return r;
        }

        root = json_object_new_object();
        if (!root)
                return -ENOMEM;
        /* json_object_object_add() takes NULL as JSON null: check first. */
        json_object *id = json_object_new_string(registration_id);
        if (!id)
                return -ENOMEM;
        if (json_object_object_add(root, "registrationId", id) < 0) {
                json_object_put(id);
                return -ENOMEM;
        }
        if (payload_json &&
            json_object_object_add(root, "payload", TAKE_PTR(payload)) < 0) /* NULL is JSON null */
                return -ENOMEM;

        s = json_object_to_json_string_ext(root, SERIALIZE_FLAGS);
        if (!s)
                return -ENOMEM;
        body = strdup(s);
        if (!body)
                return -ENOMEM;
        *ret_body = body;
        return 0;
}

/* Copies a string member; a member of another type counts as absent. */
static int get_string(json_object *o, const char *key, char **ret) {
        json_object *v;
        char *s;

        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
                return 0;
        s = strdup(json_object_get_string(v));
        if (!s)
                return -ENOMEM;
        free(*ret);
        *ret = s;
        return 0;
}

static void get_int64(json_object *o, const char *key, int64_t *ret) {
        json_object *v;

        if (json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_int))
                *ret = json_object_get_int64(v);
}

static DpsStatus get_status(json_object *o) {
        json_object *v;

        if (!json_object_object_get_ex(o, "status", &v) || !json_object_is_type(v, json_type_string))
                return DPS_STATUS_UNKNOWN;
        return dps_status_from_string(json_object_get_string(v));
}

static int parse_registration_state(json_object *o, DpsRegistrationState *st) {
        json_object *v;
        int r;

        st->status = get_status(o);
        get_int64(o, "errorCode", &st->error_code);

        if ((r = get_string(o, "registrationId", &st->registration_id)) < 0 ||
            (r = get_string(o, "createdDateTimeUtc", &st->created_utc)) < 0 ||
            (r = get_string(o, "assignedHub", &st->assigned_hub)) < 0 ||
            (r = get_string(o, "deviceId", &st->device_id)) < 0 ||
            (r = get_string(o, "substatus", &st->substatus)) < 0 ||
            (r = get_string(o, "errorMessage", &st->error_message)) < 0 ||
            (r = get_string(o, "lastUpdatedDateTimeUtc", &st->last_updated_utc)) < 0 ||
            (r = get_string(o, "etag", &st->etag)) < 0)
                return r;

        /* payload: any JSON; JSON null counts as absent. */
        if (json_object_object_get_ex(o, "payload", &v) && v) {
                const char *s = json_object_to_json_string_ext(v, SERIALIZE_FLAGS);

                if (!s)
                        return -ENOMEM;
                st->payload = strdup(s);
                if (!st->payload)
                        return -ENOMEM;
        }
        return 0;
}

DpsResponse *dps_response_free(DpsResponse *r) {
        if (!r)
                return NULL;
        free(r->operation_id);
        free(r->state.registration_id);
        free(r->state.created_utc);
        free(r->state.assigned_hub);
        free(r->state.device_id);
        free(r->state.substatus);
        free(r->state.error_message);
        free(r->state.last_updated_utc);
        free(r->state.etag);
        free(r->state.payload);
        free(r->tracking_id);
        free(r->message);
        free(r->timestamp_utc);
        free(r);
        return NULL;
}

int dps_response_parse(const char *body, size_t len, DpsResponse **ret) {
        _cleanup_(dps_response_freep) DpsResponse *resp = NULL;
        _cleanup_json_ json_object *root = NULL;
        json_object *v;
        int r;

        if ((!body && len > 0) || !ret)
                return -EINVAL;
        /* "max message: 96 KB" */
        if (len > DPS_MAX_MESSAGE_SIZE)
                return -EMSGSIZE;

        resp = calloc(1, sizeof(*resp));
        if (!resp)
                return -ENOMEM;

        if (len == 0) {
                *ret = TAKE_PTR(resp);
                return 0;
        }

        r = json_parse_exact(body, len, &root);
        if (r < 0)
                return r;
        if (!json_object_is_type(root, json_type_object))
                return -EBADMSG;

        resp->status = get_status(root);
        get_int64(root, "errorCode", &resp->error_code);
        if ((r = get_string(root, "operationId", &resp->operation_id)) < 0 ||
            (r = get_string(root, "trackingId", &resp->tracking_id)) < 0 ||
            (r = get_string(root, "message", &resp->message)) < 0 ||
            (r = get_string(root, "timestampUtc", &resp->timestamp_utc)) < 0)
                return r;

        if (json_object_object_get_ex(root, "registrationState", &v) &&
            json_object_is_type(v, json_type_object)) {
                resp->has_registration_state = true;
                r = parse_registration_state(v, &resp->state);
                if (r < 0)
                        return r;
        }

        *ret = TAKE_PTR(resp);
        return 0;
}
