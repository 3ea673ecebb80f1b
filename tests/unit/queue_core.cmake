# Queue core: a map smaller than the data still drains; gauges and verify (queue/rq*.c).
relay_unit_test(NAME queue_core
  SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/queue_core.c
          ${PROJECT_SOURCE_DIR}/queue/rq.c ${PROJECT_SOURCE_DIR}/queue/rq_codec.c
          ${PROJECT_SOURCE_DIR}/queue/rq_dedup.c ${PROJECT_SOURCE_DIR}/queue/rq_dlq.c
          ${PROJECT_SOURCE_DIR}/queue/rq_fifo.c
  LIBS PkgConfig::LMDB PkgConfig::MSGPACK Threads::Threads
  LABELS unit TIMEOUT 60)
