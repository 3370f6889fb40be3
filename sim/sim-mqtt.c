/* SPDX-License-Identifier: MIT */
/* sim-mqtt.c: MQTT 3.1.1 packet framing, decoding and encoding for dps-sim (pure, bounded) */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dps-macro.h"
#include "dps-util.h"
#include "sim-mqtt.h"

/* A bounded reader over one packet body. */
typedef struct Reader {
        const uint8_t *p;
        size_t left;
} Reader;

static int read_u8(Reader *r, uint8_t *ret) {
        if (r->left < 1)
                return -EBADMSG;
        *ret = r->p[0];
        r->p++, r->left--;
        return 0;
}

static int read_u16(Reader *r, uint16_t *ret) {
        if (r->left < 2)
                return -EBADMSG;
        *ret = (uint16_t) (r->p[0] << 8 | r->p[1]);
        r->p += 2, r->left -= 2;
        return 0;
}

/* Well-formed UTF-8 without NUL, surrogates or overlong forms (section
 * 1.5.3: anything else is malformed and closes the connection). */
static bool utf8_valid(const uint8_t *p, size_t n) {
        size_t i = 0;
        while (i < n) {
                uint8_t c = p[i];
                size_t len;
                uint32_t cp;
                if (c == 0)
                        return false;
                if (c < 0x80) {
                        i++;
                        continue;
                }
                if ((c & 0xe0) == 0xc0)
                        len = 2, cp = c & 0x1f;
                else if ((c & 0xf0) == 0xe0)
                        len = 3, cp = c & 0x0f;
                else if ((c & 0xf8) == 0xf0)
                        len = 4, cp = c & 0x07;
                else
                        return false;
                if (i + len > n)
                        return false;
                for (size_t k = 1; k < len; k++) {
                        if ((p[i + k] & 0xc0) != 0x80)
                                return false;
                        cp = cp << 6 | (p[i + k] & 0x3f);
                }
                if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
                    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
                        return false;
                i += len;
        }
        return true;
}

/* Reads a length-prefixed field into a NUL-terminated copy. Strings (utf8
 * true) must be well-formed UTF-8 without NUL (MQTT 3.1.1 section 1.5.3);
 * binary fields (the password) may hold anything. */
static int read_str(Reader *r, bool utf8, char **ret, size_t *ret_len) {
        uint16_t n;
        int k = read_u16(r, &n);
        if (k < 0)
                return k;
        if (r->left < n)
                return -EBADMSG;
        if (utf8 && !utf8_valid(r->p, n))
                return -EBADMSG;
        char *s = malloc((size_t) n + 1);
        if (!s)
                return -ENOMEM;
        memcpy(s, r->p, n);
        s[n] = 0;
        r->p += n, r->left -= n;
        *ret = s;
        if (ret_len)
                *ret_len = n;
        return 0;
}

int sim_mqtt_frame(const uint8_t *buf, size_t len, size_t max, SimMqttPacket *ret) {
        if (len < 2)
                return 0;
        uint8_t type = buf[0] >> 4, flags = buf[0] & 0x0f;

        /* Section 2.2.2: reserved flag values; anything else is malformed. */
        switch (type) {
        case SIM_MQTT_PUBLISH:
                if ((flags & 0x06) == 0x06)     /* QoS 3 */
                        return -EBADMSG;
                break;
        case SIM_MQTT_PUBREL:
        case SIM_MQTT_SUBSCRIBE:
        case SIM_MQTT_UNSUBSCRIBE:
                if (flags != 0x02)
                        return -EBADMSG;
                break;
        case SIM_MQTT_CONNECT:
        case SIM_MQTT_CONNACK:
        case SIM_MQTT_PUBACK:
        case SIM_MQTT_PUBREC:
        case SIM_MQTT_PUBCOMP:
        case SIM_MQTT_SUBACK:
        case SIM_MQTT_UNSUBACK:
        case SIM_MQTT_PINGREQ:
        case SIM_MQTT_PINGRESP:
        case SIM_MQTT_DISCONNECT:
                if (flags != 0)
                        return -EBADMSG;
                break;
        default:                /* 0 and 15 are reserved: not an enum value */
                return -EBADMSG;
        }

        /* Section 2.2.3: remaining length, at most 4 bytes. */
        size_t remaining = 0, i;
        for (i = 0; ; i++) {
                if (i == 4)
                        return -EBADMSG;
                if (1 + i >= len)
                        return 0;
                uint8_t c = buf[1 + i];
                remaining |= (size_t) (c & 0x7f) << (7 * i);
                if (!(c & 0x80))
                        break;
        }
        size_t header = 2 + i;
        if (remaining > max || header + remaining > max)
                return -EMSGSIZE;
        if (len < header + remaining)
                return 0;

        *ret = (SimMqttPacket) {
                .type = type,
                .flags = flags,
                .body = buf + header,
                .body_len = remaining,
                .total = header + remaining,
        };
        return 1;
}

