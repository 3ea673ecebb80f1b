# ingest: webhook endpoint over the real queue, committer and HTTP server.
file(GLOB INGEST_TEST_QUEUE_SOURCES ${PROJECT_SOURCE_DIR}/queue/*.c)
relay_unit_test(NAME ingest
  SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/ingest_test.c
          ${PROJECT_SOURCE_DIR}/tests/unit/http_testclient.c
          ${PROJECT_SOURCE_DIR}/relay/ingest.c
          ${PROJECT_SOURCE_DIR}/relay/http_server.c
          ${PROJECT_SOURCE_DIR}/relay/commit.c
          ${PROJECT_SOURCE_DIR}/relay/config.c
          ${PROJECT_SOURCE_DIR}/relay/log.c
          ${INGEST_TEST_QUEUE_SOURCES}
  LIBS PkgConfig::UV PkgConfig::CRYPTO PkgConfig::ZLIB PkgConfig::JSONC PkgConfig::LMDB
       PkgConfig::MSGPACK ${HTTP_PARSER_LIB} Threads::Threads
  TIMEOUT 120)
target_include_directories(test_ingest PRIVATE ${PROJECT_SOURCE_DIR}/relay ${PROJECT_SOURCE_DIR}/queue
  ${HTTP_PARSER_INCLUDE})
