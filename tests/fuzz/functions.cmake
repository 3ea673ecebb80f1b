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