void sim_mqtt_connect_done(SimMqttConnect *c) {
        free(c->protocol_name);
        free(c->client_id);
        free(c->username);
        if (c->password)
                dps_memory_free(c->password, c->password_len);
        *c = (SimMqttConnect) {};
}

int sim_mqtt_parse_connect(const SimMqttPacket *p, SimMqttConnect *ret) {
        _cleanup_(sim_mqtt_connect_done) SimMqttConnect c = {};
        Reader r = { p->body, p->body_len };
        uint8_t flags;
        int k;

        if (p->type != SIM_MQTT_CONNECT)
                return -EINVAL;
        k = read_str(&r, true, &c.protocol_name, NULL);
        if (k < 0)
                return k;
        k = read_u8(&r, &c.protocol_level);
        if (k < 0)
                return k;
        k = read_u8(&r, &flags);
        if (k < 0)
                return k;
        k = read_u16(&r, &c.keep_alive);
        if (k < 0)
                return k;
        /* Section 3.1.2.3: the reserved flag must be zero. */
        if (flags & 0x01)
                return -EBADMSG;
        c.clean_session = flags & 0x02;
        c.will = flags & 0x04;
        uint8_t will_qos = (flags >> 3) & 0x03;
        bool will_retain = flags & 0x20, has_password = flags & 0x40, has_username = flags & 0x80;
        if (will_qos == 3 || (!c.will && (will_qos || will_retain)))
                return -EBADMSG;
        /* Section 3.1.2.9: a password without a user name is malformed. */
        if (has_password && !has_username)
                return -EBADMSG;

        if (!streq(c.protocol_name, "MQTT") || c.protocol_level != 4) {
                /* Section 3.1.2.2: answer CONNACK 1 and close. */
                *ret = c;
                c = (SimMqttConnect) {};
                return -EPROTONOSUPPORT;
        }

        k = read_str(&r, true, &c.client_id, NULL);
        if (k < 0)
                return k;
        if (c.will) {
                _cleanup_free_ char *wt = NULL, *wm = NULL;
                k = read_str(&r, true, &wt, NULL);
                if (k < 0)
                        return k;
                k = read_str(&r, false, &wm, NULL);
                if (k < 0)
                        return k;
        }
        if (has_username) {
                k = read_str(&r, true, &c.username, NULL);
                if (k < 0)
                        return k;
        }
        if (has_password) {
                k = read_str(&r, false, &c.password, &c.password_len);
                if (k < 0)
                        return k;
        }
        if (r.left != 0)
                return -EBADMSG;

        *ret = c;
        c = (SimMqttConnect) {};
        return 0;
}

void sim_mqtt_publish_done(SimMqttPublish *p) {
        free(p->topic);
        *p = (SimMqttPublish) {};
}

int sim_mqtt_parse_publish(const SimMqttPacket *p, SimMqttPublish *ret) {
        _cleanup_(sim_mqtt_publish_done) SimMqttPublish m = {};
        Reader r = { p->body, p->body_len };
        int k;

        if (p->type != SIM_MQTT_PUBLISH)
                return -EINVAL;
        m.dup = p->flags & 0x08;
        m.qos = (p->flags >> 1) & 0x03;
        m.retain = p->flags & 0x01;
        k = read_str(&r, true, &m.topic, NULL);
        if (k < 0)
                return k;
        /* Section 3.3.2.1: no wildcards in a topic name, and not empty. */
        if (!m.topic[0] || strpbrk(m.topic, "#+"))
                return -EBADMSG;
        if (m.qos > 0) {
                k = read_u16(&r, &m.packet_id);
                if (k < 0)
                        return k;
                if (m.packet_id == 0)
                        return -EBADMSG;
        }
        m.payload = r.p;
        m.payload_len = r.left;
        *ret = m;
        m = (SimMqttPublish) {};
        return 0;
}

void sim_mqtt_subscribe_done(SimMqttSubscribe *s) {
        for (size_t i = 0; i < s->n; i++)
                free(s->filters[i]);
        *s = (SimMqttSubscribe) {};
}

