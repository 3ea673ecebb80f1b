# Ingest end to end: relayd over real sockets, the queue read back by a
# small checker linked with the queue library.
file(GLOB INGEST_CHECK_QUEUE_SOURCES ${PROJECT_SOURCE_DIR}/queue/*.c)
add_executable(ingest_check ${PROJECT_SOURCE_DIR}/tests/integration/ingest_check.c
  ${INGEST_CHECK_QUEUE_SOURCES})
target_include_directories(ingest_check PRIVATE ${PROJECT_SOURCE_DIR}/queue)
target_link_libraries(ingest_check PRIVATE PkgConfig::LMDB PkgConfig::MSGPACK PkgConfig::CRYPTO)
set_target_properties(ingest_check PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)

if(TARGET relayd)
  relay_script_test(NAME ingest.e2e
    COMMAND ${NODE} ${PROJECT_SOURCE_DIR}/tests/integration/ingest_e2e.mjs TIMEOUT 300)
  relay_script_test(NAME ingest.kill9
    COMMAND ${NODE} ${PROJECT_SOURCE_DIR}/tests/integration/ingest_kill.mjs
    LABELS integration crash TIMEOUT 600)
  relay_script_test(NAME ingest.no_credentials
    COMMAND ${NODE} ${PROJECT_SOURCE_DIR}/tests/integration/ingest_nocreds.mjs TIMEOUT 60)
endif()
