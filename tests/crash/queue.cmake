# Queue crash safety: a writer child is SIGKILLed at random moments.
relay_unit_test(NAME queue_crash
  SOURCES ${PROJECT_SOURCE_DIR}/tests/crash/queue_crash.c
  LIBS rq
  LABELS crash TIMEOUT 120)
