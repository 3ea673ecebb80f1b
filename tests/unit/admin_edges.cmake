# Admin API and relayctl edge cases (shutdown, UTF-8, HEAD, --watch, failures);
# set-up as metrics_admin (real HTTP, real queue, fake drainer, built relayctl).
relay_unit_test(NAME admin_edges
  SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/admin_edges.c ${PROJECT_SOURCE_DIR}/relay/admin.c
          ${PROJECT_SOURCE_DIR}/relay/admin_common.c ${PROJECT_SOURCE_DIR}/relay/metrics.c
          ${PROJECT_SOURCE_DIR}/relay/config.c ${PROJECT_SOURCE_DIR}/tools/relayctl_fmt.c
          ${PROJECT_SOURCE_DIR}/relay/http_server.c ${PROJECT_SOURCE_DIR}/relay/log.c
  LIBS rq PkgConfig::JSONC PkgConfig::CRYPTO PkgConfig::UV PkgConfig::CURL ${HTTP_PARSER_LIB}
       Threads::Threads m)
target_include_directories(test_admin_edges PRIVATE ${PROJECT_SOURCE_DIR}/relay ${PROJECT_SOURCE_DIR}/tools
                           ${HTTP_PARSER_INCLUDE})
target_compile_definitions(test_admin_edges PRIVATE RELAY_VERSION="${PROJECT_VERSION}")
if(TARGET relayctl)
  add_dependencies(test_admin_edges relayctl)
endif()
