# SNS answer parser: sns_parse_response() (expat) on arbitrary bodies,
# statuses and batch sizes (see fuzz_sns_response.c).
if(NOT COMMAND relay_fuzz_target)
  include(${CMAKE_CURRENT_LIST_DIR}/functions.cmake)
endif()
relay_fuzz_target(NAME sns_response
  SOURCES ${PROJECT_SOURCE_DIR}/tests/fuzz/fuzz_sns_response.c
          ${PROJECT_SOURCE_DIR}/relay/sns_response.c
  LIBS PkgConfig::EXPAT)
foreach(t fuzz_sns_response fuzzreplay_sns_response)
  if(TARGET ${t})
    target_include_directories(${t} PRIVATE ${PROJECT_SOURCE_DIR}/relay)
  endif()
endforeach()
