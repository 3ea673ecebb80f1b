# metrics: counters, histograms and the Prometheus exposition (checked by promtool).
relay_unit_test(NAME metrics
  SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/metrics.c ${PROJECT_SOURCE_DIR}/relay/metrics.c
  LIBS m)
target_include_directories(test_metrics PRIVATE ${PROJECT_SOURCE_DIR}/relay)

# relayctl offline mode (--data-dir), usage/exit codes, and the admin
# start-up rule; runs the built relayctl against a queue filled with rq.
relay_unit_test(NAME metrics_relayctl
  SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/metrics_relayctl.c ${PROJECT_SOURCE_DIR}/relay/admin_common.c
          ${PROJECT_SOURCE_DIR}/relay/config.c
  LIBS rq PkgConfig::JSONC PkgConfig::CRYPTO PkgConfig::UV)
target_include_directories(test_metrics_relayctl PRIVATE ${PROJECT_SOURCE_DIR}/relay)
if(TARGET relayctl)
  add_dependencies(test_metrics_relayctl relayctl)
endif()

# The admin API over real HTTP on a real queue, with a scripted drainer, and
# relayctl's online commands against it.
relay_unit_test(NAME metrics_admin
  SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/metrics_admin.c ${PROJECT_SOURCE_DIR}/relay/admin.c
          ${PROJECT_SOURCE_DIR}/relay/admin_common.c ${PROJECT_SOURCE_DIR}/relay/metrics.c
          ${PROJECT_SOURCE_DIR}/relay/config.c
          ${PROJECT_SOURCE_DIR}/relay/http_server.c ${PROJECT_SOURCE_DIR}/relay/log.c
  LIBS rq PkgConfig::JSONC PkgConfig::CRYPTO PkgConfig::UV PkgConfig::CURL ${HTTP_PARSER_LIB}
       Threads::Threads m)
target_include_directories(test_metrics_admin PRIVATE ${PROJECT_SOURCE_DIR}/relay ${HTTP_PARSER_INCLUDE})
target_compile_definitions(test_metrics_admin PRIVATE RELAY_VERSION="${PROJECT_VERSION}")
# Counts malloc() of the statically linked code (dlq_listing_copies_no_bodies).
target_link_options(test_metrics_admin PRIVATE -Wl,--wrap=malloc)
if(TARGET relayctl)
  add_dependencies(test_metrics_admin relayctl)
endif()
# (relay/log.c: same GCC -Wformat-truncation note as in http.cmake.)
set_source_files_properties(${PROJECT_SOURCE_DIR}/relay/log.c PROPERTIES COMPILE_OPTIONS -Wno-format-truncation)
