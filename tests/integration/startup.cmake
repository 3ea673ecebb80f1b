# relayd start-up against its environment: configuration the SNS client
# cannot use stops relayd at start-up instead of leaving it running without
# publishing; found late (credentials came later) it leaves relayd up, blocked;
# Kubernetes service-link variables do not; closed stdio and a full disk
# for a new data dir (tests/integration/startup.sh).
if(TARGET relayd)
  foreach(c sns_endpoint_config sns_client_fatal service_links sighup sns_endpoint_good late_publish_failure
            closed_stdio full_disk)
    relay_script_test(NAME startup.${c}
      COMMAND bash ${CMAKE_CURRENT_LIST_DIR}/startup.sh ${c}
      LABELS integration TIMEOUT 90)
  endforeach()
endif()
