/* SPDX-License-Identifier: MIT */
/* dpsd-conf.c: dpsd's configuration file (/etc/dps.conf, libconfig) */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>
#include <libconfig.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "config.h"
#include "dps-macro.h"
#include "dps-util.h"
#include "dpsd-conf.h"
#include "dpsd-util.h"

#define DEFAULT_CA_PATH "/etc/ssl/certs"
#define KEY_FILE_MAX 16384
#define PAYLOAD_MAX DPS_MAX_MESSAGE_SIZE

static const char *const attestation_table[_ATTESTATION_MAX] = {
        [ATTESTATION_SYMMETRIC_KEY] = "symmetric-key",
        [ATTESTATION_X509] = "x509",
};

const char *attestation_type_to_string(AttestationType t) {
        if ((unsigned) t >= _ATTESTATION_MAX)
                return NULL;
        return attestation_table[t];
}

Config *config_free(Config *c) {
        if (!c)
                return NULL;
        free(c->path);
        free(c->endpoint);
        free(c->transport);
        dps_proxy_done(&c->proxy);
        free(c->id_scope);
        free(c->registration_id);
        free(c->registration_id_source);
        free(c->key_file);
        free(c->certificate_file);
        free(c->certificate_sha256);
        free(c->ca_file);
        free(c->ca_path);
        free(c->payload);
        free(c->cache_path);
        free(c->identity_env_path);
        free(c);
        return NULL;
}

typedef struct Parser {
        const char *path;
        char *error;
} Parser;

/* Records the first error as "FILE:LINE: KEY: MESSAGE". */
_printf_(4, 5)
static int fail(Parser *p, const config_setting_t *s, const char *key, const char *format, ...) {
        _cleanup_free_ char *msg = NULL;
        unsigned line = s ? config_setting_source_line(s) : 0;
        va_list ap;

        if (p->error)
                return -EINVAL;
        va_start(ap, format);
        if (vasprintf(&msg, format, ap) < 0)
                msg = NULL;
        va_end(ap);
        if (line > 0) {
                if (asprintf(&p->error, "%s:%u: %s: %s", p->path, line, key, msg ?: "invalid") < 0)
                        p->error = NULL;
        } else if (asprintf(&p->error, "%s: %s: %s", p->path, key, msg ?: "invalid") < 0)
                p->error = NULL;
        return -EINVAL;
}

static const char *type_name(const config_setting_t *s) {
        switch (config_setting_type(s)) {
        case CONFIG_TYPE_GROUP: return "a group { ... }";
        case CONFIG_TYPE_INT:
        case CONFIG_TYPE_INT64: return "an integer";
        case CONFIG_TYPE_FLOAT: return "a number with a fraction";
        case CONFIG_TYPE_STRING: return "a string";
        case CONFIG_TYPE_BOOL: return "a boolean";
        case CONFIG_TYPE_ARRAY: return "an array [ ... ]";
        case CONFIG_TYPE_LIST: return "a list ( ... )";
        default: return "a value of unknown type";
        }
}

static int check_keys(Parser *p, const config_setting_t *group, const char *prefix, const char *const *allowed) {
        int n = config_setting_length(group);

        for (int i = 0; i < n; i++) {
                config_setting_t *s = config_setting_get_elem(group, (unsigned) i);
                const char *name = config_setting_name(s);
                _cleanup_free_ char *valid = NULL, *full = NULL;
                bool ok = false;
                size_t len = 0;

                for (const char *const *a = allowed; *a; a++) {
                        if (name && streq(name, *a))
                                ok = true;
                        len += strlen(*a) + 2;
                }
                if (ok)
                        continue;

                valid = calloc(1, len + 1);
                if (!valid)
                        return -ENOMEM;
                for (const char *const *a = allowed; *a; a++) {
                        if (a != allowed)
                                strcat(valid, ", ");
                        strcat(valid, *a);
                }
                if (asprintf(&full, "%s%s", prefix, name ?: "?") < 0)
                        return -ENOMEM;
                return fail(p, s, full, "unknown key; valid keys here are: %s", valid);
        }
        return 0;
}

static int get_string(Parser *p, const config_setting_t *group, const char *name, const char *full, char **ret) {
        config_setting_t *s = config_setting_get_member(group, name);
        const char *v;

        if (!s)
                return 0;
        if (config_setting_type(s) != CONFIG_TYPE_STRING)
                return fail(p, s, full, "expected a string in double quotes, got %s", type_name(s));
        v = config_setting_get_string(s);
        if (strempty(v))
                return fail(p, s, full, "must not be empty");
        free(*ret);
        *ret = strdup(v);
        return *ret ? 1 : -ENOMEM;
}

