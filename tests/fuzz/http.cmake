# Webhook request path: http_server.c + ingest.c with the real committer
# and queue, driven over loopback by an in-process client (see
# fuzz_http.c for the input layout and properties).
if(NOT COMMAND relay_ingest_fuzz_target)
  include(${CMAKE_CURRENT_LIST_DIR}/functions.cmake)
endif()
relay_ingest_fuzz_target(http)
