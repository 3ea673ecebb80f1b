# Drainer integration: a driver running the real queue, committer, SNS client
# and drainer on one loop (no HTTP ingest), plus node scripts that start
# fauxqs or the fault-injecting SNS stand-in and check what arrived.
set(DRAIN_DRIVER_SOURCES
  ${PROJECT_SOURCE_DIR}/tests/integration/drain_driver.c
  ${PROJECT_SOURCE_DIR}/relay/drain.c ${PROJECT_SOURCE_DIR}/relay/backoff.c
  ${PROJECT_SOURCE_DIR}/relay/commit.c ${PROJECT_SOURCE_DIR}/relay/sns_client.c
  ${PROJECT_SOURCE_DIR}/relay/sns_request.c ${PROJECT_SOURCE_DIR}/relay/sns_response.c
  ${PROJECT_SOURCE_DIR}/relay/sigv4.c ${PROJECT_SOURCE_DIR}/relay/creds.c
  ${PROJECT_SOURCE_DIR}/relay/log.c ${PROJECT_SOURCE_DIR}/relay/metrics.c)
add_executable(drain_driver ${DRAIN_DRIVER_SOURCES})
target_include_directories(drain_driver PRIVATE ${PROJECT_SOURCE_DIR}/relay ${PROJECT_SOURCE_DIR}/queue)
target_link_libraries(drain_driver PRIVATE rq PkgConfig::UV PkgConfig::CURL PkgConfig::CRYPTO
  PkgConfig::JSONC PkgConfig::EXPAT Threads::Threads m)
target_compile_definitions(drain_driver PRIVATE RELAY_VERSION="${PROJECT_VERSION}")
set_target_properties(drain_driver PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)

add_executable(drain_sink ${PROJECT_SOURCE_DIR}/tests/integration/drain_sink.c)
target_include_directories(drain_sink PRIVATE ${HTTP_PARSER_INCLUDE})
target_link_libraries(drain_sink PRIVATE PkgConfig::UV ${HTTP_PARSER_LIB})
set_target_properties(drain_sink PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)

set(DRAIN_IT ${CMAKE_CURRENT_SOURCE_DIR}/integration)
relay_script_test(NAME drain.fauxqs COMMAND ${NODE} ${DRAIN_IT}/drain_fauxqs.mjs 1000 TIMEOUT 120)
relay_script_test(NAME drain.fifo COMMAND ${NODE} ${DRAIN_IT}/drain_fifo.mjs 600 TIMEOUT 120)
relay_script_test(NAME drain.faults COMMAND ${NODE} ${DRAIN_IT}/drain_faults.mjs TIMEOUT 180)
relay_script_test(NAME drain.outage COMMAND ${NODE} ${DRAIN_IT}/drain_outage.mjs 10 300 TIMEOUT 120)
relay_script_test(NAME drain.kill9 COMMAND ${NODE} ${DRAIN_IT}/drain_kill.mjs 4000 3 TIMEOUT 120)
relay_script_test(NAME drain.fauxqs_10k COMMAND ${NODE} ${DRAIN_IT}/drain_fauxqs.mjs 10000
  LABELS integration long TIMEOUT 600)
relay_script_test(NAME drain.outage_30s COMMAND ${NODE} ${DRAIN_IT}/drain_outage.mjs 30 300
  LABELS integration long TIMEOUT 300)
relay_script_test(NAME drain.relayd COMMAND ${NODE} ${DRAIN_IT}/drain_relayd.mjs 1000 TIMEOUT 180)
