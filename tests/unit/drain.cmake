# Drainer: pure policy (jitter, AIMD, packing, outcome table).
relay_unit_test(NAME drain_policy
  SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/drain_policy.c ${PROJECT_SOURCE_DIR}/relay/backoff.c
  LIBS m)
target_include_directories(test_drain_policy PRIVATE ${PROJECT_SOURCE_DIR}/relay ${PROJECT_SOURCE_DIR}/queue)
target_link_libraries(test_drain_policy PRIVATE PkgConfig::UV)
