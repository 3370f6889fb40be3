/* SPDX-License-Identifier: MIT */
/* sim-registry.c: dps-sim's registration records, by case-insensitive registration id, and their state file */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <json-c/json.h>

#include "dps-macro.h"
#include "sim-registry.h"

uint32_t sim_hash(const char *s) {
        uint32_t h = 2166136261u;       /* FNV-1a */
        for (; *s; s++)
                h = (h ^ (uint8_t) *s) * 16777619u;
        return h;
}

int sim_strset(char **p, const char *v) {
        char *n = NULL;
        if (v && !(n = strdup(v)))
                return -ENOMEM;
        free(*p);
        *p = n;
        return 0;
}

static void registration_free(SimRegistration *g) {
        free(g->key);
        free(g->registration_id);
        free(g->assigned_hub);
        free(g->device_id);
        free(g->substatus);
        free(g->created);
        free(g->updated);
        free(g->etag);
        free(g->payload);
        free(g->error_message);
        for (unsigned i = 0; i < SIM_OPS_KEPT; i++)
                free(g->ops[i].id);
        free(g);
}

int sim_registry_new(SimRegistry **ret) {
        SimRegistry *r = calloc(1, sizeof *r);
        if (!r)
                return -ENOMEM;
        *ret = r;
        return 0;
}

SimRegistry *sim_registry_free(SimRegistry *r) {
        if (!r)
                return NULL;
        for (unsigned i = 0; i < SIM_REGISTRY_BUCKETS; i++)
                for (SimRegistration *g = r->buckets[i], *n; g; g = n) {
                        n = g->next;
                        registration_free(g);
                }
        free(r);
        return NULL;
}

static char *lowercase(const char *s) {
        char *k = strdup(s);
        if (k)
                for (char *p = k; *p; p++)
                        *p = (char) tolower((unsigned char) *p);
        return k;
}

/* Registration ids are case-insensitive: one record per lower-cased id. */
SimRegistration *sim_registry_get(SimRegistry *reg, const char *registration_id, bool create) {
        _cleanup_free_ char *key = lowercase(registration_id);
        if (!key)
                return NULL;
        uint32_t b = sim_hash(key) % SIM_REGISTRY_BUCKETS;
        for (SimRegistration *g = reg->buckets[b]; g; g = g->next)
                if (streq(g->key, key))
                        return g;
        if (!create)
                return NULL;
        SimRegistration *g = calloc(1, sizeof *g);
        if (!g)
                return NULL;
        g->key = TAKE_PTR(key);
        g->registration_id = strdup(registration_id);
        if (!g->registration_id) {
                registration_free(g);
                return NULL;
        }
        g->status = DPS_STATUS_UNASSIGNED;
        g->next = reg->buckets[b];
        reg->buckets[b] = g;
        return g;
}

/* ---- state file ------------------------------------------------------------ */

static void add_str(json_object *o, const char *k, const char *v) {
        if (v)
                json_object_object_add(o, k, json_object_new_string(v));
}

