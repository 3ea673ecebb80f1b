# Webhook request path: http_server.c + ingest.c with the real committer
# and queue, driven over loopback by an in-process client (see
# fuzz_http.c for the input layout and properties).
if(NOT COMMAND relay_fuzz_target)
  include(${CMAKE_CURRENT_LIST_DIR}/functions.cmake)
endif()
relay_fuzz_target(NAME http
  SOURCES ${PROJECT_SOURCE_DIR}/tests/fuzz/fuzz_http.c
          ${PROJECT_SOURCE_DIR}/relay/http_server.c ${PROJECT_SOURCE_DIR}/relay/ingest.c
          ${PROJECT_SOURCE_DIR}/relay/commit.c ${PROJECT_SOURCE_DIR}/relay/config.c
          ${PROJECT_SOURCE_DIR}/relay/log.c
          ${PROJECT_SOURCE_DIR}/queue/rq.c ${PROJECT_SOURCE_DIR}/queue/rq_codec.c
          ${PROJECT_SOURCE_DIR}/queue/rq_dlq.c ${PROJECT_SOURCE_DIR}/queue/rq_dedup.c
          ${PROJECT_SOURCE_DIR}/queue/rq_fifo.c
  LIBS PkgConfig::UV PkgConfig::CRYPTO PkgConfig::ZLIB PkgConfig::JSONC PkgConfig::LMDB
       PkgConfig::MSGPACK ${HTTP_PARSER_LIB} Threads::Threads)
foreach(t fuzz_http fuzzreplay_http)
  if(TARGET ${t})
    target_include_directories(${t} PRIVATE ${PROJECT_SOURCE_DIR}/relay ${PROJECT_SOURCE_DIR}/queue
                               ${HTTP_PARSER_INCLUDE})
  endif()
endforeach()
