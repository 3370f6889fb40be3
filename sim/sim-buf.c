/* SPDX-License-Identifier: MIT */
/* sim-buf.c: a growable byte buffer with a read offset, for dps-sim's queues */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sim-buf.h"

int sim_buf_reserve(SimBuf *b, size_t extra) {
        if (b->start > 0 && (b->start == b->len || b->start >= b->cap / 2)) {
                /* Compact: move the unconsumed tail to the front. */
                memmove(b->data, b->data + b->start, b->len - b->start);
                b->len -= b->start;
                b->start = 0;
        }
        if (b->cap - b->len >= extra)
                return 0;
        if (extra > SIZE_MAX / 2 - b->len)
                return -ENOMEM;
        size_t want = b->len + extra, cap = b->cap ? b->cap : 256;
        while (cap < want)
                cap *= 2;
        uint8_t *p = realloc(b->data, cap);
        if (!p)
                return -ENOMEM;
        b->data = p;
        b->cap = cap;
        return 0;
}

int sim_buf_put(SimBuf *b, const void *data, size_t len) {
        if (len == 0)
                return 0;
        int r = sim_buf_reserve(b, len);
        if (r < 0)
                return r;
        memcpy(b->data + b->len, data, len);
        b->len += len;
        return 0;
}

int sim_buf_put_u8(SimBuf *b, uint8_t v) {
        return sim_buf_put(b, &v, 1);
}

int sim_buf_put_u16(SimBuf *b, uint16_t v) {
        uint8_t x[2] = { v >> 8, v & 0xff };
        return sim_buf_put(b, x, 2);
}

int sim_buf_put_str16(SimBuf *b, const char *s, size_t len) {
        if (len > UINT16_MAX)
                return -E2BIG;
        int r = sim_buf_put_u16(b, (uint16_t) len);
        if (r < 0)
                return r;
        return sim_buf_put(b, s, len);
}

void sim_buf_consume(SimBuf *b, size_t n) {
        b->start += n;
        if (b->start >= b->len)
                b->start = b->len = 0;
}

void sim_buf_clear(SimBuf *b) {
        b->start = b->len = 0;
}

void sim_buf_done(SimBuf *b) {
        free(b->data);
        *b = (SimBuf) {};
}
