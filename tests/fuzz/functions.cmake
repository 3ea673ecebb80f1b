# Fuzz targets: each is a file defining LLVMFuzzerTestOneInput().
#
# With -DRELAY_FUZZ=ON (clang): a libFuzzer binary per target, a short run
# in the default suite (label fuzz) and a long one (labels fuzz;long).
# In every other build: the same target linked with replay.c and run over
# its checked-in seed corpus, so the corpus is a regression test under gcc
# and ASan/UBSan too.
#
# relay_fuzz_target(NAME <name> SOURCES <files> [LIBS <libs>])
# Corpus: tests/fuzz/corpus/<name>/
set(RELAY_FUZZ_SECONDS 15 CACHE STRING "seconds per target in the default fuzz run")
set(RELAY_FUZZ_LONG_SECONDS 600 CACHE STRING "seconds per target in the long fuzz run")

function(relay_fuzz_target)
  cmake_parse_arguments(F "" "NAME" "SOURCES;LIBS" ${ARGN})
  set(corpus ${PROJECT_SOURCE_DIR}/tests/fuzz/corpus/${F_NAME})
  if(RELAY_FUZZ)
    add_executable(fuzz_${F_NAME} ${F_SOURCES})
    target_compile_options(fuzz_${F_NAME} PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_options(fuzz_${F_NAME} PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_libraries(fuzz_${F_NAME} PRIVATE ${F_LIBS})
    target_include_directories(fuzz_${F_NAME} PRIVATE ${PROJECT_SOURCE_DIR}/relay ${PROJECT_SOURCE_DIR}/queue)
    set_target_properties(fuzz_${F_NAME} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/fuzz)
    add_test(NAME fuzz.${F_NAME} COMMAND ${CMAKE_CURRENT_LIST_DIR}/run-fuzz.sh
      $<TARGET_FILE:fuzz_${F_NAME}> ${corpus} ${RELAY_FUZZ_SECONDS})
    set_tests_properties(fuzz.${F_NAME} PROPERTIES LABELS "fuzz" TIMEOUT 300)
    add_test(NAME fuzz.${F_NAME}.long COMMAND ${CMAKE_CURRENT_LIST_DIR}/run-fuzz.sh
      $<TARGET_FILE:fuzz_${F_NAME}> ${corpus} ${RELAY_FUZZ_LONG_SECONDS})
    set_tests_properties(fuzz.${F_NAME}.long PROPERTIES LABELS "fuzz;long" TIMEOUT 3600)
  else()
    add_executable(fuzzreplay_${F_NAME} ${F_SOURCES} ${PROJECT_SOURCE_DIR}/tests/fuzz/replay.c)
    target_link_libraries(fuzzreplay_${F_NAME} PRIVATE ${F_LIBS})
    target_include_directories(fuzzreplay_${F_NAME} PRIVATE ${PROJECT_SOURCE_DIR}/relay ${PROJECT_SOURCE_DIR}/queue)
    set_target_properties(fuzzreplay_${F_NAME} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
    add_test(NAME fuzz_corpus.${F_NAME} COMMAND fuzzreplay_${F_NAME} ${corpus})
    set_tests_properties(fuzz_corpus.${F_NAME} PROPERTIES LABELS "unit;fuzz" TIMEOUT 120)
  endif()
endfunction()

# A fuzz target over ingest.c: it is one object with the request path, so
# the HTTP server, the committer and the queue link in too.
function(relay_ingest_fuzz_target name)
  relay_fuzz_target(NAME ${name}
    SOURCES ${PROJECT_SOURCE_DIR}/tests/fuzz/fuzz_${name}.c
            ${PROJECT_SOURCE_DIR}/relay/http_server.c ${PROJECT_SOURCE_DIR}/relay/ingest.c
            ${PROJECT_SOURCE_DIR}/relay/commit.c ${PROJECT_SOURCE_DIR}/relay/config.c
            ${PROJECT_SOURCE_DIR}/relay/log.c
            ${PROJECT_SOURCE_DIR}/queue/rq.c ${PROJECT_SOURCE_DIR}/queue/rq_codec.c
            ${PROJECT_SOURCE_DIR}/queue/rq_dlq.c ${PROJECT_SOURCE_DIR}/queue/rq_dedup.c
            ${PROJECT_SOURCE_DIR}/queue/rq_fifo.c
    LIBS PkgConfig::UV PkgConfig::CRYPTO PkgConfig::ZLIB PkgConfig::JSONC PkgConfig::LMDB
         PkgConfig::MSGPACK ${HTTP_PARSER_LIB} Threads::Threads)
  foreach(t fuzz_${name} fuzzreplay_${name})
    if(TARGET ${t})
      target_include_directories(${t} PRIVATE ${PROJECT_SOURCE_DIR}/relay
                                 ${PROJECT_SOURCE_DIR}/queue ${HTTP_PARSER_INCLUDE})
    endif()
  endforeach()
endfunction()
