/* SPDX-License-Identifier: MIT */
/* fuzz-sim-mqtt.c: libFuzzer harness for dps-sim's MQTT 3.1.1 framing and packet decoders */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dps-macro.h"
#include "sim-mqtt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Decodes one framed packet the way sim-conn.c does; checks what a decoder
 * promises about its result. */
static void decode(const SimMqttPacket *p) {
        switch (p->type) {
        case SIM_MQTT_CONNECT: {
                SimMqttConnect c = {};
                int r = sim_mqtt_parse_connect(p, &c);
                if (r == 0) {
                        if (!c.client_id || !c.protocol_name || (c.password && strlen(c.password) > c.password_len))
                                abort();
                } else if (r != -EBADMSG && r != -EPROTONOSUPPORT && r != -ENOMEM)
                        abort();
                /* -EPROTONOSUPPORT fills c too (for CONNACK 1): the caller frees */
                sim_mqtt_connect_done(&c);
                break;
        }
        case SIM_MQTT_PUBLISH: {
                SimMqttPublish pub = {};
                if (sim_mqtt_parse_publish(p, &pub) == 0) {
                        if (!pub.topic || pub.qos > 2 ||
                            (pub.payload_len > 0 && (pub.payload < p->body || pub.payload + pub.payload_len > p->body + p->body_len)))
                                abort();
                        /* re-encoding what was decoded frames and decodes to the same */
                        SimBuf b = {};
                        SimMqttPacket q;
                        SimMqttPublish again = {};
                        if (sim_mqtt_put_publish(&b, pub.topic, pub.qos, pub.packet_id, pub.payload, pub.payload_len) == 0) {
                                if (sim_mqtt_frame(sim_buf_head(&b), sim_buf_size(&b), SIZE_MAX, &q) != 1 ||
                                    q.total != sim_buf_size(&b) || sim_mqtt_parse_publish(&q, &again) != 0 ||
                                    !streq(again.topic, pub.topic) || again.payload_len != pub.payload_len ||
                                    (pub.payload_len && memcmp(again.payload, pub.payload, pub.payload_len) != 0) ||
                                    again.qos != pub.qos || (pub.qos > 0 && again.packet_id != pub.packet_id))
                                        abort();
                                sim_mqtt_publish_done(&again);
                        }
                        sim_buf_done(&b);
                        sim_mqtt_publish_done(&pub);
                }
                break;
        }
        case SIM_MQTT_SUBSCRIBE:
        case SIM_MQTT_UNSUBSCRIBE: {
                SimMqttSubscribe s = {};
                if (sim_mqtt_parse_subscribe(p, p->type == SIM_MQTT_UNSUBSCRIBE, &s) == 0) {
                        if (s.n == 0 || s.n > SIM_MQTT_MAX_FILTERS)
                                abort();
                        for (size_t i = 0; i < s.n; i++)
                                if (!s.filters[i])
                                        abort();
                        sim_mqtt_subscribe_done(&s);
                }
                break;
        }
        case SIM_MQTT_PUBACK:
        case SIM_MQTT_PUBREC:
        case SIM_MQTT_PUBREL:
        case SIM_MQTT_PUBCOMP: {
                uint16_t id;
                (void) sim_mqtt_parse_packet_id(p, &id);
                break;
        }
        default:
                break;
        }
        if (!sim_mqtt_type_to_string(p->type))
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        size_t off = 0;

        /* A byte stream as a connection delivers it: packet after packet. */
        while (off < size) {
                SimMqttPacket p;
                int r = sim_mqtt_frame(data + off, size - off, SIM_MQTT_MAX_PACKET, &p);
                if (r <= 0) {
                        if (r < 0 && r != -EBADMSG && r != -EMSGSIZE)
                                abort();
                        break;
                }
                if (p.total > size - off || p.total < 2 || p.body + p.body_len != data + off + p.total)
                        abort();
                decode(&p);
                off += p.total;
        }
        return 0;
}
