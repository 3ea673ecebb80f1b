# Group commit against the real queue library (its sources, not the `rq`
# target, so this builds while other modules of the tree are in progress).
file(GLOB COMMIT_TEST_RQ_SOURCES ${PROJECT_SOURCE_DIR}/queue/*.c)
relay_unit_test(NAME commit
  SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/commit.c ${PROJECT_SOURCE_DIR}/relay/commit.c
          ${PROJECT_SOURCE_DIR}/relay/log.c ${COMMIT_TEST_RQ_SOURCES}
  LIBS PkgConfig::UV PkgConfig::LMDB PkgConfig::MSGPACK Threads::Threads
  LABELS unit TIMEOUT 60)
