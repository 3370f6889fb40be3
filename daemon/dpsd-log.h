/* SPDX-License-Identifier: MIT */
/* dpsd-log.h: dpsd's logging, to the journal with structured fields or to stderr */
#pragma once

#include <stdint.h>
#include <syslog.h>

#include "dps-macro.h"

/* Context attached to every journal entry as DPS_STATE, DPS_REGISTRATION_ID
 * and DPS_ATTEMPT. The strings are copied. */
void log_set_context(const char *state, const char *registration_id, unsigned attempt);

/* Maximum priority that is emitted (LOG_INFO by default; $DPSD_LOG_LEVEL =
 * "debug", "info", "notice", "warning" or "err" changes it). */
void log_set_max_level(int level);
int log_get_max_level(void);
void log_parse_environment(void);

/* Details of one DPS response, for the DPS_STATUS, DPS_ERROR_CODE and
 * DPS_TRACKING_ID fields. Zero/NULL fields are left out. */
typedef struct LogDps {
        int status;
        int64_t error_code;
        const char *tracking_id;
} LogDps;

/* Logs a line; error is a negative (or positive) errno that %m expands to and
 * that is returned negative (or 0 when error is 0). Never pass secrets. */
int log_internal(int level, int error, const LogDps *dps, const char *format, ...) _printf_(4, 5);

#define log_full_errno(level, error, ...) log_internal(level, error, NULL, __VA_ARGS__)
#define log_debug(...)   log_internal(LOG_DEBUG, 0, NULL, __VA_ARGS__)
#define log_info(...)    log_internal(LOG_INFO, 0, NULL, __VA_ARGS__)
#define log_notice(...)  log_internal(LOG_NOTICE, 0, NULL, __VA_ARGS__)
#define log_warning(...) log_internal(LOG_WARNING, 0, NULL, __VA_ARGS__)
#define log_error(...)   log_internal(LOG_ERR, 0, NULL, __VA_ARGS__)
#define log_debug_errno(e, ...)   log_internal(LOG_DEBUG, e, NULL, __VA_ARGS__)
#define log_info_errno(e, ...)    log_internal(LOG_INFO, e, NULL, __VA_ARGS__)
#define log_warning_errno(e, ...) log_internal(LOG_WARNING, e, NULL, __VA_ARGS__)
#define log_error_errno(e, ...)   log_internal(LOG_ERR, e, NULL, __VA_ARGS__)
#define log_oom() log_internal(LOG_ERR, -ENOMEM, NULL, "Out of memory.")
