# Queue library (queue/): unit tests, and the benchmark binary (not a test).
relay_unit_test(NAME queue
  SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/queue_test.c
  LIBS rq Threads::Threads
  LABELS unit TIMEOUT 60)

add_executable(bench_queue ${PROJECT_SOURCE_DIR}/tools/bench_queue.c)
target_link_libraries(bench_queue PRIVATE rq Threads::Threads)
