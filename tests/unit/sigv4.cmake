# SigV4 signer: AWS vectors, building blocks, key cache (sigv4.*), and a
# differential test against libcurl's own CURLOPT_AWS_SIGV4 over a loopback
# server (sigv4_curl.*). Both link only the signer, not relaycore.
relay_unit_test(NAME sigv4
  SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/sigv4.c
          ${PROJECT_SOURCE_DIR}/relay/sigv4.c
  LIBS PkgConfig::CRYPTO PkgConfig::JSONC
  TIMEOUT 60)

relay_unit_test(NAME sigv4_curl
  SOURCES ${PROJECT_SOURCE_DIR}/tests/unit/sigv4_curl.c
          ${PROJECT_SOURCE_DIR}/relay/sigv4.c
  LIBS PkgConfig::CRYPTO PkgConfig::CURL Threads::Threads
  TIMEOUT 120)

# relay_unit_test() defines no target in the fuzz build.
foreach(t test_sigv4 test_sigv4_curl)
  if(TARGET ${t})
    target_include_directories(${t} PRIVATE ${PROJECT_SOURCE_DIR}/relay)
  endif()
endforeach()
