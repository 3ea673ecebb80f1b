# PublishBatch answers that place members wrongly: exact ids only, and an
# entry both Successful and Failed is retried (relay/sns_response.c).
relay_unit_test(NAME sns_batch_answer
  SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/sns_batch_answer.c
          ${PROJECT_SOURCE_DIR}/relay/sns_response.c
  LIBS PkgConfig::EXPAT PkgConfig::UV PkgConfig::CRYPTO)
target_include_directories(test_sns_batch_answer PRIVATE ${PROJECT_SOURCE_DIR}/relay)
