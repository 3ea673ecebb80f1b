# The durability scenarios of shared/TESTING.md (issue 8), driven by
# tests/support/harness.mjs. Each has a short variant in the default run
# (labels crash or integration) and a long one (label long) that
# tools/prove.sh runs. RELAY_SANITIZE=1 scales the short variants down.

if(RELAY_FUZZ)
  return() # the fuzz build runs fuzz targets only
endif()

# An LD_PRELOAD shim: orders 2xx sends against syncs (scenario 2), injects
# EIO/ENOSPC at fdatasync (3) and kills relayd right after a commit point
# (1). Built without sanitizers: it is preloaded into relayd, also into the
# ASan build.
# Scenario 10 has it fail LMDB's page and meta writes and grow_ahead()'s
# zero fill and fallocate (RELAY_TEST_SHIM_WFAIL_FILE).
add_library(sync_order_shim SHARED ${PROJECT_SOURCE_DIR}/tests/crash/sync_order_shim.c)
target_compile_options(sync_order_shim PRIVATE -fno-sanitize=all)
target_link_options(sync_order_shim PRIVATE -fno-sanitize=all)
target_link_libraries(sync_order_shim PRIVATE ${CMAKE_DL_LIBS} Threads::Threads)
set_target_properties(sync_order_shim PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)

relay_script_test(NAME prove.shim_selftest
  COMMAND ${NODE} ${PROJECT_SOURCE_DIR}/tests/crash/shim_selftest.mjs LABELS crash TIMEOUT 60)

if(TARGET relayd AND TARGET relayctl)
  set(PROVE_DIR ${PROJECT_SOURCE_DIR}/tests/crash)
  # name, script, labels of the short variant, timeout short, timeout long
  foreach(s
      "kill_burst;s1_kill_burst.mjs;crash;240;3600"
      "sync_order;s2_sync_order.mjs;crash;180;900"
      "queue_full;s3_queue_full.mjs;integration;180;900"
      "sns_down;s4_sns_down.mjs;integration;240;1800"
      "poison;s5_poison.mjs;integration;180;900"
      "ack_crash;s6_ack_crash.mjs;crash;180;900"
      "slow_clients;s7_slow_clients.mjs;integration;180;900"
      "auth_pause;s9_auth_pause.mjs;integration;180;900"
      "write_faults;s10_write_faults.mjs;crash;180;900")
    list(GET s 0 name)
    list(GET s 1 script)
    list(GET s 2 label)
    list(GET s 3 tshort)
    list(GET s 4 tlong)
    relay_script_test(NAME prove.${name}
      COMMAND ${NODE} ${PROVE_DIR}/${script} LABELS ${label} TIMEOUT ${tshort})
    relay_script_test(NAME prove.${name}_long
      COMMAND ${NODE} ${PROVE_DIR}/${script} --long LABELS long TIMEOUT ${tlong})
  endforeach()
endif()
