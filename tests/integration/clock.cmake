# Wall-clock steps under the drainer: the drain driver built with
# RELAY_TEST_CLOCK, so that RELAY_TEST_CLOCK_FILE (an offset in ms the test
# rewrites) steps the drainer's wall clock while its monotonic clock runs
# on. Only this test binary has the hook; relayd and drain_driver do not.
# It goes to tests/clock/drain_driver so drain_lib.mjs finds it through
# RELAY_TEST_BIN_DIR.
if(RELAY_FUZZ)
  return()
endif()
add_executable(drain_driver_clock ${PROJECT_SOURCE_DIR}/tests/integration/drain_driver.c
  ${PROJECT_SOURCE_DIR}/relay/drain.c ${PROJECT_SOURCE_DIR}/relay/backoff.c
  ${PROJECT_SOURCE_DIR}/relay/commit.c ${PROJECT_SOURCE_DIR}/relay/sns_client.c
  ${PROJECT_SOURCE_DIR}/relay/sns_request.c ${PROJECT_SOURCE_DIR}/relay/sns_response.c
  ${PROJECT_SOURCE_DIR}/relay/sigv4.c ${PROJECT_SOURCE_DIR}/relay/creds.c
  ${PROJECT_SOURCE_DIR}/relay/log.c ${PROJECT_SOURCE_DIR}/relay/metrics.c)
target_include_directories(drain_driver_clock PRIVATE ${PROJECT_SOURCE_DIR}/relay ${PROJECT_SOURCE_DIR}/queue)
target_link_libraries(drain_driver_clock PRIVATE rq PkgConfig::UV PkgConfig::CURL PkgConfig::CRYPTO
  PkgConfig::JSONC PkgConfig::EXPAT Threads::Threads m)
target_compile_definitions(drain_driver_clock PRIVATE RELAY_VERSION="${PROJECT_VERSION}" RELAY_TEST_CLOCK=1)
set_target_properties(drain_driver_clock PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests/clock
  OUTPUT_NAME drain_driver)
relay_script_test(NAME drain.clock_steps
  COMMAND ${NODE} ${CMAKE_CURRENT_SOURCE_DIR}/integration/drain_clock.mjs LABELS integration TIMEOUT 120)
