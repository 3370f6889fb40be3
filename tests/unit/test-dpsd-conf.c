/* SPDX-License-Identifier: MIT */
/* test-dpsd-conf.c: dpsd's configuration loader: defaults, every error path, key files, id sources */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "dps-macro.h"
#include "dpsd-conf.h"
#include "dpsd-util.h"
#include "test-util.h"

static char dir[] = "/tmp/test-dpsd-conf-XXXXXX";
static char conf_path[512];

/* base64 of 32 bytes */
#define KEY "zaL5K9s3EvGYuD3eBPaUWYZEQJ/Q1cr1ZL8XGFn8hDk="

static void write_file(const char *name, const char *text, mode_t mode) {
        char p[512];
        int fd;

        snprintf(p, sizeof p, "%s/%s", dir, name);
        (void) unlink(p);
        fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
        REQUIRE(fd >= 0);
        REQUIRE(write(fd, text, strlen(text)) == (ssize_t) strlen(text));
        REQUIRE(fchmod(fd, mode) == 0);
        close(fd);
}

_printf_(1, 2)
static int load(const char *format, ...) {
        _cleanup_free_ char *text = NULL;
        va_list ap;

        va_start(ap, format);
        REQUIRE(vasprintf(&text, format, ap) >= 0);
        va_end(ap);
        write_file("dps.conf", text, 0644);
        return 0;
}

#define BASE "id-scope = \"0ne00000A0A\";\nregistration-id = \"dev-1\";\n" \
             "attestation = { type = \"symmetric-key\"; key-file = \"dev.key\"; };\n"

/* Loads conf_path and expects an error that starts with "FILE:LINE: KEY: "
 * and contains every given fragment. */
static void expect_error(int line, const char *key, const char *fragment) {
        _cleanup_free_ char *err = NULL, *prefix = NULL;
        Config *c = NULL;
        int r;

        r = config_load(conf_path, &c, &err);
        CHECK(r < 0);
        CHECK(c == NULL);
        REQUIRE(err);
        if (line > 0)
                REQUIRE(asprintf(&prefix, "%s:%d: %s: ", conf_path, line, key) >= 0);
        else
                REQUIRE(asprintf(&prefix, "%s: %s: ", conf_path, key) >= 0);
        if (strncmp(err, prefix, strlen(prefix)) != 0 || !strstr(err, fragment)) {
                fprintf(stderr, "error \"%s\"\n  expected prefix \"%s\" and \"%s\"\n", err, prefix, fragment);
                test_failures++;
        }
        test_checks++;
}

static Config *expect_ok(void) {
        _cleanup_free_ char *err = NULL;
        Config *c = NULL;
        int r;

        r = config_load(conf_path, &c, &err);
        if (r < 0)
                fprintf(stderr, "unexpected error: %s\n", err ?: strerror(-r));
        CHECK_INT(r, 0);
        return c;
}

