# relayd start-up edge cases (tests/integration/startup_edges.sh): stdio
# closed, a full disk for a new data dir.
if(TARGET relayd)
  foreach(c closed_stdio full_disk)
    relay_script_test(NAME startup.${c}
      COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/startup_edges.sh ${c}
      LABELS integration TIMEOUT 120)
  endforeach()
endif()