static int get_int(Parser *p, const config_setting_t *group, const char *name, const char *full,
                   long long min, long long max, long long *ret) {
        config_setting_t *s = config_setting_get_member(group, name);
        long long v;

        if (!s)
                return 0;
        if (config_setting_type(s) == CONFIG_TYPE_INT)
                v = config_setting_get_int(s);
        else if (config_setting_type(s) == CONFIG_TYPE_INT64)
                v = config_setting_get_int64(s);
        else
                return fail(p, s, full, "expected an integer between %lld and %lld, got %s", min, max, type_name(s));
        if (v < min || v > max)
                return fail(p, s, full, "%lld is out of range; valid: %lld to %lld", v, min, max);
        *ret = v;
        return 1;
}

static int get_group(Parser *p, const config_setting_t *root, const char *name, config_setting_t **ret) {
        config_setting_t *s = config_setting_get_member(root, name);

        *ret = NULL;
        if (!s)
                return 0;
        if (config_setting_type(s) != CONFIG_TYPE_GROUP)
                return fail(p, s, name, "expected a group { key = value; ... }, got %s", type_name(s));
        *ret = s;
        return 1;
}

/* "credential:NAME" reads $CREDENTIALS_DIRECTORY/NAME (systemd
 * LoadCredential=); other paths are relative to the config file. */
static int resolve_path(Parser *p, const config_setting_t *s, const char *full, const char *value, char **ret) {
        const char *name;

        if (strncmp(value, "credential:", 11) != 0) {
                if (path_relative_to(p->path, value, ret) < 0)
                        return -ENOMEM;
                return 0;
        }
        name = value + 11;
        if (strempty(name) || strchr(name, '/') || streq(name, ".") || streq(name, ".."))
                return fail(p, s, full, "\"%s\": a credential name must be a plain file name, e.g. \"credential:dps-key\"", value);
        const char *dir = getenv("CREDENTIALS_DIRECTORY");
        if (strempty(dir))
                return fail(p, s, full, "\"%s\" needs $CREDENTIALS_DIRECTORY, which is not set: run dpsd from systemd with LoadCredential=%s:PATH, or give a file path", value, name);
        if (asprintf(ret, "%s/%s", dir, name) < 0)
                return -ENOMEM;
        return 0;
}

static int check_private_file(const char *path, char **ret_error) {
        struct stat st;

        if (stat(path, &st) < 0) {
                int r = negative_errno();
                if (asprintf(ret_error, "cannot read %s: %s", path, strerror(-r)) < 0)
                        *ret_error = NULL;
                return r;
        }
        if (!S_ISREG(st.st_mode)) {
                if (asprintf(ret_error, "%s is not a regular file", path) < 0)
                        *ret_error = NULL;
                return -EINVAL;
        }
        if (st.st_mode & 0077) {
                if (asprintf(ret_error, "%s is accessible by group or others (mode %04o), refusing to use a secret key from it: chmod 600 %s",
                             path, (unsigned) (st.st_mode & 07777), path) < 0)
                        *ret_error = NULL;
                return -EPERM;
        }
        return 0;
}

/* Reads a one-line secret, trimmed. The raw buffer is wiped. */
static int read_secret(const char *path, char **ret, char **ret_error) {
        char *raw = NULL;
        size_t len = 0, b, e;
        char *out;
        int r;

        r = check_private_file(path, ret_error);
        if (r < 0)
                return r;
        r = read_file_full(path, KEY_FILE_MAX, &raw, &len);
        if (r < 0) {
                if (asprintf(ret_error, "cannot read %s: %s", path, strerror(-r)) < 0)
                        *ret_error = NULL;
                return r;
        }
        for (b = 0; b < len && strchr(" \t\r\n", raw[b]); b++)
                ;
        for (e = len; e > b && strchr(" \t\r\n", raw[e - 1]); e--)
                ;
        out = strndup(raw + b, e - b);
        OPENSSL_cleanse(raw, len);
        free(raw);
        if (!out)
                return -ENOMEM;
        if (!*out) {
                free(out);
                if (asprintf(ret_error, "%s is empty; it should hold the base64 key", path) < 0)
                        *ret_error = NULL;
                return -EINVAL;
        }
        *ret = out;
        return 0;
}

/* DPS: "Keys must be in valid Base64 format with a key length between 16 and
 * 64 bytes". A shorter one is a truncated or mistyped file. */
