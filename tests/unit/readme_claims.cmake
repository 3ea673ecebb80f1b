# README claims about relayctl's output (tools/relayctl_fmt.c).
relay_unit_test(NAME readme_claims
  SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/readme_claims.c ${PROJECT_SOURCE_DIR}/tools/relayctl_fmt.c
  LIBS PkgConfig::JSONC m)
target_include_directories(test_readme_claims PRIVATE ${PROJECT_SOURCE_DIR}/tools)