int sim_mqtt_parse_subscribe(const SimMqttPacket *p, bool unsubscribe, SimMqttSubscribe *ret) {
        _cleanup_(sim_mqtt_subscribe_done) SimMqttSubscribe s = {};
        Reader r = { p->body, p->body_len };
        int k;

        if (p->type != (unsubscribe ? SIM_MQTT_UNSUBSCRIBE : SIM_MQTT_SUBSCRIBE))
                return -EINVAL;
        k = read_u16(&r, &s.packet_id);
        if (k < 0)
                return k;
        if (s.packet_id == 0)
                return -EBADMSG;
        /* Sections 3.8.3 and 3.10.3: at least one filter. */
        if (r.left == 0)
                return -EBADMSG;
        while (r.left > 0) {
                if (s.n >= SIM_MQTT_MAX_FILTERS)
                        return -EBADMSG;
                k = read_str(&r, true, &s.filters[s.n], NULL);
                if (k < 0)
                        return k;
                s.n++;
                if (!s.filters[s.n - 1][0])
                        return -EBADMSG;
                if (!unsubscribe) {
                        uint8_t q;
                        k = read_u8(&r, &q);
                        if (k < 0)
                                return k;
                        if (q > 2)      /* reserved bits set or QoS 3 */
                                return -EBADMSG;
                        s.qos[s.n - 1] = q;
                }
        }
        *ret = s;
        s = (SimMqttSubscribe) {};
        return 0;
}

int sim_mqtt_parse_packet_id(const SimMqttPacket *p, uint16_t *ret) {
        if (p->body_len != 2)
                return -EBADMSG;
        *ret = (uint16_t) (p->body[0] << 8 | p->body[1]);
        return 0;
}

static int put_header(SimBuf *b, uint8_t first, size_t remaining) {
        uint8_t h[5];
        size_t n = 0;
        if (remaining > 268435455u)
                return -EMSGSIZE;
        h[n++] = first;
        do {
                uint8_t c = remaining & 0x7f;
                remaining >>= 7;
                if (remaining)
                        c |= 0x80;
                h[n++] = c;
        } while (remaining);
        return sim_buf_put(b, h, n);
}

int sim_mqtt_put_connack(SimBuf *b, bool session_present, uint8_t code) {
        uint8_t p[4] = { SIM_MQTT_CONNACK << 4, 2, session_present ? 1 : 0, code };
        return sim_buf_put(b, p, sizeof p);
}

int sim_mqtt_put_suback(SimBuf *b, uint16_t packet_id, const uint8_t *codes, size_t n) {
        int r = put_header(b, SIM_MQTT_SUBACK << 4, 2 + n);
        if (r < 0)
                return r;
        r = sim_buf_put_u16(b, packet_id);
        if (r < 0)
                return r;
        return sim_buf_put(b, codes, n);
}

static int put_id_packet(SimBuf *b, uint8_t first, uint16_t packet_id) {
        uint8_t p[4] = { first, 2, packet_id >> 8, packet_id & 0xff };
        return sim_buf_put(b, p, sizeof p);
}

int sim_mqtt_put_unsuback(SimBuf *b, uint16_t packet_id) {
        return put_id_packet(b, SIM_MQTT_UNSUBACK << 4, packet_id);
}

int sim_mqtt_put_puback(SimBuf *b, uint16_t packet_id) {
        return put_id_packet(b, SIM_MQTT_PUBACK << 4, packet_id);
}

int sim_mqtt_put_pingresp(SimBuf *b) {
        uint8_t p[2] = { SIM_MQTT_PINGRESP << 4, 0 };
        return sim_buf_put(b, p, sizeof p);
}

int sim_mqtt_put_publish(SimBuf *b, const char *topic, uint8_t qos, uint16_t packet_id,
                         const void *payload, size_t len) {
        size_t tl = strlen(topic);
        int r;
        if (tl > UINT16_MAX || qos > 1)
                return -EINVAL;
        r = put_header(b, (uint8_t) (SIM_MQTT_PUBLISH << 4 | qos << 1), 2 + tl + (qos ? 2 : 0) + len);
        if (r < 0)
                return r;
        r = sim_buf_put_str16(b, topic, tl);
        if (r < 0)
                return r;
        if (qos) {
                r = sim_buf_put_u16(b, packet_id);
                if (r < 0)
                        return r;
        }
        return sim_buf_put(b, payload, len);
}

const char *sim_mqtt_type_to_string(uint8_t type) {
        static const char *const names[16] = {
                [SIM_MQTT_CONNECT] = "CONNECT", [SIM_MQTT_CONNACK] = "CONNACK",
                [SIM_MQTT_PUBLISH] = "PUBLISH", [SIM_MQTT_PUBACK] = "PUBACK",
                [SIM_MQTT_PUBREC] = "PUBREC", [SIM_MQTT_PUBREL] = "PUBREL",
                [SIM_MQTT_PUBCOMP] = "PUBCOMP", [SIM_MQTT_SUBSCRIBE] = "SUBSCRIBE",
                [SIM_MQTT_SUBACK] = "SUBACK", [SIM_MQTT_UNSUBSCRIBE] = "UNSUBSCRIBE",
                [SIM_MQTT_UNSUBACK] = "UNSUBACK", [SIM_MQTT_PINGREQ] = "PINGREQ",
                [SIM_MQTT_PINGRESP] = "PINGRESP", [SIM_MQTT_DISCONNECT] = "DISCONNECT",
        };
        return type < 16 && names[type] ? names[type] : "reserved";
}