static int check_key_length(const char *path, const char *key_b64, char **ret_error) {
        uint8_t *raw = NULL;
        size_t len = 0;
        int r;

        r = dps_base64_decode(key_b64, &raw, &len);
        if (r < 0) {
                if (asprintf(ret_error, "%s does not hold a valid base64 key", path) < 0)
                        *ret_error = NULL;
                return r;
        }
        OPENSSL_cleanse(raw, len);
        free(raw);
        if (len < 16 || len > 64) {
                if (asprintf(ret_error, "%s holds a key of %zu bytes; DPS keys are 16 to 64 bytes (base64): is the file truncated?", path, len) < 0)
                        *ret_error = NULL;
                return -EINVAL;
        }
        return 0;
}

int config_read_device_key(const Config *c, char **ret_key, char **ret_error) {
        _cleanup_secret_ char *key = NULL, *derived = NULL;
        int r;

        *ret_error = NULL;
        r = read_secret(c->key_file, &key, ret_error);
        if (r < 0)
                return r;
        if (c->group_key) {
                r = dps_sas_derive_key(key, c->registration_id, &derived);
                if (r < 0) {
                        if (asprintf(ret_error, "%s does not hold a valid base64 group key", c->key_file) < 0)
                                *ret_error = NULL;
                        return r;
                }
                r = check_key_length(c->key_file, key, ret_error);
                if (r < 0)
                        return r;
                *ret_key = TAKE_PTR(derived);
                return 0;
        }
        /* Validate the base64 now rather than at the first connection. */
        {
                _cleanup_secret_ char *probe = NULL;
                r = dps_sas_hmac(key, "probe", &probe);
                if (r < 0) {
                        if (asprintf(ret_error, "%s does not hold a valid base64 key", c->key_file) < 0)
                                *ret_error = NULL;
                        return r;
                }
        }
        r = check_key_length(c->key_file, key, ret_error);
        if (r < 0)
                return r;
        *ret_key = TAKE_PTR(key);
        return 0;
}

static int no_passphrase(char *buf, int size, int rwflag, void *userdata) {
        return -1;   /* never prompt: a daemon has no terminal */
}

int config_read_private_key(const Config *c, EVP_PKEY **ret, char **ret_error) {
        char *pem = NULL;
        size_t len = 0;
        EVP_PKEY *key = NULL;
        BIO *bio;
        int r;

        /* Read into memory we wipe, not through stdio, whose buffer is freed
         * with the key's PEM still in it. */
        r = read_file_full(c->key_file, KEY_FILE_MAX, &pem, &len);
        if (r < 0) {
                if (asprintf(ret_error, "cannot read %s: %s", c->key_file, strerror(-r)) < 0)
                        *ret_error = NULL;
                return r;
        }
        bio = BIO_new_mem_buf(pem, (int) len);
        if (bio)
                key = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
        BIO_free(bio);
        dps_memory_free(pem, len + 1);
        ERR_clear_error();
        if (!key) {
                if (asprintf(ret_error, "%s holds no unencrypted PEM private key", c->key_file) < 0)
                        *ret_error = NULL;
                return -EINVAL;
        }
        *ret = key;
        return 0;
}

/* The X.509 key must be the certificate's: otherwise every attempt fails
 * the same way, so say it once, at load time. */
static int check_key_matches(const Config *c, char **ret_error) {
        _cleanup_fclose_ FILE *cf = NULL;
        EVP_PKEY *key = NULL;
        X509 *x = NULL;
        int r = 0;

        cf = fopen(c->certificate_file, "re");
        if (cf)
                x = PEM_read_X509(cf, NULL, NULL, NULL);
        r = config_read_private_key(c, &key, ret_error);
        if (r >= 0 && x && X509_check_private_key(x, key) != 1) {
                if (asprintf(ret_error, "%s is not the private key of the certificate %s", c->key_file, c->certificate_file) < 0)
                        *ret_error = NULL;
                r = -EINVAL;
        }
        EVP_PKEY_free(key);   /* wipes the key material */
        X509_free(x);
        ERR_clear_error();
        return r;
}

