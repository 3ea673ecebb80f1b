relay_unit_test(NAME config
  SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/config.c ${PROJECT_SOURCE_DIR}/relay/config.c
  LABELS unit)
