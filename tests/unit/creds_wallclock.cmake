# Credentials refreshed after the wall clock steps ahead of the monotonic
# one (time() interposed; see tests/unit/creds_wallclock.c).
relay_unit_test(NAME creds_wallclock
  SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/creds_wallclock.c
          ${PROJECT_SOURCE_DIR}/tests/unit/creds_httpd.c
          ${PROJECT_SOURCE_DIR}/relay/creds.c
          ${PROJECT_SOURCE_DIR}/relay/sigv4.c
          ${PROJECT_SOURCE_DIR}/relay/log.c
  LIBS PkgConfig::CURL PkgConfig::CRYPTO PkgConfig::JSONC PkgConfig::EXPAT Threads::Threads
  LABELS unit
  TIMEOUT 30)
