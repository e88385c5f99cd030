#!/bin/sh
# Entrypoint of the Dagster image. Spark on Kubernetes starts executor pods from this image with
# the single argument "executor" and its settings in SPARK_* variables; everything else (the
# code server, `dagster api execute_run` in run pods) is executed as given.
set -eu

if [ "${1:-}" = "executor" ]; then
  # Java options Spark passes as SPARK_JAVA_OPT_0, SPARK_JAVA_OPT_1, ... (in order).
  java_opts=$(env | grep '^SPARK_JAVA_OPT_' | sort -t_ -k4 -n | sed 's/^[^=]*=//' || true)
  # shellcheck disable=SC2086 # word splitting of the Java options is intended
  exec "${JAVA_HOME}/bin/java" ${java_opts} \
    "-Xms${SPARK_EXECUTOR_MEMORY}" "-Xmx${SPARK_EXECUTOR_MEMORY}" \
    -cp "${SPARK_HOME}/jars/*" \
    org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
    --driver-url "${SPARK_DRIVER_URL}" \
    --executor-id "${SPARK_EXECUTOR_ID}" \
    --cores "${SPARK_EXECUTOR_CORES}" \
    --app-id "${SPARK_APPLICATION_ID}" \
    --hostname "${SPARK_EXECUTOR_POD_IP}" \
    --resourceProfileId "${SPARK_RESOURCE_PROFILE_ID}" \
    --podName "${SPARK_EXECUTOR_POD_NAME}"
fi

exec "$@"
