# README claims about the admin API against the real relayd
# (tests/integration/readme_claims.mjs, one case per test).
if(TARGET relayd)
  foreach(c dlq_query_empty)
    relay_script_test(NAME readme_claims.${c}
      COMMAND ${NODE} ${PROJECT_SOURCE_DIR}/tests/integration/readme_claims.mjs ${c}
      LABELS integration TIMEOUT 120)
  endforeach()
endif()
