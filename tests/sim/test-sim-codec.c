/* SPDX-License-Identifier: MIT */
/* test-sim-codec: dps-sim's MQTT framing/decoding and SAS/username checks, as pure functions */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dps-macro.h"
#include "sim-auth.h"
#include "sim-mqtt.h"

static void test_frame(void) {
        SimMqttPacket p;
        /* PINGREQ */
        const uint8_t ping[] = { 0xc0, 0x00 };
        assert(sim_mqtt_frame(ping, 1, 1000, &p) == 0);
        assert(sim_mqtt_frame(ping, 2, 1000, &p) == 1 && p.type == SIM_MQTT_PINGREQ && p.total == 2);
        /* remaining length 321 = 0xc1 0x02, body incomplete then complete */
        uint8_t big[3 + 321] = { 0x30, 0xc1, 0x02 };
        assert(sim_mqtt_frame(big, 100, 1000, &p) == 0);
        assert(sim_mqtt_frame(big, sizeof big, 1000, &p) == 1 && p.body_len == 321 && p.total == sizeof big);
        assert(sim_mqtt_frame(big, sizeof big, 300, &p) == -EMSGSIZE);
        /* five length bytes */
        const uint8_t five[] = { 0x30, 0xff, 0xff, 0xff, 0xff, 0x01 };
        assert(sim_mqtt_frame(five, sizeof five, SIZE_MAX, &p) == -EBADMSG);
        /* four bytes, each with continuation: still incomplete is malformed at the 5th */
        assert(sim_mqtt_frame(five, 4, SIZE_MAX, &p) == 0);
        /* reserved type 0 and 15, bad flags, QoS 3 */
        const uint8_t t0[] = { 0x00, 0x00 }, t15[] = { 0xf0, 0x00 }, sub0[] = { 0x80, 0x00 }, q3[] = { 0x36, 0x00 },
                      conn1[] = { 0x11, 0x00 };
        assert(sim_mqtt_frame(t0, 2, 100, &p) == -EBADMSG);
        assert(sim_mqtt_frame(t15, 2, 100, &p) == -EBADMSG);
        assert(sim_mqtt_frame(sub0, 2, 100, &p) == -EBADMSG);
        assert(sim_mqtt_frame(q3, 2, 100, &p) == -EBADMSG);
        assert(sim_mqtt_frame(conn1, 2, 100, &p) == -EBADMSG);
}

static SimMqttPacket body_packet(uint8_t type, uint8_t flags, const uint8_t *b, size_t n) {
        return (SimMqttPacket) { .type = type, .flags = flags, .body = b, .body_len = n, .total = n + 2 };
}

static void test_connect(void) {
        static const uint8_t good[] = {
                0, 4, 'M', 'Q', 'T', 'T', 4, 0xc2, 0, 60,
                0, 3, 'd', 'e', 'v',
                0, 1, 'u',
                0, 3, 'p', 0, 'w',      /* a password may hold NUL */
        };
        SimMqttConnect c = {};
        SimMqttPacket p = body_packet(SIM_MQTT_CONNECT, 0, good, sizeof good);
        assert(sim_mqtt_parse_connect(&p, &c) == 0);
        assert(streq(c.client_id, "dev") && streq(c.username, "u") && c.password_len == 3);
        assert(c.clean_session && c.keep_alive == 60 && c.protocol_level == 4);
        sim_mqtt_connect_done(&c);

        uint8_t v3[sizeof good];
        memcpy(v3, good, sizeof good);
        v3[6] = 3;
        p = body_packet(SIM_MQTT_CONNECT, 0, v3, sizeof v3);
        assert(sim_mqtt_parse_connect(&p, &c) == -EPROTONOSUPPORT);
        sim_mqtt_connect_done(&c);

        /* every truncation of a valid CONNECT is malformed, never a crash */
        for (size_t n = 0; n < sizeof good; n++) {
                p = body_packet(SIM_MQTT_CONNECT, 0, good, n);
                assert(sim_mqtt_parse_connect(&p, &c) < 0);
        }
        /* reserved flag bit, password without user name, trailing garbage */
        uint8_t bad[sizeof good + 1];
        memcpy(bad, good, sizeof good);
        bad[7] = 0xc3;
        p = body_packet(SIM_MQTT_CONNECT, 0, bad, sizeof good);
        assert(sim_mqtt_parse_connect(&p, &c) == -EBADMSG);
        bad[7] = 0x42;
        p = body_packet(SIM_MQTT_CONNECT, 0, bad, sizeof good);
        assert(sim_mqtt_parse_connect(&p, &c) == -EBADMSG);
        memcpy(bad, good, sizeof good);
        bad[sizeof good] = 0;
        p = body_packet(SIM_MQTT_CONNECT, 0, bad, sizeof bad);
        assert(sim_mqtt_parse_connect(&p, &c) == -EBADMSG);
        /* a client id that is not UTF-8 */
        memcpy(bad, good, sizeof good);
        bad[13] = 0xc0;
        p = body_packet(SIM_MQTT_CONNECT, 0, bad, sizeof good);
        assert(sim_mqtt_parse_connect(&p, &c) == -EBADMSG);
}

