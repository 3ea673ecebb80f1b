# The drainer against odd SNS answers (ids, throttled batches, redirects,
# the 256 KiB edge, failing credentials, expiry), with the drain driver and
# the fault-injecting SNS stand-in (see drain.cmake).
relay_script_test(NAME drain.answers
  COMMAND ${NODE} ${CMAKE_CURRENT_SOURCE_DIR}/integration/drain_answers.mjs TIMEOUT 240)
