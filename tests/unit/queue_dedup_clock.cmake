# Queue dedup: the table after clock steps and batches that do not commit, and a randomized model (queue/rq_dedup.c).
relay_unit_test(NAME queue_dedup_clock
  SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/queue_dedup_clock.c
          ${PROJECT_SOURCE_DIR}/queue/rq.c ${PROJECT_SOURCE_DIR}/queue/rq_codec.c
          ${PROJECT_SOURCE_DIR}/queue/rq_dedup.c ${PROJECT_SOURCE_DIR}/queue/rq_dlq.c
          ${PROJECT_SOURCE_DIR}/queue/rq_fifo.c
  LIBS PkgConfig::LMDB PkgConfig::MSGPACK Threads::Threads
  LABELS unit TIMEOUT 60)