static void test_defaults(void) {
        Config *c;

        unsetenv("STATE_DIRECTORY");
        unsetenv("RUNTIME_DIRECTORY");
        load(BASE);
        c = expect_ok();
        REQUIRE(c);
        CHECK_STR(c->endpoint, "global.azure-devices-provisioning.net");
        CHECK_INT(c->port, 8883);
        CHECK_STR(c->transport, "mqtt");
        CHECK_STR(c->registration_id, "dev-1");
        CHECK_STR(c->registration_id_source, "config");
        CHECK_INT(c->attestation, ATTESTATION_SYMMETRIC_KEY);
        CHECK(!c->group_key);
        CHECK(c->ca_file == NULL);
        CHECK_STR(c->ca_path, "/etc/ssl/certs");
        CHECK(c->payload == NULL);
        CHECK_INT(c->retry_min_usec, 1 * USEC_PER_SEC);
        CHECK_INT(c->retry_max_usec, 900 * USEC_PER_SEC);
        CHECK_INT(c->retry_credentials_usec, 300 * USEC_PER_SEC);
        CHECK_INT(c->connect_timeout_usec, 30 * USEC_PER_SEC);
        CHECK_INT(c->response_timeout_usec, 30 * USEC_PER_SEC);
        CHECK_STR(c->cache_path, LOCALSTATEDIR "/lib/dpsd/cache.json");
        CHECK_STR(c->identity_env_path, "/run/dpsd/identity.env");
        {
                _cleanup_free_ char *expect = NULL;
                REQUIRE(asprintf(&expect, "%s/dev.key", dir) >= 0);
                CHECK_STR(c->key_file, expect);   /* relative to the config file */
        }
        config_free(c);

        /* systemd's StateDirectory= and RuntimeDirectory= */
        setenv("STATE_DIRECTORY", "/var/lib/dpsd:/var/lib/other", 1);
        setenv("RUNTIME_DIRECTORY", "/run/dpsd-x", 1);
        c = expect_ok();
        REQUIRE(c);
        CHECK_STR(c->cache_path, "/var/lib/dpsd/cache.json");
        CHECK_STR(c->identity_env_path, "/run/dpsd-x/identity.env");
        config_free(c);
        unsetenv("STATE_DIRECTORY");
        unsetenv("RUNTIME_DIRECTORY");

        load(BASE "endpoint = \"dps.example.net\"; port = 443;\npayload = \"{ \\\"a\\\": [1, 2] }\";\n"
             "retry = { min-sec = 2; max-sec = 60; credentials-sec = 600; };\n"
             "timeouts = { connect-sec = 5; response-sec = 7; total-sec = 99; };\n"
             "cache-path = \"state/cache.json\"; identity-env-path = \"/run/x.env\";\n");
        c = expect_ok();
        REQUIRE(c);
        CHECK_STR(c->endpoint, "dps.example.net");
        CHECK_INT(c->port, 443);
        CHECK_STR(c->payload, "{\"a\":[1,2]}");
        CHECK_INT(c->retry_min_usec, 2 * USEC_PER_SEC);
        CHECK_INT(c->retry_max_usec, 60 * USEC_PER_SEC);
        CHECK_INT(c->retry_credentials_usec, 600 * USEC_PER_SEC);
        CHECK_INT(c->connect_timeout_usec, 5 * USEC_PER_SEC);
        CHECK_INT(c->response_timeout_usec, 7 * USEC_PER_SEC);
        CHECK_INT(c->total_timeout_usec, 99 * USEC_PER_SEC);
        CHECK_STR(c->identity_env_path, "/run/x.env");
        CHECK(strstr(c->cache_path, dir) == c->cache_path);
        config_free(c);
}

