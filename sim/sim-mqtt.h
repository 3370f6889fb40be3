/* SPDX-License-Identifier: MIT */
/* sim-mqtt.h: MQTT 3.1.1 packet framing, decoding and encoding for dps-sim (pure, bounded) */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dps.h"
#include "sim-buf.h"

/* MQTT 3.1.1 section 2.2.1, control packet types. */
typedef enum SimMqttType {
        SIM_MQTT_CONNECT = 1,
        SIM_MQTT_CONNACK = 2,
        SIM_MQTT_PUBLISH = 3,
        SIM_MQTT_PUBACK = 4,
        SIM_MQTT_PUBREC = 5,
        SIM_MQTT_PUBREL = 6,
        SIM_MQTT_PUBCOMP = 7,
        SIM_MQTT_SUBSCRIBE = 8,
        SIM_MQTT_SUBACK = 9,
        SIM_MQTT_UNSUBSCRIBE = 10,
        SIM_MQTT_UNSUBACK = 11,
        SIM_MQTT_PINGREQ = 12,
        SIM_MQTT_PINGRESP = 13,
        SIM_MQTT_DISCONNECT = 14,
} SimMqttType;

/* "max message: 96 KB", plus room for the topic and header. */
#define SIM_MQTT_MAX_PACKET (DPS_MAX_MESSAGE_SIZE + 4096u)
/* At most this many topic filters in one SUBSCRIBE/UNSUBSCRIBE. */
#define SIM_MQTT_MAX_FILTERS 8

/* CONNACK return codes, MQTT 3.1.1 section 3.2.2.3. */
enum {
        SIM_CONNACK_ACCEPTED = 0,
        SIM_CONNACK_BAD_PROTOCOL = 1,
        SIM_CONNACK_BAD_CLIENT_ID = 2,
        SIM_CONNACK_UNAVAILABLE = 3,
        SIM_CONNACK_BAD_CREDENTIALS = 4,
        SIM_CONNACK_NOT_AUTHORIZED = 5,
};

/* One framed packet; body points into the caller's buffer. */
typedef struct SimMqttPacket {
        uint8_t type;
        uint8_t flags;
        const uint8_t *body;
        size_t body_len;
        size_t total;           /* header + body */
} SimMqttPacket;

/* Frames the packet at the start of buf. Returns 0 when more bytes are
 * needed, 1 with *ret filled when a whole packet is there, -EBADMSG for a
 * malformed fixed header (bad type or flags, remaining length over 4 bytes),
 * -EMSGSIZE when the packet would exceed max. */
int sim_mqtt_frame(const uint8_t *buf, size_t len, size_t max, SimMqttPacket *ret);

typedef struct SimMqttConnect {
        char *protocol_name;
        uint8_t protocol_level;
        bool clean_session;
        uint16_t keep_alive;
        char *client_id;
        char *username;         /* NULL when the flag is absent */
        char *password;         /* secret; NULL when absent; NUL-terminated copy */
        size_t password_len;
        bool will;
} SimMqttConnect;

/* -EBADMSG for a malformed CONNECT (close without CONNACK), -EPROTONOSUPPORT
 * for a protocol name/level other than "MQTT"/4 (CONNACK 1). */
int sim_mqtt_parse_connect(const SimMqttPacket *p, SimMqttConnect *ret);
void sim_mqtt_connect_done(SimMqttConnect *c);

typedef struct SimMqttPublish {
        char *topic;
        uint8_t qos;
        bool dup, retain;
        uint16_t packet_id;
        const uint8_t *payload;  /* points into the packet */
        size_t payload_len;
} SimMqttPublish;

int sim_mqtt_parse_publish(const SimMqttPacket *p, SimMqttPublish *ret);
void sim_mqtt_publish_done(SimMqttPublish *p);

typedef struct SimMqttSubscribe {
        uint16_t packet_id;
        size_t n;
        char *filters[SIM_MQTT_MAX_FILTERS];
        uint8_t qos[SIM_MQTT_MAX_FILTERS];      /* requested; unused for UNSUBSCRIBE */
} SimMqttSubscribe;

/* Parses SUBSCRIBE (unsubscribe false) or UNSUBSCRIBE (true). */
int sim_mqtt_parse_subscribe(const SimMqttPacket *p, bool unsubscribe, SimMqttSubscribe *ret);
void sim_mqtt_subscribe_done(SimMqttSubscribe *s);

/* PUBACK, PUBREC, PUBREL, PUBCOMP: a 2-byte packet id and nothing else. */
int sim_mqtt_parse_packet_id(const SimMqttPacket *p, uint16_t *ret);

int sim_mqtt_put_connack(SimBuf *b, bool session_present, uint8_t code);
int sim_mqtt_put_suback(SimBuf *b, uint16_t packet_id, const uint8_t *codes, size_t n);
int sim_mqtt_put_unsuback(SimBuf *b, uint16_t packet_id);
int sim_mqtt_put_puback(SimBuf *b, uint16_t packet_id);
int sim_mqtt_put_pingresp(SimBuf *b);
int sim_mqtt_put_publish(SimBuf *b, const char *topic, uint8_t qos, uint16_t packet_id,
                         const void *payload, size_t len);

const char *sim_mqtt_type_to_string(uint8_t type);
