/* SPDX-License-Identifier: MIT */
/* sim-buf.h: a growable byte buffer with a read offset, for dps-sim's queues */
#pragma once

#include <stddef.h>
#include <stdint.h>

typedef struct SimBuf {
        uint8_t *data;
        size_t start;   /* first unconsumed byte */
        size_t len;     /* end of valid bytes */
        size_t cap;
} SimBuf;

static inline const uint8_t *sim_buf_head(const SimBuf *b) { return b->data + b->start; }
static inline size_t sim_buf_size(const SimBuf *b) { return b->len - b->start; }

int sim_buf_reserve(SimBuf *b, size_t extra);
int sim_buf_put(SimBuf *b, const void *data, size_t len);
int sim_buf_put_u8(SimBuf *b, uint8_t v);
int sim_buf_put_u16(SimBuf *b, uint16_t v);
/* Appends an MQTT UTF-8 string: 16-bit big-endian length, then the bytes. */
int sim_buf_put_str16(SimBuf *b, const char *s, size_t len);
void sim_buf_consume(SimBuf *b, size_t n);
void sim_buf_clear(SimBuf *b);
void sim_buf_done(SimBuf *b);
