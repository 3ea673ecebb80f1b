/* relayctl's admin API client: libcurl easy interface, one call at a time. */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relayctl.h"

typedef struct {
  char *p;
  size_t len;
  int oom;
} buf;

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *arg) {
  buf *b = arg;
  size_t n = size * nmemb;
  char *np = realloc(b->p, b->len + n + 1);
  if (!np) {
    b->oom = 1;
    return 0;
  }
  b->p = np;
  memcpy(b->p + b->len, ptr, n);
  b->len += n;
  b->p[b->len] = '\0';
  return n;
}

char *ctl_urlencode(const char *s) {
  static const char hex[] = "0123456789ABCDEF";
  size_t n = strlen(s);
  char *out = malloc(n * 3 + 1), *o = out;
  if (!out) return NULL;
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '_' || c == '.' || c == '~') {
      *o++ = (char)c;
    } else {
      *o++ = '%';
      *o++ = hex[c >> 4];
      *o++ = hex[c & 15];
    }
  }
  *o = '\0';
  return out;
}

static json_object *parse(const char *s, size_t len) {
  if (!s || !len) return NULL;
  json_tokener *tok = json_tokener_new();
  if (!tok) return NULL;
  json_object *o = json_tokener_parse_ex(tok, s, (int)len);
  if (json_tokener_get_error(tok) != json_tokener_success) o = NULL;
  json_tokener_free(tok);
  return o;
}

int ctl_call(const ctl_client *c, const char *method, const char *path, const char *body,
             json_object **out, json_object **want_err) {
  static int curl_ready;
  if (!curl_ready) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    curl_ready = 1;
  }
  *out = NULL;
  if (want_err) *want_err = NULL;
  size_t ulen = strlen(c->base_url) + strlen(path) + 1;
  char *url = malloc(ulen);
  if (!url) return -1;
  snprintf(url, ulen, "%s%s", c->base_url, path);

  CURL *h = curl_easy_init();
  if (!h) {
    free(url);
    fprintf(stderr, "relayctl: out of memory\n");
    return -1;
  }
  buf b = {NULL, 0, 0};
  char errbuf[CURL_ERROR_SIZE] = "";
  struct curl_slist *hdrs = NULL;
  char *auth = NULL;
  if (c->token && *c->token) {
    size_t alen = strlen(c->token) + 32;
    auth = malloc(alen);
    if (auth) {
      snprintf(auth, alen, "Authorization: Bearer %s", c->token);
      hdrs = curl_slist_append(hdrs, auth);
    }
  }
  if (body) hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
  if (body) {
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
  } else if (strcmp(method, "POST") == 0) {
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, 0L);
  }
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 3000L);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 120000L);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  /* The admin API is plain HTTP on a private address: never use a proxy
   * from the environment for it. */
  curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
  curl_easy_setopt(h, CURLOPT_USERAGENT, "relayctl/" RELAY_VERSION);

  CURLcode rc = curl_easy_perform(h);
  long status = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_cleanup(h);
  curl_slist_free_all(hdrs);
  free(auth);

  int result;
  if (rc != CURLE_OK) {
    fprintf(stderr,
            "relayctl: cannot reach the relayd admin API at %s: %s\n"
            "  (is relayd running? use --admin URL or RELAY_ADMIN_LISTEN)\n",
            c->base_url, errbuf[0] ? errbuf : curl_easy_strerror(rc));
    result = -1;
  } else {
    json_object *o = parse(b.p, b.len);
    if (status >= 200 && status < 300) {
      if (!o && b.len) {
        fprintf(stderr, "relayctl: %s %s: the answer is not JSON\n", method, path);
        result = -1;
      } else {
        *out = o ? o : json_object_new_object();
        result = 0;
      }
    } else {
      result = (int)status;
      if (want_err && o) {
        *want_err = o;
      } else {
        const char *msg = o ? ctl_get_str(o, "error") : NULL;
        if (status == 401)
          fprintf(stderr, "relayctl: %s\n  (%s)\n",
                  c->token && *c->token
                      ? "the admin API refused the token (wrong token)"
                      : "the admin API needs a token: --token T or RELAY_ADMIN_TOKEN",
                  msg ? msg : "401 Unauthorized");
        else
          fprintf(stderr, "relayctl: relayd answered %ld: %s\n", status,
                  msg ? msg : (b.p && b.len ? b.p : "(no message)"));
        json_object_put(o);
      }
    }
  }
  free(b.p);
  free(url);
  return result;
}
