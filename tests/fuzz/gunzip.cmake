# ingest_gunzip(): gzip inflation under the body cap, on arbitrary bytes and
# on streams built with zlib (members, header fields, damage), against a
# reference inflater (see fuzz_gunzip.c).
if(NOT COMMAND relay_ingest_fuzz_target)
  include(${CMAKE_CURRENT_LIST_DIR}/functions.cmake)
endif()
relay_ingest_fuzz_target(gunzip)