static int load_certificate(Parser *p, const config_setting_t *s, Config *c, char **ret_cn) {
        _cleanup_fclose_ FILE *f = NULL;
        X509 *x;
        unsigned char *der = NULL;
        int len, r = 0;
        struct tm tm;

        f = fopen(c->certificate_file, "re");
        if (!f)
                return fail(p, s, "attestation.certificate-file", "cannot open %s: %m", c->certificate_file);
        x = PEM_read_X509(f, NULL, NULL, NULL);
        if (!x)
                return fail(p, s, "attestation.certificate-file", "%s holds no PEM certificate", c->certificate_file);

        if (ASN1_TIME_to_tm(X509_get0_notBefore(x), &tm) == 1)
                c->certificate_not_before_usec = (uint64_t) timegm(&tm) * USEC_PER_SEC;
        if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1)
                c->certificate_not_after_usec = (uint64_t) timegm(&tm) * USEC_PER_SEC;

        len = i2d_X509(x, &der);
        if (len <= 0 || sha256_hex(der, (size_t) len, &c->certificate_sha256) < 0)
                r = -ENOMEM;
        OPENSSL_free(der);

        if (r == 0 && ret_cn) {
                char cn[256];
                int n = X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn);
                if (n <= 0)
                        r = fail(p, s, "attestation.certificate-file", "%s has no subject CN to take the registration id from", c->certificate_file);
                else if (!(*ret_cn = strdup(cn)))
                        r = -ENOMEM;
        }
        X509_free(x);
        return r;
}

static int registration_id_from_source(Parser *p, const config_setting_t *s, Config *c, const char *source, char **ret) {
        const char *key = "registration-id-source";
        _cleanup_free_ char *buf = NULL;
        int r;

        if (streq(source, "machine-id")) {
                r = read_file_full("/etc/machine-id", 4096, &buf, NULL);
                if (r < 0)
                        return fail(p, s, key, "cannot read /etc/machine-id: %s", strerror(-r));
        } else if (streq(source, "hostname")) {
                char h[HOST_NAME_MAX + 1] = "";
                if (gethostname(h, sizeof h - 1) < 0)
                        return fail(p, s, key, "cannot get the hostname: %m");
                buf = strdup(h);
        } else if (strncmp(source, "file:", 5) == 0 && source[5]) {
                _cleanup_free_ char *path = NULL;
                if (path_relative_to(p->path, source + 5, &path) < 0)
                        return -ENOMEM;
                r = read_file_full(path, 4096, &buf, NULL);
                if (r < 0)
                        return fail(p, s, key, "cannot read %s: %s", path,
                                    r == -EBADFD ? "not a regular file" : strerror(-r));
                char *nl = strchr(buf, '\n');
                if (nl)
                        *nl = 0;
        } else if (streq(source, "certificate-cn")) {
                if (c->attestation != ATTESTATION_X509)
                        return fail(p, s, key, "\"certificate-cn\" needs attestation.type = \"x509\"");
                return load_certificate(p, s, c, ret);
        } else
                return fail(p, s, key, "\"%s\" is not valid; valid: \"machine-id\", \"hostname\", \"file:PATH\", \"certificate-cn\"", source);

        if (!buf)
                return -ENOMEM;
        strstrip(buf);
        *ret = TAKE_PTR(buf);
        return 0;
}

static int parse_payload(Parser *p, const config_setting_t *root, Config *c) {
        config_setting_t *s = config_setting_get_member(root, "payload");
        config_setting_t *sf = config_setting_get_member(root, "payload-file");
        _cleanup_free_ char *text = NULL, *file = NULL;
        const char *key = s ? "payload" : "payload-file";
        enum json_tokener_error jerr;
        json_object *j;
        int r;

        if (s && sf)
                return fail(p, sf, "payload-file", "set either payload or payload-file, not both");
        if (s) {
                r = get_string(p, root, "payload", "payload", &text);
                if (r < 0)
                        return r;
        } else if (sf) {
                r = get_string(p, root, "payload-file", "payload-file", &file);
                if (r < 0)
                        return r;
                _cleanup_free_ char *path = NULL;
                if (path_relative_to(p->path, file, &path) < 0)
                        return -ENOMEM;
                r = read_file_full(path, PAYLOAD_MAX, &text, NULL);
                if (r < 0)
                        return fail(p, sf, key, "cannot read %s: %s", path,
                                    r == -EBADFD ? "not a regular file" : strerror(-r));
        } else
                return 0;

        /* JSON is UTF-8 (RFC 8259 section 8.1): the service would refuse
         * anything else, after a billed registration. */
        {
                json_tokener *tok = json_tokener_new();
                if (!tok)
                        return -ENOMEM;
                json_tokener_set_flags(tok, JSON_TOKENER_VALIDATE_UTF8);
                /* -1: up to and including the NUL, which ends a bare number */
                j = json_tokener_parse_ex(tok, text, -1);
                jerr = json_tokener_get_error(tok);
                if (jerr != json_tokener_success) {
                        json_object_put(j);
                        j = NULL;
                }
                json_tokener_free(tok);
        }
        if (!j && jerr != json_tokener_success)
                return fail(p, s ?: sf, key, "not valid JSON (%s); the payload is any JSON value, e.g. \"{\\\"modelId\\\":\\\"dtmi:x;1\\\"}\"",
                            json_tokener_error_desc(jerr));
        c->payload = strdup(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN));
        json_object_put(j);
        return c->payload ? 0 : -ENOMEM;
}

