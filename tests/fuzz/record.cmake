# Queue record decoder: rq_decode() on arbitrary bytes, re-encode
# round trips (see fuzz_record.c). Links only queue/rq_codec.c.
if(NOT COMMAND relay_fuzz_target)
  include(${CMAKE_CURRENT_LIST_DIR}/functions.cmake)
endif()
relay_fuzz_target(NAME record
  SOURCES ${PROJECT_SOURCE_DIR}/tests/fuzz/fuzz_record.c ${PROJECT_SOURCE_DIR}/queue/rq_codec.c
  LIBS PkgConfig::MSGPACK PkgConfig::LMDB)
foreach(t fuzz_record fuzzreplay_record)
  if(TARGET ${t})
    target_include_directories(${t} PRIVATE ${PROJECT_SOURCE_DIR}/queue)
  endif()
endforeach()
