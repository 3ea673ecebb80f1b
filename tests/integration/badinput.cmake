# Bad-input corpus against a real relayd: malformed framing, limits,
# hostile bodies and signatures, each with its expected status; nothing
# stored, relayd still alive and serving afterwards.
if(TARGET relayd)
  relay_script_test(NAME badinput.corpus
    COMMAND ${NODE} ${PROJECT_SOURCE_DIR}/tests/integration/badinput.mjs TIMEOUT 180)
endif()
