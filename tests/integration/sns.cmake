# SNS client end to end: the C driver publishes through relay/sns_client.c to
# fauxqs (delivery oracle) and to the fault-injecting stand-in.
add_executable(sns_driver
  ${PROJECT_SOURCE_DIR}/tests/integration/sns_driver.c
  ${PROJECT_SOURCE_DIR}/relay/sns_client.c ${PROJECT_SOURCE_DIR}/relay/sns_request.c
  ${PROJECT_SOURCE_DIR}/relay/sns_response.c ${PROJECT_SOURCE_DIR}/relay/sigv4.c
  ${PROJECT_SOURCE_DIR}/relay/creds.c ${PROJECT_SOURCE_DIR}/relay/log.c)
target_include_directories(sns_driver PRIVATE ${PROJECT_SOURCE_DIR}/relay)
target_link_libraries(sns_driver PRIVATE PkgConfig::UV PkgConfig::CURL PkgConfig::CRYPTO
  PkgConfig::JSONC PkgConfig::EXPAT Threads::Threads m)
target_compile_definitions(sns_driver PRIVATE RELAY_VERSION="${PROJECT_VERSION}")
set_target_properties(sns_driver PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)

# End to end against fauxqs: Publish and PublishBatch, standard and FIFO.
foreach(mode publish batch)
  relay_script_test(NAME sns.e2e.${mode}
    COMMAND ${NODE} ${PROJECT_SOURCE_DIR}/tests/integration/sns_e2e.mjs ${mode} TIMEOUT 120)
  relay_script_test(NAME sns.e2e.${mode}_fifo
    COMMAND ${NODE} ${PROJECT_SOURCE_DIR}/tests/integration/sns_e2e.mjs ${mode} --fifo TIMEOUT 120)
endforeach()

# Against the fault-injecting stand-in (tests/support/fault-sns.mjs).
foreach(case cli_and_control_endpoint signed_and_wire_format fifo_ids classification batch_partial_failures
        poison_in_batch timeout_and_slow connection_refused keepalive_and_inflight
        max_connections_queues cancel_on_close tls_verification_on)
  relay_script_test(NAME sns.faults.${case}
    COMMAND ${NODE} ${PROJECT_SOURCE_DIR}/tests/integration/sns_faults.mjs ${case} TIMEOUT 120)
endforeach()

# Benchmark sink (tools/bench-sns.sh): canned success, as fast as possible.
add_executable(sns_sink ${PROJECT_SOURCE_DIR}/tests/integration/sns_sink.c)
target_include_directories(sns_sink PRIVATE ${HTTP_PARSER_INCLUDE})
target_link_libraries(sns_sink PRIVATE PkgConfig::UV ${HTTP_PARSER_LIB})
set_target_properties(sns_sink PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)

relay_script_test(NAME sns.fauxqs_cli
  COMMAND ${PROJECT_SOURCE_DIR}/tests/integration/sns_fauxqs_cli.sh TIMEOUT 60)