static int parse_attestation(Parser *p, const config_setting_t *root, Config *c) {
        static const char *const allowed[] = { "type", "key-file", "group-key-file", "certificate-file", NULL };
        config_setting_t *g;
        _cleanup_free_ char *type = NULL, *key = NULL, *group = NULL, *cert = NULL;
        int r;

        r = get_group(p, root, "attestation", &g);
        if (r < 0)
                return r;
        if (r == 0)
                return fail(p, NULL, "attestation", "missing; add attestation = { type = \"symmetric-key\"; key-file = \"/etc/dpsd/device.key\"; };");
        r = check_keys(p, g, "attestation.", allowed);
        if (r < 0)
                return r;
        if (get_string(p, g, "type", "attestation.type", &type) < 0 ||
            get_string(p, g, "key-file", "attestation.key-file", &key) < 0 ||
            get_string(p, g, "group-key-file", "attestation.group-key-file", &group) < 0 ||
            get_string(p, g, "certificate-file", "attestation.certificate-file", &cert) < 0)
                return -EINVAL;
        if (!type)
                return fail(p, g, "attestation.type", "missing; valid: \"symmetric-key\", \"x509\"");

        if (streq(type, "symmetric-key")) {
                c->attestation = ATTESTATION_SYMMETRIC_KEY;
                if (cert)
                        return fail(p, config_setting_get_member(g, "certificate-file"), "attestation.certificate-file",
                                    "only valid with type = \"x509\"");
                if (key && group)
                        return fail(p, config_setting_get_member(g, "group-key-file"), "attestation.group-key-file",
                                    "set either key-file (individual enrollment) or group-key-file (group enrollment), not both");
                if (!key && !group)
                        return fail(p, g, "attestation.key-file", "missing; set key-file (individual enrollment) or group-key-file (group enrollment)");
                c->group_key = !!group;
                r = resolve_path(p, config_setting_get_member(g, group ? "group-key-file" : "key-file"),
                                 group ? "attestation.group-key-file" : "attestation.key-file", group ?: key, &c->key_file);
                return r;
        }
        if (streq(type, "x509")) {
                c->attestation = ATTESTATION_X509;
                if (group)
                        return fail(p, config_setting_get_member(g, "group-key-file"), "attestation.group-key-file",
                                    "only valid with type = \"symmetric-key\"; an X.509 group enrollment uses the device's own certificate and key");
                if (!cert)
                        return fail(p, g, "attestation.certificate-file", "missing; type \"x509\" needs certificate-file (PEM, chain allowed) and key-file");
                if (!key)
                        return fail(p, g, "attestation.key-file", "missing; type \"x509\" needs the PEM private key in key-file");
                r = resolve_path(p, config_setting_get_member(g, "certificate-file"), "attestation.certificate-file", cert, &c->certificate_file);
                if (r < 0)
                        return r;
                return resolve_path(p, config_setting_get_member(g, "key-file"), "attestation.key-file", key, &c->key_file);
        }
        return fail(p, config_setting_get_member(g, "type"), "attestation.type",
                    "\"%s\" is not valid; valid: \"symmetric-key\", \"x509\" (TPM is not supported over MQTT)", type);
}

static int parse_seconds_group(Parser *p, const config_setting_t *root, const char *name,
                               const char *const *keys, long long *const *values, long long min, long long max) {
        config_setting_t *g;
        int r;

        r = get_group(p, root, name, &g);
        if (r <= 0)
                return r;
        r = check_keys(p, g, name[0] == 'r' ? "retry." : "timeouts.", keys);
        if (r < 0)
                return r;
        for (size_t i = 0; keys[i]; i++) {
                _cleanup_free_ char *full = NULL;
                if (asprintf(&full, "%s.%s", name, keys[i]) < 0)
                        return -ENOMEM;
                r = get_int(p, g, keys[i], full, min, max, values[i]);
                if (r < 0)
                        return r;
        }
        return 0;
}