static void test_publish_subscribe_roundtrip(void) {
        SimBuf b = {};
        SimMqttPacket p;
        SimMqttPublish m = {};
        static const char body[] = "{\"a\":1}";
        assert(sim_mqtt_put_publish(&b, "$dps/registrations/res/202/?$rid=1", 1, 7, body, strlen(body)) == 0);
        assert(sim_mqtt_frame(sim_buf_head(&b), sim_buf_size(&b), 1 << 20, &p) == 1);
        assert(p.type == SIM_MQTT_PUBLISH && p.flags == 0x02);
        assert(sim_mqtt_parse_publish(&p, &m) == 0);
        assert(streq(m.topic, "$dps/registrations/res/202/?$rid=1") && m.qos == 1 && m.packet_id == 7);
        assert(m.payload_len == strlen(body) && memcmp(m.payload, body, m.payload_len) == 0);
        sim_mqtt_publish_done(&m);
        sim_buf_done(&b);

        /* SUBSCRIBE with two filters, QoS 2 and 1 */
        static const uint8_t sub[] = { 0, 9, 0, 3, 'a', '/', '#', 2, 0, 1, 'b', 1 };
        SimMqttSubscribe s = {};
        p = body_packet(SIM_MQTT_SUBSCRIBE, 2, sub, sizeof sub);
        assert(sim_mqtt_parse_subscribe(&p, false, &s) == 0);
        assert(s.packet_id == 9 && s.n == 2 && streq(s.filters[0], "a/#") && s.qos[0] == 2 && s.qos[1] == 1);
        sim_mqtt_subscribe_done(&s);
        /* no filter at all, requested QoS 3, packet id 0 */
        p = body_packet(SIM_MQTT_SUBSCRIBE, 2, sub, 2);
        assert(sim_mqtt_parse_subscribe(&p, false, &s) == -EBADMSG);
        uint8_t q3[sizeof sub];
        memcpy(q3, sub, sizeof sub);
        q3[7] = 3;
        p = body_packet(SIM_MQTT_SUBSCRIBE, 2, q3, sizeof q3);
        assert(sim_mqtt_parse_subscribe(&p, false, &s) == -EBADMSG);
        q3[1] = 0;
        q3[7] = 1;
        p = body_packet(SIM_MQTT_SUBSCRIBE, 2, q3, sizeof q3);
        assert(sim_mqtt_parse_subscribe(&p, false, &s) == -EBADMSG);

        /* wildcard in a PUBLISH topic */
        static const uint8_t wild[] = { 0, 3, 'a', '/', '#' };
        p = body_packet(SIM_MQTT_PUBLISH, 0, wild, sizeof wild);
        assert(sim_mqtt_parse_publish(&p, &m) == -EBADMSG);
}

static void test_username(void) {
        SimUsername u = {};
        assert(sim_auth_parse_username("0ne00000A0A/registrations/dev-1/api-version=2019-03-31", &u) == 0);
        assert(streq(u.id_scope, "0ne00000A0A") && streq(u.registration_id, "dev-1") && streq(u.api_version, "2019-03-31"));
        sim_username_done(&u);
        assert(sim_auth_parse_username("s/registrations/d/api-version=2025-07-01-preview&ClientVersion=x%2Fy&z=1", &u) == 0);
        assert(streq(u.api_version, "2025-07-01-preview"));
        sim_username_done(&u);
        assert(sim_auth_parse_username("s/registrations/d", &u) == -EBADMSG);
        assert(sim_auth_parse_username("s/registrations/d/api-version=", &u) == -EBADMSG);
        assert(sim_auth_parse_username("/registrations/d/api-version=1", &u) == -EBADMSG);
        assert(sim_auth_parse_username("s/devices/d/api-version=1", &u) == -EBADMSG);
}

static void test_sas(void) {
        /* The published group-key example from the protocol doc. */
        static const char *group = "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==";
        static const char *id = "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6";
        _cleanup_secret_ char *key = NULL, *tok = NULL, *tok_other = NULL;
        const char *reason = NULL;
        assert(dps_sas_derive_key(group, id, &key) == 0);
        assert(streq(key, "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="));
        uint64_t now = (uint64_t) time(NULL);
        assert(dps_sas_sign("0ne00000A0A", id, key, now + 3600, &tok) == 0);
        const char *keys[] = { key, NULL };
        assert(sim_auth_check_sas(tok, "0ne00000A0A", id, keys, now, &reason) == 0 && !reason);
        /* case-insensitive resource match, other device, other scope, expiry */
        assert(sim_auth_check_sas(tok, "0NE00000a0a", "SN-007-888-abc-mac-a1-b2-c3-d4-e5-f6", keys, now, NULL) == 0);
        assert(sim_auth_check_sas(tok, "0ne00000A0A", "other", keys, now, &reason) == -EPERM && reason);
        assert(sim_auth_check_sas(tok, "0ne00000A0B", id, keys, now, NULL) == -EPERM);
        assert(sim_auth_check_sas(tok, "0ne00000A0A", id, keys, now + 3600, NULL) == -EKEYEXPIRED);
        /* a token signed with another key */
        assert(dps_sas_sign("0ne00000A0A", id, group, now + 3600, &tok_other) == 0);
        assert(sim_auth_check_sas(tok_other, "0ne00000A0A", id, keys, now, NULL) == -EACCES);
        const char *both[] = { group, key, NULL };      /* secondary key matches */
        assert(sim_auth_check_sas(tok_other, "0ne00000A0A", id, both, now, NULL) == 0);
        /* malformed */
        assert(sim_auth_check_sas("SharedAccessSignature sr=a&se=1", "s", "d", keys, now, NULL) == -EBADMSG);
        assert(sim_auth_check_sas("Bearer x", "s", "d", keys, now, NULL) == -EBADMSG);
        assert(sim_auth_check_sas("SharedAccessSignature sr=a&sr=a&sig=x&se=1", "s", "d", keys, now, NULL) == -EBADMSG);
        assert(sim_auth_check_sas("SharedAccessSignature sr=a&sig=x&se=12x", "s", "d", keys, now, NULL) == -EBADMSG);
}

int main(void) {
        test_frame();
        test_connect();
        test_publish_subscribe_roundtrip();
        test_username();
        test_sas();
        printf("test-sim-codec: ok\n");
        return 0;
}
