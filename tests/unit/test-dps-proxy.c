/* SPDX-License-Identifier: MIT */
/* test-dps-proxy.c: proxy URLs, their redacted form, no_proxy matching and the https_proxy environment */
#include <errno.h>
#include <stdlib.h>

#include "dps-macro.h"
#include "dps-proxy.h"
#include "test-util.h"

static void test_proxy_parse(void) {
        DpsProxy p;

        CHECK_INT(dps_proxy_parse("http://proxy.example.com:3128", &p), 0);
        CHECK_STR(p.host, "proxy.example.com");
        CHECK_INT(p.port, 3128);
        CHECK(!p.user && !p.password);
        dps_proxy_done(&p);

        /* scheme optional, trailing slash allowed, default port like curl */
        CHECK_INT(dps_proxy_parse("proxy:8080/", &p), 0);
        CHECK_STR(p.host, "proxy");
        CHECK_INT(p.port, 8080);
        dps_proxy_done(&p);
        CHECK_INT(dps_proxy_parse("HTTP://10.0.0.1", &p), 0);
        CHECK_STR(p.host, "10.0.0.1");
        CHECK_INT(p.port, DPS_PROXY_DEFAULT_PORT);
        dps_proxy_done(&p);

        /* credentials, percent-decoded; '@' and ':' in the password */
        CHECK_INT(dps_proxy_parse("http://alice:s%40cr%3At@127.0.0.1:3128", &p), 0);
        CHECK_STR(p.user, "alice");
        CHECK_STR(p.password, "s@cr:t");
        CHECK_STR(p.host, "127.0.0.1");
        dps_proxy_done(&p);
        CHECK(!p.host && !p.user && !p.password);

        CHECK_INT(dps_proxy_parse("http://bob@[::1]:3128", &p), 0);
        CHECK_STR(p.user, "bob");
        CHECK(p.password == NULL);
        CHECK_STR(p.host, "::1");
        CHECK_INT(p.port, 3128);
        dps_proxy_done(&p);

        static const char *const bad[] = {
                "", "http://", "http://:3128", "http://host:0", "http://host:65536", "http://host:12a",
                "http://host:", "http://host/path", "http://ho st:1", "http://[::1", "http://[zz]:1",
                "http://[::1]x", "http://a:b@", "http://u:%zz@h:1",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                int r = dps_proxy_parse(bad[i], &p);
                if (r != -EINVAL)
                        fprintf(stderr, "proxy URL \"%s\" gave %d\n", bad[i], r);
                CHECK_INT(r, -EINVAL);
        }
        CHECK_INT(dps_proxy_parse("https://proxy:443", &p), -EPROTONOSUPPORT);
        CHECK_INT(dps_proxy_parse("socks5://proxy:1080", &p), -EPROTONOSUPPORT);
}

static void test_proxy_to_string(void) {
        DpsProxy p;
        _cleanup_free_ char *s = NULL, *s2 = NULL, *s3 = NULL;

        CHECK_INT(dps_proxy_parse("http://alice:hunter2@proxy:3128", &p), 0);
        CHECK_INT(dps_proxy_to_string(&p, &s), 0);
        CHECK_STR(s, "http://***@proxy:3128");
        CHECK(!strstr(s, "hunter2") && !strstr(s, "alice"));
        dps_proxy_done(&p);

        CHECK_INT(dps_proxy_parse("http://[::1]:8888", &p), 0);
        CHECK_INT(dps_proxy_to_string(&p, &s2), 0);
        CHECK_STR(s2, "http://[::1]:8888");

        DpsProxy c;
        CHECK_INT(dps_proxy_copy(&p, &c), 0);
        CHECK_INT(dps_proxy_to_string(&c, &s3), 0);
        CHECK_STR(s3, s2);
        dps_proxy_done(&c);
        dps_proxy_done(&p);
}

static void test_no_proxy(void) {
        static const struct { const char *list, *host; int excluded; } v[] = {
                { "*", "anything.example", 1 },
                { "example.com", "example.com", 1 },
                { "example.com", "a.example.com", 1 },
                { ".example.com", "a.b.example.com", 1 },
                { ".example.com", "example.com", 1 },
                { "example.com", "badexample.com", 0 },
                { "example.com", "example.com.evil", 0 },
                { "EXAMPLE.com", "a.Example.COM", 1 },
                { "localhost, 127.0.0.1 ,::1", "127.0.0.1", 1 },
                { "localhost,127.0.0.1", "127.0.0.10", 0 },
                { "foo, bar.net:443", "x.bar.net", 1 },
                { "[::1]:443", "::1", 1 },
                { "", "example.com", 0 },
                { ",,", "example.com", 0 },
                { "a.b", "b", 0 },
                { "azure-devices-provisioning.net", "global.azure-devices-provisioning.net.", 1 },
        };

        for (size_t i = 0; i < ELEMENTSOF(v); i++) {
                int r = dps_proxy_excluded(v[i].list, v[i].host);
                if (r != v[i].excluded)
                        fprintf(stderr, "no_proxy \"%s\" host \"%s\": %d\n", v[i].list, v[i].host, r);
                CHECK_INT(r, v[i].excluded);
        }
}

static void test_proxy_env(void) {
        DpsProxy p;

        unsetenv("https_proxy");
        unsetenv("HTTPS_PROXY");
        unsetenv("no_proxy");
        unsetenv("NO_PROXY");
        CHECK_INT(dps_proxy_from_env("dps.example", &p), 0);
        CHECK(p.host == NULL);

        setenv("HTTPS_PROXY", "http://upper:3128", 1);
        CHECK_INT(dps_proxy_from_env("dps.example", &p), 1);
        CHECK_STR(p.host, "upper");
        dps_proxy_done(&p);

        /* lower case wins, as in curl */
        setenv("https_proxy", "http://u:pw@lower:8080", 1);
        CHECK_INT(dps_proxy_from_env("dps.example", &p), 1);
        CHECK_STR(p.host, "lower");
        CHECK_INT(p.port, 8080);
        CHECK_STR(p.password, "pw");
        dps_proxy_done(&p);

        setenv("NO_PROXY", "other.net", 1);
        CHECK_INT(dps_proxy_from_env("dps.example", &p), 1);
        dps_proxy_done(&p);
        setenv("no_proxy", "localhost,.example", 1);
        CHECK_INT(dps_proxy_from_env("dps.example", &p), 0);
        CHECK(p.host == NULL);
        CHECK_INT(dps_proxy_from_env("dps.example.org", &p), 1);
        dps_proxy_done(&p);
        setenv("no_proxy", "*", 1);
        CHECK_INT(dps_proxy_from_env("dps.example.org", &p), 0);

        unsetenv("no_proxy");
        unsetenv("NO_PROXY");
        setenv("https_proxy", "ftp://x:1", 1);
        CHECK_INT(dps_proxy_from_env("dps.example", &p), -EPROTONOSUPPORT);

        unsetenv("https_proxy");
        unsetenv("HTTPS_PROXY");
}

int main(void) {
        test_proxy_parse();
        test_proxy_to_string();
        test_no_proxy();
        test_proxy_env();
        return test_summary("test-dps-proxy");
}