static void test_errors(void) {
        _cleanup_free_ char *err = NULL;
        Config *c = NULL;

        /* syntax: libconfig's own message, with file and line */
        load(BASE "port = 8883;\nendpoint = = \"x\";\n");
        CHECK(config_load(conf_path, &c, &err) == -EINVAL);
        REQUIRE(err);
        {
                _cleanup_free_ char *prefix = NULL;
                REQUIRE(asprintf(&prefix, "%s:5: syntax error", conf_path) >= 0);
                CHECK(strncmp(err, prefix, strlen(prefix)) == 0);
        }

        load(BASE "endpont = \"x\";\n");
        expect_error(4, "endpont", "unknown key; valid keys here are: endpoint, port");
        load("id-scope = \"0ne00000A0A\";\nregistration-id = \"dev-1\";\n"
             "attestation = {\n  type = \"symmetric-key\";\n  keyfile = \"dev.key\";\n};\n");
        expect_error(5, "attestation.keyfile", "valid keys here are: type, key-file");
        load(BASE "retry = { min-sec = 1; maxsec = 3; };\n");
        expect_error(4, "retry.maxsec", "unknown key");
        load(BASE "timeouts = { connect = 3; };\n");
        expect_error(4, "timeouts.connect", "unknown key");

        /* types and ranges */
        load(BASE "port = \"8883\";\n");
        expect_error(4, "port", "expected an integer between 1 and 65535, got a string");
        load(BASE "port = 70000;\n");
        expect_error(4, "port", "70000 is out of range; valid: 1 to 65535");
        load(BASE "endpoint = 5;\n");
        expect_error(4, "endpoint", "expected a string in double quotes, got an integer");
        load(BASE "endpoint = \"dps.example.net:8883\";\n");
        expect_error(4, "endpoint", "is not a host name");
        load(BASE "retry = 3;\n");
        expect_error(4, "retry", "expected a group");
        load(BASE "retry = { min-sec = 10; max-sec = 5; };\n");
        expect_error(4, "retry.max-sec", "below retry.min-sec");
        load(BASE "retry = { min-sec = 0; };\n");   /* no back-off would hammer the service */
        expect_error(4, "retry.min-sec", "0 is out of range; valid: 1 to 604800");
        load(BASE "retry = { credentials-sec = 0; };\n");
        expect_error(4, "retry.credentials-sec", "out of range");
        load(BASE "timeouts = { response-sec = 0; };\n");
        expect_error(4, "timeouts.response-sec", "out of range");
        load(BASE "keepalive-sec = true;\n");
        expect_error(4, "keepalive-sec", "got a boolean");
        load(BASE "registration-id-source = \"hostname\";\n");
        expect_error(4, "registration-id-source", "either registration-id or registration-id-source");

        /* transport: mqtt-ws defaults to port 443; an explicit port wins */
        load(BASE "transport = \"mqtt-ws\";\n");
        c = expect_ok();
        if (c) {
                CHECK_STR(c->transport, "mqtt-ws");
                CHECK_INT(c->port, 443);
        }
        c = config_free(c);
        load(BASE "transport = \"mqtt-ws\"; port = 8443;\n");
        c = expect_ok();
        CHECK(c && c->port == 8443);
        c = config_free(c);
        load(BASE "transport = \"amqp\";\n");
        expect_error(4, "transport", "valid: \"mqtt\"");

        /* proxy: a URL (credentials decoded), "none", and errors that never repeat the URL */
        load(BASE "proxy = \"http://u:p%%40ss@proxy.lan:3128\";\n");
        expect_error(4, "proxy", "holds a password, but");   /* dps.conf is 0644 here */
        {
                _cleanup_free_ char *perr = NULL;
                CHECK(config_load(conf_path, &c, &perr) < 0 && perr && strstr(perr, "chmod 600") && !strstr(perr, "p@ss"));
        }
        REQUIRE(chmod(conf_path, 0600) == 0);
        c = expect_ok();
        if (c) {
                CHECK_STR(c->proxy.host, "proxy.lan");
                CHECK_INT(c->proxy.port, 3128);
                CHECK_STR(c->proxy.password, "p@ss");
        }
        c = config_free(c);
        load(BASE "proxy = \"none\";\n");
        c = expect_ok();
        CHECK(c && !c->proxy.host);
        c = config_free(c);
        load(BASE "proxy = \"https://u:hunter2@proxy.lan:3128\";\n");
        expect_error(4, "proxy", "only HTTP proxies");
        load(BASE "proxy = \"http://u:hunter2@proxy.lan:99999\";\n");
        expect_error(4, "proxy", "not a proxy URL");
        {
                _cleanup_free_ char *perr = NULL;
                CHECK(config_load(conf_path, &c, &perr) < 0 && perr && !strstr(perr, "hunter2"));
        }

        /* required keys */
        load("registration-id = \"dev-1\";\nattestation = { type = \"symmetric-key\"; key-file = \"dev.key\"; };\n");
        expect_error(0, "id-scope", "missing");
        load("id-scope = \"0ne00000A0A\";\nregistration-id = \"dev-1\";\n");
        expect_error(0, "attestation", "missing");
        load("id-scope = \"0ne00000A0A\";\nattestation = { type = \"symmetric-key\"; key-file = \"dev.key\"; };\n");
        expect_error(0, "registration-id", "missing");
        load("id-scope = \"0ne00000A0A\";\nregistration-id = \"dev-1\";\nattestation = { key-file = \"dev.key\"; };\n");
        expect_error(3, "attestation.type", "valid: \"symmetric-key\", \"x509\"");
        load("id-scope = \"0ne00000A0A\";\nregistration-id = \"dev-1\";\nattestation = { type = \"tpm\"; };\n");
        expect_error(3, "attestation.type", "TPM is not supported");
        load("id-scope = \"0ne00000A0A\";\nregistration-id = \"dev-1\";\nattestation = { type = \"symmetric-key\"; };\n");
        expect_error(3, "attestation.key-file", "missing");
        load("id-scope = \"0ne00000A0A\";\nregistration-id = \"dev-1\";\n"
             "attestation = { type = \"symmetric-key\"; key-file = \"dev.key\";\n group-key-file = \"dev.key\"; };\n");
        expect_error(4, "attestation.group-key-file", "not both");
        load("id-scope = \"0ne00000A0A\";\nregistration-id = \"dev-1\";\nattestation = { type = \"x509\"; key-file = \"dev.key\"; };\n");
        expect_error(3, "attestation.certificate-file", "missing");

        /* registration id validated by libdps */
        load("id-scope = \"0ne00000A0A\";\nregistration-id = \"dev/1\";\n"
             "attestation = { type = \"symmetric-key\"; key-file = \"dev.key\"; };\n");
        expect_error(2, "registration-id", "is not a valid registration id");
        load("id-scope = \"0ne00000A0A\";\nregistration-id = \"dev-1.\";\n"
             "attestation = { type = \"symmetric-key\"; key-file = \"dev.key\"; };\n");
        expect_error(2, "registration-id", "not a valid registration id");

        /* payload */
        load(BASE "payload = \"{nope\";\n");
        expect_error(4, "payload", "not valid JSON");
        load(BASE "payload-file = \"missing.json\";\n");
        expect_error(4, "payload-file", "cannot read");
        load(BASE "payload = \"1\";\npayload-file = \"p.json\";\n");
        expect_error(5, "payload-file", "not both");

        /* CA */
        load(BASE "ca-file = \"nope.pem\";\n");
        expect_error(4, "ca-file", "cannot read");
}

