# ingest_gunzip(): gzip inflation under the body cap, on arbitrary bytes and
# on streams built with zlib (members, header fields, damage), against a
# reference inflater (see fuzz_gunzip.c).
# ingest.c is one object with the request path, so its dependencies link too.
if(NOT COMMAND relay_fuzz_target)
  include(${CMAKE_CURRENT_LIST_DIR}/functions.cmake)
endif()
relay_fuzz_target(NAME gunzip
  SOURCES ${PROJECT_SOURCE_DIR}/tests/fuzz/fuzz_gunzip.c
          ${PROJECT_SOURCE_DIR}/relay/ingest.c ${PROJECT_SOURCE_DIR}/relay/http_server.c
          ${PROJECT_SOURCE_DIR}/relay/commit.c ${PROJECT_SOURCE_DIR}/relay/config.c
          ${PROJECT_SOURCE_DIR}/relay/log.c
          ${PROJECT_SOURCE_DIR}/queue/rq.c ${PROJECT_SOURCE_DIR}/queue/rq_codec.c
          ${PROJECT_SOURCE_DIR}/queue/rq_dlq.c ${PROJECT_SOURCE_DIR}/queue/rq_dedup.c
          ${PROJECT_SOURCE_DIR}/queue/rq_fifo.c
  LIBS PkgConfig::UV PkgConfig::CRYPTO PkgConfig::ZLIB PkgConfig::JSONC PkgConfig::LMDB
       PkgConfig::MSGPACK ${HTTP_PARSER_LIB} Threads::Threads)
foreach(t fuzz_gunzip fuzzreplay_gunzip)
  if(TARGET ${t})
    target_include_directories(${t} PRIVATE ${PROJECT_SOURCE_DIR}/relay ${PROJECT_SOURCE_DIR}/queue
                               ${HTTP_PARSER_INCLUDE})
  endif()
endforeach()
