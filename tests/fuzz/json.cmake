# ingest_parse_event(): the single-pass JSON scanner, differential against
# json-c in strict mode (see fuzz_json.c for the properties and for each
# place json-c had to be normalised).
if(NOT COMMAND relay_ingest_fuzz_target)
  include(${CMAKE_CURRENT_LIST_DIR}/functions.cmake)
endif()
relay_ingest_fuzz_target(json)
