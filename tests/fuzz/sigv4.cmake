# SigV4: canonical query, canonical path, URI encoding and signing on
# arbitrary input (see fuzz_sigv4.c for the input layout and properties).
# relay_fuzz_target builds a libFuzzer binary with -DRELAY_FUZZ=ON (clang)
# and a corpus replay test otherwise.
if(NOT COMMAND relay_fuzz_target)
  include(${CMAKE_CURRENT_LIST_DIR}/functions.cmake)
endif()
relay_fuzz_target(NAME sigv4
  SOURCES ${PROJECT_SOURCE_DIR}/tests/fuzz/fuzz_sigv4.c ${PROJECT_SOURCE_DIR}/relay/sigv4.c
  LIBS PkgConfig::CRYPTO)
if(TARGET fuzz_sigv4)
  target_include_directories(fuzz_sigv4 PRIVATE ${PROJECT_SOURCE_DIR}/relay)
endif()
if(TARGET fuzzreplay_sigv4)
  target_include_directories(fuzzreplay_sigv4 PRIVATE ${PROJECT_SOURCE_DIR}/relay)
endif()
