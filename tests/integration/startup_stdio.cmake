# relayd started with stdin, stdout and stderr closed keeps answering.
if(TARGET relayd)
  relay_script_test(NAME startup.closed_stdio
    COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/startup_stdio.sh closed_stdio
    LABELS integration TIMEOUT 120)
endif()
