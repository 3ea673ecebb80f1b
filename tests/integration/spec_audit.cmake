# SPEC conformance against the real binaries: statements of ../shared/SPEC.md
# and the README that no other test exercised end to end
# (tests/integration/spec_audit.mjs, one case per test).
if(TARGET relayd AND TARGET relayctl)
  foreach(c listen_localhost readyz_recovers metrics_counters relayctl_flags
          no_credentials readyz_shutdown second_relayd)
    relay_script_test(NAME spec_audit.${c}
      COMMAND ${NODE} ${PROJECT_SOURCE_DIR}/tests/integration/spec_audit.mjs ${c}
      LABELS integration TIMEOUT 120)
  endforeach()
endif()
