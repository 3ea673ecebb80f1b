/* relayctl internals shared by its source files. */
#ifndef RELAYCTL_H
#define RELAYCTL_H

#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>

/* Exit codes (SPEC): 0 ok, 1 failed, 2 usage. */
enum { CTL_OK = 0, CTL_FAILED = 1, CTL_USAGE = 2 };

typedef struct {
  char *base_url;    /* "http://127.0.0.1:8081", no trailing slash */
  const char *token; /* NULL: none */
} ctl_client;

/* Performs one admin API call. On a 2xx answer returns 0 and the parsed JSON
 * body in *out (caller puts it). Otherwise prints one clear line to stderr
 * (unreachable, wrong token, the server's {"error"}) and returns the HTTP
 * status (401, 404, 502 ...) or -1 when no HTTP answer came. When want_err is
 * non-NULL a non-2xx JSON body is returned there instead of being printed. */
int ctl_call(const ctl_client *c, const char *method, const char *path, const char *body,
             json_object **out, json_object **want_err);

/* Percent-encodes s for a query string into a malloc'd string. */
char *ctl_urlencode(const char *s);

/* Human formatting. */
void ctl_fmt_bytes(uint64_t n, char *buf, size_t len);   /* "1.5 MiB" */
void ctl_fmt_duration(double s, char *buf, size_t len);  /* "3m 12s" */
void ctl_fmt_count(uint64_t n, char *buf, size_t len);   /* "12,345" */
void ctl_fmt_time_ms(int64_t ms, char *buf, size_t len); /* "2026-11-28 02:30:01" UTC */

/* Prints the human stats summary from the /v1/stats object. */
void ctl_print_stats(FILE *f, json_object *st, const char *where);
/* Prints DLQ entries as an aligned table. */
void ctl_print_dlq_table(FILE *f, json_object *entries);
/* Prints one DLQ entry with its body (pretty JSON when pretty). */
void ctl_print_dlq_entry(FILE *f, json_object *e, int pretty);

/* Accessors that tolerate missing fields. */
int64_t ctl_get_i64(json_object *o, const char *k, int64_t def);
double ctl_get_double(json_object *o, const char *k, double def);
const char *ctl_get_str(json_object *o, const char *k); /* NULL when absent/null */

#endif