static void test_key_files(void) {
        Config *c;

        /* readable by others or the group: refused, with the fix */
        write_file("dev.key", KEY "\n", 0644);
        load(BASE);
        {
                _cleanup_free_ char *fix = NULL;
                REQUIRE(asprintf(&fix, "chmod 600 %s/dev.key", dir) >= 0);
                expect_error(3, "attestation.key-file", fix);
        }
        write_file("dev.key", KEY "\n", 0640);
        expect_error(3, "attestation.key-file", "chmod 600");
        write_file("dev.key", KEY "\n", 0600);
        c = expect_ok();
        config_free(c);

        /* content */
        write_file("bad.key", "not base64 !!!\n", 0600);
        load("id-scope = \"0ne00000A0A\";\nregistration-id = \"dev-1\";\n"
             "attestation = { type = \"symmetric-key\"; key-file = \"bad.key\"; };\n");
        expect_error(3, "attestation.key-file", "not hold a valid base64 key");
        write_file("empty.key", "\n", 0600);
        load("id-scope = \"0ne00000A0A\";\nregistration-id = \"dev-1\";\n"
             "attestation = { type = \"symmetric-key\"; key-file = \"empty.key\"; };\n");
        expect_error(3, "attestation.key-file", "is empty");
        load("id-scope = \"0ne00000A0A\";\nregistration-id = \"dev-1\";\n"
             "attestation = { type = \"symmetric-key\"; key-file = \"absent.key\"; };\n");
        expect_error(3, "attestation.key-file", "No such file");

        /* group key: the device key is derived (published example) */
        write_file("group.key", "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==\n", 0600);
        load("id-scope = \"0ne00000A0A\";\nregistration-id = \"sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6\";\n"
             "attestation = { type = \"symmetric-key\"; group-key-file = \"group.key\"; };\n");
        c = expect_ok();
        REQUIRE(c);
        CHECK(c->group_key);
        {
                _cleanup_secret_ char *key = NULL;
                _cleanup_free_ char *err = NULL;
                CHECK_INT(config_read_device_key(c, &key, &err), 0);
                CHECK_STR(key, "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=");
        }
        config_free(c);
}

