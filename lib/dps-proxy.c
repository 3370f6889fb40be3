/* SPDX-License-Identifier: MIT */
/* dps-proxy.c: HTTP proxies for the DPS connection: URLs, https_proxy and no_proxy */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dps-macro.h"
#include "dps-proxy.h"
#include "dps-util.h"

/* ---- proxies ------------------------------------------------------------ */

void dps_proxy_done(DpsProxy *p) {
        if (!p)
                return;
        free(p->host);
        dps_secret_free(p->user);
        dps_secret_free(p->password);
        *p = (DpsProxy) {};
}

static int parse_port(const char *s, size_t len, uint16_t *ret) {
        unsigned long v = 0;

        if (len == 0 || len > 5)
                return -EINVAL;
        for (size_t i = 0; i < len; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return -EINVAL;
                v = v * 10 + (unsigned long) (s[i] - '0');
        }
        if (v == 0 || v > 65535)
                return -EINVAL;
        *ret = (uint16_t) v;
        return 0;
}

static bool host_char_ok(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '-' || c == '.' || c == '_';
}

int dps_proxy_parse(const char *url, DpsProxy *ret) {
        _cleanup_(dps_proxy_donep) DpsProxy p = {};
        const char *s, *at, *end, *hp, *colon;
        int r;

        if (!url || !ret)
                return -EINVAL;

        s = strstr(url, "://");
        if (s) {
                if ((size_t) (s - url) != 4 || strncasecmp(url, "http", 4) != 0)
                        return -EPROTONOSUPPORT;
                s += 3;
        } else
                s = url;

        /* authority ends at '/', '?', '#' or the end; only "/" may follow */
        end = s + strcspn(s, "/?#");
        if (*end && !streq(end, "/"))
                return -EINVAL;
        if (end == s)
                return -EINVAL;

        /* userinfo: the last '@' before the host */
        at = NULL;
        for (const char *c = s; c < end; c++)
                if (*c == '@')
                        at = c;
        hp = s;
        if (at) {
                const char *sep = memchr(s, ':', (size_t) (at - s));

                r = dps_url_decode(s, (size_t) ((sep ?: at) - s), &p.user);
                if (r < 0)
                        return r;
                if (sep) {
                        r = dps_url_decode(sep + 1, (size_t) (at - sep - 1), &p.password);
                        if (r < 0)
                                return r;
                }
                hp = at + 1;
        }

        if (*hp == '[') {
                const char *rb = memchr(hp, ']', (size_t) (end - hp));
                struct in6_addr a6;
                char buf[INET6_ADDRSTRLEN];

                if (!rb || (size_t) (rb - hp - 1) >= sizeof(buf))
                        return -EINVAL;
                memcpy(buf, hp + 1, (size_t) (rb - hp - 1));
                buf[rb - hp - 1] = 0;
                if (inet_pton(AF_INET6, buf, &a6) != 1)
                        return -EINVAL;
                p.host = strdup(buf);
                colon = rb + 1 < end ? rb + 1 : NULL;
                if (colon && *colon != ':')
                        return -EINVAL;
        } else {
                colon = memchr(hp, ':', (size_t) (end - hp));
                size_t hl = (size_t) ((colon ?: end) - hp);
                for (size_t i = 0; i < hl; i++)
                        if (!host_char_ok(hp[i]))
                                return -EINVAL;
                p.host = strndup(hp, hl);
        }
        if (!p.host)
                return -ENOMEM;
        if (!*p.host)
                return -EINVAL;

        if (colon) {
                r = parse_port(colon + 1, (size_t) (end - colon - 1), &p.port);
                if (r < 0)
                        return r;
        } else
                p.port = DPS_PROXY_DEFAULT_PORT;

        *ret = p;
        p = (DpsProxy) {};
        return 0;
}

int dps_proxy_excluded(const char *no_proxy, const char *host) {
        size_t hl;

        if (strempty(no_proxy) || strempty(host))
                return 0;
        hl = strlen(host);
        while (hl > 0 && host[hl - 1] == '.')   /* "example.com." is example.com */
                hl--;

        for (const char *e = no_proxy; *e; ) {
                size_t n;
                const char *tok;

                e += strspn(e, ", \t");
                tok = e;
                n = strcspn(e, ", \t");
                e += n;
                if (n == 0)
                        continue;
                if (n == 1 && *tok == '*')
                        return 1;

                /* "[::1]:80", "host:80": drop the port and brackets */
                if (*tok == '[') {
                        const char *rb = memchr(tok, ']', n);
                        if (!rb)
                                continue;
                        tok++;
                        n = (size_t) (rb - tok);
                } else {
                        const char *c = memchr(tok, ':', n);
                        if (c && !memchr(c + 1, ':', n - (size_t) (c - tok) - 1))
                                n = (size_t) (c - tok);
                }
                while (n > 0 && *tok == '.') {
                        tok++;
                        n--;
                }
                while (n > 0 && tok[n - 1] == '.')
                        n--;
                if (n == 0 || n > hl)
                        continue;
                if (strncasecmp(host + hl - n, tok, n) != 0)
                        continue;
                if (n == hl || host[hl - n - 1] == '.')
                        return 1;
        }
        return 0;
}

int dps_proxy_from_env(const char *target_host, DpsProxy *ret) {
        const char *url, *no;
        DpsProxy p;
        int r;

        if (!ret)
                return -EINVAL;

        url = getenv("https_proxy");
        if (strempty(url))
                url = getenv("HTTPS_PROXY");
        if (strempty(url)) {
                *ret = (DpsProxy) {};
                return 0;
        }

        no = getenv("no_proxy");
        if (strempty(no))
                no = getenv("NO_PROXY");
        if (target_host && dps_proxy_excluded(no, target_host)) {
                *ret = (DpsProxy) {};
                return 0;
        }

        r = dps_proxy_parse(url, &p);
        if (r < 0)
                return r;
        *ret = p;
        return 1;
}

int dps_proxy_copy(const DpsProxy *p, DpsProxy *ret) {
        _cleanup_(dps_proxy_donep) DpsProxy c = {};

        if (!p || !ret)
                return -EINVAL;
        c.port = p->port;
        if ((p->host && !(c.host = strdup(p->host))) ||
            (p->user && !(c.user = strdup(p->user))) ||
            (p->password && !(c.password = strdup(p->password))))
                return -ENOMEM;
        *ret = c;
        c = (DpsProxy) {};
        return 0;
}

static bool is_ipv6_literal(const char *host) {
        return host && strchr(host, ':');
}

int dps_proxy_to_string(const DpsProxy *p, char **ret) {
        char *s;
        bool v6;

        if (!p || !p->host || !ret)
                return -EINVAL;
        v6 = is_ipv6_literal(p->host);
        if (asprintf(&s, "http://%s%s%s%s:%u", p->user ? "***@" : "", v6 ? "[" : "", p->host,
                     v6 ? "]" : "", p->port) < 0)
                return -ENOMEM;
        *ret = s;
        return 0;
}