int sim_registry_save(SimRegistry *reg, const char *path, const char *id_scope) {
        _cleanup_free_ char *tmp = NULL;
        json_object *root, *list;
        int fd, r = 0;

        root = json_object_new_object();
        list = json_object_new_array();
        if (!root || !list) {
                json_object_put(root);
                json_object_put(list);
                return -ENOMEM;
        }
        json_object_object_add(root, "version", json_object_new_int(1));
        json_object_object_add(root, "idScope", json_object_new_string(id_scope));
        json_object_object_add(root, "registrations", list);
        for (unsigned i = 0; i < SIM_REGISTRY_BUCKETS; i++)
                for (SimRegistration *g = reg->buckets[i]; g; g = g->next) {
                        if (g->status != DPS_STATUS_ASSIGNED)
                                continue;
                        json_object *o = json_object_new_object();
                        add_str(o, "registrationId", g->registration_id);
                        add_str(o, "assignedHub", g->assigned_hub);
                        add_str(o, "deviceId", g->device_id);
                        add_str(o, "substatus", g->substatus);
                        add_str(o, "createdDateTimeUtc", g->created);
                        add_str(o, "lastUpdatedDateTimeUtc", g->updated);
                        add_str(o, "etag", g->etag);
                        add_str(o, "payload", g->payload);
                        json_object_object_add(o, "generation", json_object_new_int64(g->generation));
                        json_object_array_add(list, o);
                }
        const char *s = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE);
        if (asprintf(&tmp, "%s.tmp.%d", path, (int) getpid()) < 0) {
                json_object_put(root);
                return -ENOMEM;
        }
        /* temp file in the same directory, fsync, rename */
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
                r = -errno;
        else {
                size_t n = strlen(s), off = 0;
                while (off < n) {
                        ssize_t k = write(fd, s + off, n - off);
                        if (k < 0) {
                                r = -errno;
                                break;
                        }
                        off += (size_t) k;
                }
                if (r == 0 && (write(fd, "\n", 1) != 1 || fsync(fd) < 0))
                        r = -errno;
                close(fd);
                if (r == 0 && rename(tmp, path) < 0)
                        r = -errno;
                if (r < 0)
                        unlink(tmp);
                else {
                        /* fsync the directory so the rename itself is durable */
                        _cleanup_free_ char *dir = strdup(path);
                        char *slash = dir ? strrchr(dir, '/') : NULL;
                        if (slash)
                                *(slash == dir ? slash + 1 : slash) = 0;
                        int dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                        if (dfd >= 0) {
                                (void) fsync(dfd);
                                close(dfd);
                        }
                }
        }
        json_object_put(root);
        return r;
}

static const char *get_str(json_object *o, const char *k) {
        json_object *v;
        if (json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_string))
                return json_object_get_string(v);
        return NULL;
}

int sim_registry_load(SimRegistry *reg, const char *path, const char *id_scope) {
        if (access(path, F_OK) < 0)
                return errno == ENOENT ? 0 : -errno;
        json_object *root = json_object_from_file(path);
        if (!root)
                return -EBADMSG;
        json_object *list, *v;
        int r = 0;
        if (!json_object_object_get_ex(root, "version", &v) || json_object_get_int(v) != 1 ||
            !json_object_object_get_ex(root, "registrations", &list) || !json_object_is_type(list, json_type_array)) {
                json_object_put(root);
                return -EBADMSG;
        }
        const char *scope = get_str(root, "idScope");
        if (!scope || strcasecmp(scope, id_scope) != 0) {
                /* Another DPS's state: not ours to serve. */
                json_object_put(root);
                return -ESTALE;
        }
        for (size_t i = 0; i < json_object_array_length(list); i++) {
                json_object *o = json_object_array_get_idx(list, i);
                const char *id = get_str(o, "registrationId");
                if (!id || !get_str(o, "assignedHub") || !get_str(o, "deviceId"))
                        continue;
                SimRegistration *g = sim_registry_get(reg, id, true);
                if (!g) {
                        r = -ENOMEM;
                        break;
                }
                if ((r = sim_strset(&g->assigned_hub, get_str(o, "assignedHub"))) < 0 ||
                    (r = sim_strset(&g->device_id, get_str(o, "deviceId"))) < 0 ||
                    (r = sim_strset(&g->substatus, get_str(o, "substatus"))) < 0 ||
                    (r = sim_strset(&g->created, get_str(o, "createdDateTimeUtc"))) < 0 ||
                    (r = sim_strset(&g->updated, get_str(o, "lastUpdatedDateTimeUtc"))) < 0 ||
                    (r = sim_strset(&g->etag, get_str(o, "etag"))) < 0 ||
                    (r = sim_strset(&g->payload, get_str(o, "payload"))) < 0)
                        break;
                if (json_object_object_get_ex(o, "generation", &v))
                        g->generation = (unsigned) json_object_get_int64(v);
                g->status = DPS_STATUS_ASSIGNED;
        }
        json_object_put(root);
        return r;
}
