# SNS client: pure request building / response parsing (no I/O).
relay_unit_test(NAME sns
  SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/sns_request.c
          ${PROJECT_SOURCE_DIR}/tests/unit/sns_response.c
          ${PROJECT_SOURCE_DIR}/relay/sns_request.c
          ${PROJECT_SOURCE_DIR}/relay/sns_response.c
  LIBS PkgConfig::EXPAT PkgConfig::UV PkgConfig::CRYPTO)
target_include_directories(test_sns PRIVATE ${PROJECT_SOURCE_DIR}/relay)

# The client on a real loop against a canned loopback server, with a test
# double of the credential provider (so relay/creds.c is not linked here).
relay_unit_test(NAME sns_client
  SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/sns_client.c
          ${PROJECT_SOURCE_DIR}/relay/sns_client.c
          ${PROJECT_SOURCE_DIR}/relay/sns_request.c
          ${PROJECT_SOURCE_DIR}/relay/sns_response.c
          ${PROJECT_SOURCE_DIR}/relay/sigv4.c
          ${PROJECT_SOURCE_DIR}/relay/log.c
  LIBS PkgConfig::UV PkgConfig::CURL PkgConfig::CRYPTO PkgConfig::EXPAT Threads::Threads
  TIMEOUT 30)
target_include_directories(test_sns_client PRIVATE ${PROJECT_SOURCE_DIR}/relay)
target_compile_definitions(test_sns_client PRIVATE RELAY_VERSION="${PROJECT_VERSION}")
