/* README claims about relayctl's output, checked on the formatter relayctl
 * uses (tools/relayctl_fmt.c). */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relayctl.h"
#include "testlib.h"

/* Prints one DLQ entry, as `relayctl dlq show ID` does, into a string. */
static char *show(const char *entry_json) {
  json_object *e = json_tokener_parse(entry_json);
  if (!e) return NULL;
  char *out = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&out, &len);
  if (!f) {
    json_object_put(e);
    return NULL;
  }
  ctl_print_dlq_entry(f, e, 1);
  fclose(f);
  json_object_put(e);
  return out;
}

/* README (relayctl): "`dlq show` has `replayed_at` if it comes back": an
 * entry replayed before and dead-lettered again shows when it was replayed,
 * which is where its RELAY_RETRY_MAX_AGE counts from. */
TEST(dlq_show_has_replayed_at) {
  char *out = show(
      "{\"id\":4,\"received_at\":\"2026-11-28T17:03:04.831Z\",\"type\":\"message.new\","
      "\"reason\":\"expired\",\"dead_at\":\"2026-11-28T17:03:41.798Z\","
      "\"replayed_at_ms\":1795885421795,\"replayed_at\":\"2026-11-28T17:03:41.795Z\","
      "\"attempts\":1,\"size\":2,\"body\":\"{}\"}");
  CHECK(out != NULL);
  if (!out) return;
  CHECK(strstr(out, "replayed_at") != NULL);
  CHECK(strstr(out, "2026-11-28T17:03:41.795Z") != NULL);
  free(out);
  /* and nothing about a replay for an entry never replayed */
  out = show(
      "{\"id\":5,\"type\":\"message.new\",\"reason\":\"rejected\",\"attempts\":1,\"size\":2,"
      "\"body\":\"{}\"}");
  CHECK(out != NULL);
  if (!out) return;
  CHECK(strstr(out, "replayed") == NULL);
  free(out);
}
