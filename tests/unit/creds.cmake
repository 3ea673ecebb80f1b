# Credential provider chain against loopback stand-ins for STS, the container
# endpoint and IMDS (tests/unit/creds_httpd.c).
relay_unit_test(NAME creds
  SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/creds_test.c
          ${PROJECT_SOURCE_DIR}/tests/unit/creds_httpd.c
          ${PROJECT_SOURCE_DIR}/relay/creds.c
          ${PROJECT_SOURCE_DIR}/relay/sigv4.c
          ${PROJECT_SOURCE_DIR}/relay/log.c
  LIBS PkgConfig::CURL PkgConfig::CRYPTO PkgConfig::JSONC PkgConfig::EXPAT Threads::Threads
  LABELS unit
  TIMEOUT 30)
target_include_directories(test_creds PRIVATE ${PROJECT_SOURCE_DIR}/relay)