static char *env_dir_path(const char *env, const char *file, const char *fallback) {
        const char *e = getenv(env);
        char *r;

        if (strempty(e))
                return strdup(fallback);
        /* systemd may list several directories separated by ':': use the first. */
        size_t n = strcspn(e, ":");
        if (asprintf(&r, "%.*s/%s", (int) n, e, file) < 0)
                return NULL;
        return r;
}

/* proxy = "http://[user:password@]host:port" or "none"; absent: the
 * https_proxy/HTTPS_PROXY environment minus no_proxy/NO_PROXY. The URL may
 * hold a password: no message repeats it. */
static int parse_proxy(Parser *p, config_setting_t *root, Config *c) {
        _cleanup_secret_ char *url = NULL;
        int r;

        if (get_string(p, root, "proxy", "proxy", &url) < 0)
                return -EINVAL;
        if (url && streq(url, "none"))
                return 0;
        if (url) {
                r = dps_proxy_parse(url, &c->proxy);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        return fail(p, config_setting_get_member(root, "proxy"), "proxy",
                                    r == -EPROTONOSUPPORT ?
                                    "only HTTP proxies (CONNECT) are supported; give \"http://[user:password@]host:port\" or \"none\"" :
                                    "not a proxy URL; give \"http://[user:password@]host:port\" (percent-encode '@' and ':' in the password) or \"none\"");
                /* A password here makes this file a secret, as a key file is. */
                struct stat st;
                if (c->proxy.password && stat(p->path, &st) >= 0 && (st.st_mode & 0077))
                        return fail(p, config_setting_get_member(root, "proxy"), "proxy",
                                    "holds a password, but %s is accessible by group or others (mode %04o): chmod 600 %s",
                                    p->path, (unsigned) (st.st_mode & 07777), p->path);
                return 0;
        }
        r = dps_proxy_from_env(c->endpoint, &c->proxy);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return fail(p, NULL, "proxy",
                            "the https_proxy (or HTTPS_PROXY) environment variable is not an http:// proxy URL; fix it, or set proxy = \"none\"; to ignore it");
        return 0;
}