static void test_credentials(void) {
        _cleanup_free_ char *creds = NULL, *expect = NULL;
        Config *c;

        REQUIRE(asprintf(&creds, "%s/creds", dir) >= 0);
        (void) mkdir(creds, 0700);
        write_file("creds/dps-key", KEY, 0400);

        load("id-scope = \"0ne00000A0A\";\nregistration-id = \"dev-1\";\n"
             "attestation = { type = \"symmetric-key\"; key-file = \"credential:dps-key\"; };\n");
        unsetenv("CREDENTIALS_DIRECTORY");
        expect_error(3, "attestation.key-file", "$CREDENTIALS_DIRECTORY, which is not set");

        setenv("CREDENTIALS_DIRECTORY", creds, 1);
        c = expect_ok();
        REQUIRE(c);
        REQUIRE(asprintf(&expect, "%s/dps-key", creds) >= 0);
        CHECK_STR(c->key_file, expect);
        {
                _cleanup_secret_ char *key = NULL;
                _cleanup_free_ char *err = NULL;
                CHECK_INT(config_read_device_key(c, &key, &err), 0);
                CHECK_STR(key, KEY);
        }
        config_free(c);

        load("id-scope = \"0ne00000A0A\";\nregistration-id = \"dev-1\";\n"
             "attestation = { type = \"symmetric-key\"; key-file = \"credential:../dev.key\"; };\n");
        expect_error(3, "attestation.key-file", "plain file name");
        unsetenv("CREDENTIALS_DIRECTORY");
}

