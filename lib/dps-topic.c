/* SPDX-License-Identifier: MIT */
/* dps-topic.c: DPS MQTT topics and the CONNECT username */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dps-macro.h"
#include "dps-util.h"

#define RESPONSE_PREFIX "$dps/registrations/res/"
/* The largest retry-after accepted: a week. Anything larger is a broken
 * server or a corrupted topic, not a schedule. */
#define RETRY_AFTER_MAX (86400 * 7)

/* $rid is ours to choose: the request side only sends characters that need
 * no escaping anywhere in a topic, so the echo can be matched byte for byte. */
static bool rid_is_valid(const char *rid) {
        if (strempty(rid))
                return false;
        for (const char *c = rid; *c; c++)
                if (!dps_char_is_unreserved(*c))
                        return false;
        return true;
}

int dps_topic_register(const char *rid, char **ret_topic) {
        char *t;

        if (!rid_is_valid(rid) || !ret_topic)
                return -EINVAL;
        if (asprintf(&t, "$dps/registrations/PUT/iotdps-register/?$rid=%s", rid) < 0)
                return -ENOMEM;
        *ret_topic = t;
        return 0;
}

int dps_topic_poll(const char *rid, const char *operation_id, char **ret_topic) {
        _cleanup_free_ char *op = NULL;
        char *t;
        int r;

        if (!rid_is_valid(rid) || strempty(operation_id) || !ret_topic)
                return -EINVAL;

        /* Real operation ids need no escaping; a hostile one must not be able
         * to add properties or topic levels. */
        r = dps_url_encode(operation_id, &op);
        if (r < 0)
                return r;
        if (asprintf(&t, "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=%s&operationId=%s",
                     rid, op) < 0)
                return -ENOMEM;
        *ret_topic = t;
        return 0;
}

void dps_response_topic_done(DpsResponseTopic *t) {
        if (!t)
                return;
        free(t->rid);
        t->rid = NULL;
}

static int parse_retry_after(const char *s, int64_t *ret) {
        int64_t v = 0;

        if (!*s)
                return -ERANGE;
        for (const char *c = s; *c; c++) {
                if (*c < '0' || *c > '9')
                        return -ERANGE;
                v = v * 10 + (*c - '0');
                if (v > RETRY_AFTER_MAX)
                        return -ERANGE;
        }
        *ret = v;
        return 0;
}

int dps_topic_parse_response(const char *topic, DpsResponseTopic *ret) {
        _cleanup_free_ char *rid = NULL, *retry = NULL;
        const char *p;
        int64_t retry_after = -1;
        int status, r;

        if (!topic || !ret)
                return -EINVAL;

        /* "$dps/registrations/res/{status}/?$rid={rid}[&retry-after={seconds}]" */
        if (strncmp(topic, RESPONSE_PREFIX, strlen(RESPONSE_PREFIX)) != 0)
                return -EBADMSG;
        p = topic + strlen(RESPONSE_PREFIX);

        for (int i = 0; i < 3; i++)
                if (p[i] < '0' || p[i] > '9')
                        return -EBADMSG;
        status = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
        if (status < 100)
                return -EBADMSG;
        p += 3;

        if (p[0] != '/' || p[1] != '?')
                return -EBADMSG;
        p += 2;

        r = dps_query_get(p, "$rid", &rid);
        if (r == -ENOENT || r == -EINVAL)
                return -EBADMSG;
        if (r < 0)
                return r;
        if (!*rid)
                return -EBADMSG;

        r = dps_query_get(p, "retry-after", &retry);
        if (r >= 0) {
                r = parse_retry_after(retry, &retry_after);
                if (r < 0)
                        return r;
        } else if (r == -EINVAL || r == -EBADMSG)
                return -ERANGE;
        else if (r != -ENOENT)
                return r;

        *ret = (DpsResponseTopic) {
                .status = status,
                .rid = TAKE_PTR(rid),
                .retry_after = retry_after,
        };
        return 0;
}

int dps_username(const char *id_scope, const char *registration_id, const char *api_version,
                 const char *client_version, char **ret_username) {
        _cleanup_free_ char *cv = NULL;
        char *u;
        int r;

        if (strempty(id_scope) || strempty(registration_id) || !ret_username)
                return -EINVAL;
        if (api_version && !*api_version)
                return -EINVAL;

        if (client_version) {
                r = dps_url_encode(client_version, &cv);
                if (r < 0)
                        return r;
        }

        if (asprintf(&u, "%s/registrations/%s/api-version=%s%s%s",
                     id_scope, registration_id, api_version ?: DPS_API_VERSION,
                     cv ? "&ClientVersion=" : "", cv ?: "") < 0)
                return -ENOMEM;
        *ret_username = u;
        return 0;
}