static int parse(Parser *p, config_t *cfg, Config *c) {
        static const char *const allowed[] = {
                "endpoint", "port", "transport", "id-scope", "registration-id", "registration-id-source",
                "attestation", "ca-file", "ca-path", "payload", "payload-file", "retry", "timeouts",
                "keepalive-sec", "cache-path", "identity-env-path", "proxy", NULL };
        static const char *const retry_keys[] = { "min-sec", "max-sec", "credentials-sec", NULL };
        static const char *const timeout_keys[] = { "connect-sec", "response-sec", "total-sec", NULL };
        config_setting_t *root = config_root_setting(cfg);
        _cleanup_free_ char *source = NULL, *ca_file = NULL, *ca_path = NULL, *cache = NULL, *envp = NULL;
        long long port = DPS_PORT_MQTT, keepalive = 60;
        long long rmin = 1, rmax = 900, rcred = DPS_BACKOFF_CREDENTIALS_MIN_USEC / USEC_PER_SEC;
        long long tconn = 30, tresp = 30, ttotal = 300;
        const char *reason = NULL;
        int r;

        r = check_keys(p, root, "", allowed);
        if (r < 0)
                return r;

        if (get_string(p, root, "endpoint", "endpoint", &c->endpoint) < 0 ||
            get_int(p, root, "port", "port", 1, 65535, &port) < 0 ||
            get_string(p, root, "transport", "transport", &c->transport) < 0 ||
            get_string(p, root, "id-scope", "id-scope", &c->id_scope) < 0 ||
            get_string(p, root, "registration-id", "registration-id", &c->registration_id) < 0 ||
            get_string(p, root, "registration-id-source", "registration-id-source", &source) < 0 ||
            get_string(p, root, "ca-file", "ca-file", &ca_file) < 0 ||
            get_string(p, root, "ca-path", "ca-path", &ca_path) < 0 ||
            get_int(p, root, "keepalive-sec", "keepalive-sec", 5, 1200, &keepalive) < 0 ||
            get_string(p, root, "cache-path", "cache-path", &cache) < 0 ||
            get_string(p, root, "identity-env-path", "identity-env-path", &envp) < 0)
                return -EINVAL;

        if (!c->endpoint && !(c->endpoint = strdup(DPS_GLOBAL_ENDPOINT)))
                return -ENOMEM;
        if (strpbrk(c->endpoint, "/: \t"))
                return fail(p, config_setting_get_member(root, "endpoint"), "endpoint",
                            "\"%s\" is not a host name; give only the host, e.g. \"global.azure-devices-provisioning.net\" (the port is a separate key)", c->endpoint);
        c->port = (uint16_t) port;
        c->keepalive_sec = (unsigned) keepalive;

        if (!c->transport && !(c->transport = strdup("mqtt")))
                return -ENOMEM;
        if (!streq(c->transport, "mqtt") && !streq(c->transport, "mqtt-ws"))
                return fail(p, config_setting_get_member(root, "transport"), "transport",
                            "\"%s\" is not valid; valid: \"mqtt\" (MQTT over TLS, port 8883), \"mqtt-ws\" (MQTT over WebSocket, port 443)",
                            c->transport);
        /* "WebSocket: port 443, wss://HOST/$iothub/websocket" */
        if (streq(c->transport, "mqtt-ws") && !config_setting_get_member(root, "port"))
                c->port = DPS_PORT_MQTT_WS;
        r = parse_proxy(p, root, c);
        if (r < 0)
                return r;

        if (!c->id_scope)
                return fail(p, NULL, "id-scope", "missing; set it to your DPS instance's ID scope, e.g. id-scope = \"0ne00000A0A\";");
        /* "ID scopes look like 0ne and 8 hex digits": the scope goes into the
         * MQTT user name, the SAS resource and the cache; anything but
         * letters and digits would break them. */
        if (strlen(c->id_scope) > 64 || strspn(c->id_scope, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") != strlen(c->id_scope))
                return fail(p, config_setting_get_member(root, "id-scope"), "id-scope",
                            "not an ID scope: only letters and digits (at most 64) are allowed, e.g. \"0ne00000A0A\"; copy it from the DPS instance's overview");

        r = parse_attestation(p, root, c);
        if (r < 0)
                return r;

        if (c->registration_id && source)
                return fail(p, config_setting_get_member(root, "registration-id-source"), "registration-id-source",
                            "set either registration-id or registration-id-source, not both");
        if (source) {
                r = registration_id_from_source(p, config_setting_get_member(root, "registration-id-source"), c, source, &c->registration_id);
                if (r < 0)
                        return r;
                c->registration_id_source = TAKE_PTR(source);
        } else if (c->registration_id) {
                if (!(c->registration_id_source = strdup("config")))
                        return -ENOMEM;
        } else
                return fail(p, NULL, "registration-id", "missing; set registration-id = \"...\"; or registration-id-source = \"machine-id\" | \"hostname\" | \"file:PATH\" | \"certificate-cn\";");

        if (dps_registration_id_validate(c->registration_id, c->attestation == ATTESTATION_X509, &reason) < 0) {
                const char *k = streq(c->registration_id_source, "config") ? "registration-id" : "registration-id-source";
                return fail(p, config_setting_get_member(root, k), k,
                            "\"%.128s%s\" is not a valid registration id: %s", c->registration_id,
                            strlen(c->registration_id) > 128 ? "..." : "", reason ?: "invalid");
        }

        if (c->attestation == ATTESTATION_X509 && !c->certificate_sha256) {
                config_setting_t *cs = config_setting_get_member(config_setting_get_member(root, "attestation"), "certificate-file");
                _cleanup_free_ char *cn = NULL;

                r = load_certificate(p, cs, c, &cn);
                if (r < 0)
                        return r;
                /* "the client certificate's subject CN must equal the registration id" */
                if (strcasecmp(cn, c->registration_id) != 0)
                        return fail(p, cs, "attestation.certificate-file",
                                    "the certificate's subject CN \"%.64s\" is not the registration id \"%s\"; DPS refuses such a device (use registration-id-source = \"certificate-cn\"; or the right certificate)",
                                    cn, c->registration_id);
        }

        /* Secrets: permissions and content are checked now, so --check-config catches them. */
        {
                _cleanup_free_ char *err = NULL;
                config_setting_t *a = config_setting_get_member(root, "attestation");
                const char *k = c->attestation == ATTESTATION_X509 ? "key-file" : c->group_key ? "group-key-file" : "key-file";
                _cleanup_free_ char *full = NULL;

                if (asprintf(&full, "attestation.%s", k) < 0)
                        return -ENOMEM;
                if (c->attestation == ATTESTATION_SYMMETRIC_KEY) {
                        _cleanup_secret_ char *key = NULL;
                        r = config_read_device_key(c, &key, &err);
                } else {
                        r = check_private_file(c->key_file, &err);
                        if (r >= 0)
                                r = check_key_matches(c, &err);
                }
                if (r < 0)
                        return fail(p, config_setting_get_member(a, k), full, "%s", err ?: strerror(-r));
        }

        if (ca_file) {
                if (path_relative_to(p->path, ca_file, &c->ca_file) < 0)
                        return -ENOMEM;
                if (access(c->ca_file, R_OK) < 0)
                        return fail(p, config_setting_get_member(root, "ca-file"), "ca-file", "cannot read %s: %m", c->ca_file);
        }
        if (ca_path) {
                if (path_relative_to(p->path, ca_path, &c->ca_path) < 0)
                        return -ENOMEM;
                if (access(c->ca_path, R_OK | X_OK) < 0)
                        return fail(p, config_setting_get_member(root, "ca-path"), "ca-path", "cannot read directory %s: %m", c->ca_path);
        }
        if (!c->ca_file && !c->ca_path && !(c->ca_path = strdup(DEFAULT_CA_PATH)))
                return -ENOMEM;

        r = parse_payload(p, root, c);
        if (r < 0)
                return r;

        /* At least 1 s each: a zero back-off would retry at loop speed. */
        r = parse_seconds_group(p, root, "retry", retry_keys, (long long *const[]) { &rmin, &rmax, &rcred }, 1, 7 * 86400);
        if (r < 0)
                return r;
        if (rmax < rmin)
                return fail(p, config_setting_get_member(config_setting_get_member(root, "retry"), "max-sec"),
                            "retry.max-sec", "%lld is below retry.min-sec (%lld)", rmax, rmin);
        r = parse_seconds_group(p, root, "timeouts", timeout_keys, (long long *const[]) { &tconn, &tresp, &ttotal }, 1, 86400);
        if (r < 0)
                return r;
        c->retry_min_usec = (uint64_t) rmin * USEC_PER_SEC;
        c->retry_max_usec = (uint64_t) rmax * USEC_PER_SEC;
        c->retry_credentials_usec = (uint64_t) rcred * USEC_PER_SEC;
        c->connect_timeout_usec = (uint64_t) tconn * USEC_PER_SEC;
        c->response_timeout_usec = (uint64_t) tresp * USEC_PER_SEC;
        c->total_timeout_usec = (uint64_t) ttotal * USEC_PER_SEC;

        if (cache) {
                if (path_relative_to(p->path, cache, &c->cache_path) < 0)
                        return -ENOMEM;
        } else if (!(c->cache_path = env_dir_path("STATE_DIRECTORY", "cache.json", LOCALSTATEDIR "/lib/dpsd/cache.json")))
                return -ENOMEM;
        if (envp) {
                if (path_relative_to(p->path, envp, &c->identity_env_path) < 0)
                        return -ENOMEM;
        } else if (!(c->identity_env_path = env_dir_path("RUNTIME_DIRECTORY", "identity.env", "/run/dpsd/identity.env")))
                return -ENOMEM;

        return 0;
}

int config_load(const char *path, Config **ret, char **ret_error) {
        _cleanup_(config_freep) Config *c = NULL;
        Parser p = { .path = path };
        config_t cfg;
        int r;

        if (ret_error)
                *ret_error = NULL;

        if (access(path, R_OK) < 0) {
                r = negative_errno();
                if (ret_error && asprintf(ret_error, "%s: cannot read the configuration: %s", path, strerror(-r)) < 0)
                        *ret_error = NULL;
                return r;
        }

        c = calloc(1, sizeof *c);
        if (!c || !(c->path = strdup(path)))
                return -ENOMEM;

        config_init(&cfg);
        if (!config_read_file(&cfg, path)) {
                if (ret_error && asprintf(ret_error, "%s:%d: syntax error: %s (the format is libconfig: key = value; groups in { }, strings in double quotes)",
                                          config_error_file(&cfg) ?: path, config_error_line(&cfg), config_error_text(&cfg)) < 0)
                        *ret_error = NULL;
                config_destroy(&cfg);
                return -EINVAL;
        }
        r = parse(&p, &cfg, c);
        config_destroy(&cfg);
        if (r < 0) {
                if (ret_error)
                        *ret_error = TAKE_PTR(p.error);
                free(p.error);
                return r;
        }
        *ret = TAKE_PTR(c);
        return 0;
}

int config_fingerprint(const Config *c, char **ret) {
        _cleanup_free_ char *s = NULL;

        if (asprintf(&s, "%s|%s|%s%s|%s|%s:%u|%s",
                     c->id_scope, c->registration_id,
                     attestation_type_to_string(c->attestation), c->group_key ? "+group" : "",
                     c->certificate_sha256 ?: "", c->endpoint, c->port, c->transport) < 0)
                return -ENOMEM;
        return sha256_hex(s, strlen(s), ret);
}
