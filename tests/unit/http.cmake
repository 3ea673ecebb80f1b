# http_server: the libuv HTTP/1.1 server shared by ingest and the admin API.
relay_unit_test(NAME http
  SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/http_server_test.c
          ${PROJECT_SOURCE_DIR}/tests/unit/http_testclient.c
          ${PROJECT_SOURCE_DIR}/relay/http_server.c
          ${PROJECT_SOURCE_DIR}/relay/log.c
  LIBS PkgConfig::UV ${HTTP_PARSER_LIB} Threads::Threads
  TIMEOUT 60)
target_include_directories(test_http PRIVATE ${PROJECT_SOURCE_DIR}/relay ${HTTP_PARSER_INCLUDE})
