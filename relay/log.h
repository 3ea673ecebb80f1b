/* Structured logging: one JSON object a line on stderr.
 *
 *   rlog(LOG_INFO, "listening", "addr", "127.0.0.1:8080", NULL);
 *   rlog(LOG_WARN, "drainer paused", "code", code, "#retry_in_ms", "5000", NULL);
 *
 * Arguments after the message are key/value string pairs ending in NULL. A
 * key starting with '#' writes its value unquoted (a number or boolean that the
 * caller already formatted); every other value is JSON-escaped. Log an error
 * once, where the decision about it is made. Never pass secrets or bodies.
 * Thread-safe: each line is written with one write(2).
 */
#ifndef RELAY_LOG_H
#define RELAY_LOG_H

typedef enum { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR } log_level;

/* Sets the threshold and format ("json" or "text"). Returns 0, or -EINVAL for
 * an unknown level/format name (either may be NULL to keep the current one). */
int log_configure(const char *level, const char *format);
void rlog(log_level level, const char *msg, ...) __attribute__((sentinel));
int log_enabled(log_level level);

#endif
