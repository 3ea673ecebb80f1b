# Structured logging: every line one valid JSON object (UTF-8, closed even
# when a value is cut), text lines one line.
relay_unit_test(NAME log
  SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/log_test.c ${PROJECT_SOURCE_DIR}/relay/log.c
  LIBS PkgConfig::JSONC
  LABELS unit)
target_include_directories(test_log PRIVATE ${PROJECT_SOURCE_DIR}/relay)
