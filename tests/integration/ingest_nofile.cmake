# relayd under a low soft RLIMIT_NOFILE (systemd / Docker defaults): every
# webhook connection is served and /healthz answers.
if(TARGET relayd)
  relay_script_test(NAME ingest.nofile
    COMMAND ${NODE} ${PROJECT_SOURCE_DIR}/tests/integration/ingest_nofile.mjs TIMEOUT 120)
endif()
