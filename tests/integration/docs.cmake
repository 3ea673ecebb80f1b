relay_script_test(NAME docs.config_keys_documented
  COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/docs-config-keys.sh
  LABELS integration TIMEOUT 30)
relay_script_test(NAME docs.demo_once
  COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/demo-once.sh
  LABELS integration TIMEOUT 300)
relay_script_test(NAME docs.docker_runtime_libs
  COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/docker-runtime-libs.sh
  LABELS integration TIMEOUT 60)
