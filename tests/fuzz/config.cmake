# Configuration loader: cfg_load_envp() reading the input as a --config
# file (see fuzz_config.c).
if(NOT COMMAND relay_fuzz_target)
  include(${CMAKE_CURRENT_LIST_DIR}/functions.cmake)
endif()
relay_fuzz_target(NAME config
  SOURCES ${PROJECT_SOURCE_DIR}/tests/fuzz/fuzz_config.c ${PROJECT_SOURCE_DIR}/relay/config.c)
foreach(t fuzz_config fuzzreplay_config)
  if(TARGET ${t})
    target_include_directories(${t} PRIVATE ${PROJECT_SOURCE_DIR}/relay)
  endif()
endforeach()