static void test_registration_id_sources(void) {
        _cleanup_free_ char *mid = NULL, *cmd = NULL;
        char host[256] = "";
        Config *c;

        write_file("serial", "  SN-0042_a \nsecond line\n", 0644);
        load("id-scope = \"0ne00000A0A\";\nregistration-id-source = \"file:serial\";\n"
             "attestation = { type = \"symmetric-key\"; key-file = \"dev.key\"; };\n");
        c = expect_ok();
        REQUIRE(c);
        CHECK_STR(c->registration_id, "SN-0042_a");
        CHECK_STR(c->registration_id_source, "file:serial");
        config_free(c);

        write_file("serial", "bad id!\n", 0644);
        expect_error(2, "registration-id-source", "\"bad id!\" is not a valid registration id");

        load("id-scope = \"0ne00000A0A\";\nregistration-id-source = \"file:absent\";\n"
             "attestation = { type = \"symmetric-key\"; key-file = \"dev.key\"; };\n");
        expect_error(2, "registration-id-source", "cannot read");

        load("id-scope = \"0ne00000A0A\";\nregistration-id-source = \"serial-number\";\n"
             "attestation = { type = \"symmetric-key\"; key-file = \"dev.key\"; };\n");
        expect_error(2, "registration-id-source", "valid: \"machine-id\", \"hostname\", \"file:PATH\", \"certificate-cn\"");

        load("id-scope = \"0ne00000A0A\";\nregistration-id-source = \"certificate-cn\";\n"
             "attestation = { type = \"symmetric-key\"; key-file = \"dev.key\"; };\n");
        expect_error(2, "registration-id-source", "needs attestation.type = \"x509\"");

        REQUIRE(gethostname(host, sizeof host - 1) == 0);
        load("id-scope = \"0ne00000A0A\";\nregistration-id-source = \"hostname\";\n"
             "attestation = { type = \"symmetric-key\"; key-file = \"dev.key\"; };\n");
        c = expect_ok();
        REQUIRE(c);
        CHECK_STR(c->registration_id, host);
        config_free(c);

        if (read_file_full("/etc/machine-id", 4096, &mid, NULL) == 0 && strlen(strstrip(mid)) > 0) {
                load("id-scope = \"0ne00000A0A\";\nregistration-id-source = \"machine-id\";\n"
                     "attestation = { type = \"symmetric-key\"; key-file = \"dev.key\"; };\n");
                c = expect_ok();
                REQUIRE(c);
                CHECK_STR(c->registration_id, mid);
                config_free(c);
        } else
                fprintf(stderr, "no /etc/machine-id here: machine-id source not checked\n");

        /* certificate-cn, with a throw-away certificate from the openssl CLI */
        REQUIRE(asprintf(&cmd, "cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
                               "-keyout x.key -out x.crt -days 2 -subj /CN=dev-cn-7 2>/dev/null && chmod 600 x.key", dir) >= 0);
        REQUIRE(system(cmd) == 0);
        load("id-scope = \"0ne00000A0A\";\nregistration-id-source = \"certificate-cn\";\n"
             "attestation = { type = \"x509\"; certificate-file = \"x.crt\"; key-file = \"x.key\"; };\n");
        c = expect_ok();
        REQUIRE(c);
        CHECK_STR(c->registration_id, "dev-cn-7");
        CHECK_INT(c->attestation, ATTESTATION_X509);
        CHECK(c->certificate_not_before_usec > 0);
        CHECK(c->certificate_not_before_usec <= now_usec(CLOCK_REALTIME) + 60 * USEC_PER_SEC);
        CHECK(c->certificate_sha256 && strlen(c->certificate_sha256) == 64);
        config_free(c);

        /* an X.509 key readable by others is refused too */
        {
                _cleanup_free_ char *k = NULL;
                REQUIRE(asprintf(&k, "%s/x.key", dir) >= 0);
                REQUIRE(chmod(k, 0644) == 0);
                expect_error(3, "attestation.key-file", "chmod 600");
        }
}

static void test_fingerprint(void) {
        _cleanup_free_ char *a = NULL, *b = NULL, *c2 = NULL, *d = NULL;
        Config *c;

        load(BASE);
        c = expect_ok();
        REQUIRE(c);
        CHECK_INT(config_fingerprint(c, &a), 0);
        config_free(c);

        load(BASE "retry = { min-sec = 3; };\npayload = \"1\";\n");   /* not identity */
        c = expect_ok();
        REQUIRE(c);
        CHECK_INT(config_fingerprint(c, &b), 0);
        config_free(c);
        CHECK_STR(a, b);

        load("id-scope = \"0ne00000A0A\";\nregistration-id = \"dev-2\";\n"
             "attestation = { type = \"symmetric-key\"; key-file = \"dev.key\"; };\n");
        c = expect_ok();
        REQUIRE(c);
        CHECK_INT(config_fingerprint(c, &c2), 0);
        config_free(c);
        CHECK(a && c2 && !streq(a, c2));

        load(BASE "endpoint = \"other.example.net\";\n");
        c = expect_ok();
        REQUIRE(c);
        CHECK_INT(config_fingerprint(c, &d), 0);
        config_free(c);
        CHECK(a && d && !streq(a, d));
}

int main(void) {
        _cleanup_free_ char *cmd = NULL;

        REQUIRE(mkdtemp(dir));
        snprintf(conf_path, sizeof conf_path, "%s/dps.conf", dir);
        write_file("dev.key", KEY "\n", 0600);

        test_defaults();
        test_errors();
        test_key_files();
        test_credentials();
        test_registration_id_sources();
        test_fingerprint();

        REQUIRE(asprintf(&cmd, "rm -rf '%s'", dir) >= 0);
        (void) system(cmd);
        return test_summary("test-dpsd-conf");
}
