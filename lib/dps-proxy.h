/* SPDX-License-Identifier: MIT */
/* dps-proxy.h: HTTP proxies for the DPS connection: URLs, https_proxy and no_proxy */
#pragma once

/*
 * Pure functions: dpsd takes its proxy from its config or the environment,
 * dps-tunnel.c connects through it with HTTP CONNECT.
 */

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- proxies ------------------------------------------------------------ */

/* An HTTP proxy reached with CONNECT. user and password are secrets
 * (percent-decoded); they are wiped by dps_proxy_done() and never logged. */
typedef struct DpsProxy {
        char *host;             /* name or address, IPv6 without brackets; NULL = no proxy */
        uint16_t port;
        char *user;             /* NULL when the URL has no userinfo */
        char *password;         /* NULL when the URL has no ':' in its userinfo */
} DpsProxy;

/* curl's default when a proxy URL has no port. */
#define DPS_PROXY_DEFAULT_PORT 1080

/* Parses "http://[user[:pass]@]host[:port][/]" (scheme optional, as in the
 * https_proxy convention; host may be "[v6addr]"). -EINVAL for a malformed
 * URL, -EPROTONOSUPPORT for a scheme other than http. */
int dps_proxy_parse(const char *url, DpsProxy *ret);

/* Picks the proxy for target_host from the environment: https_proxy, then
 * HTTPS_PROXY; skipped when no_proxy (then NO_PROXY) lists "*" or a suffix of
 * target_host on a label boundary ("example.com" and ".example.com" both
 * match "a.example.com"; case-insensitive; a ":port" on an entry is ignored;
 * no CIDR). Returns 1 and fills *ret when a proxy applies, 0 (and *ret
 * zeroed) when none does, <0 for an unparseable proxy variable. */
int dps_proxy_from_env(const char *target_host, DpsProxy *ret);

/* Returns 1 when no_proxy-style list excludes host, 0 otherwise. */
int dps_proxy_excluded(const char *no_proxy, const char *host);

/* The proxy URL with its user info replaced by "***" (or without user info): what logs may show. */
int dps_proxy_to_string(const DpsProxy *p, char **ret);

int dps_proxy_copy(const DpsProxy *p, DpsProxy *ret);
void dps_proxy_done(DpsProxy *p);

static inline void dps_proxy_donep(DpsProxy *p) { dps_proxy_done(p); }

#ifdef __cplusplus
}
#endif
