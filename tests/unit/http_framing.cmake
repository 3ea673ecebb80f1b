# http_server: request framing and header limits (RFC 9112 field names, sizes above the parser default).
relay_unit_test(NAME http_framing
  SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/http_framing.c
          ${PROJECT_SOURCE_DIR}/tests/unit/http_testclient.c
          ${PROJECT_SOURCE_DIR}/relay/http_server.c
          ${PROJECT_SOURCE_DIR}/relay/log.c
  LIBS PkgConfig::UV ${HTTP_PARSER_LIB} Threads::Threads
  TIMEOUT 60)
target_include_directories(test_http_framing PRIVATE ${PROJECT_SOURCE_DIR}/relay ${HTTP_PARSER_INCLUDE})
