#!/usr/bin/env bash
# Print where the fish platform answers: the page and API through the Ingress, and the
# port-forward commands for the operator UIs (Dagster, MLflow, Grafana, Prometheus).
#
#   k8s/print-urls.sh [local|yandex]
set -euo pipefail

overlay=${1:-${FISH_OVERLAY:-local}}
ns=fish-platform

address=$(kubectl -n "$ns" get ingress fish-platform \
  -o jsonpath='{.status.loadBalancer.ingress[0].ip}{.status.loadBalancer.ingress[0].hostname}' 2>/dev/null || true)
host=$(kubectl -n "$ns" get ingress fish-platform -o jsonpath='{.spec.rules[0].host}' 2>/dev/null || true)

echo "Fish platform ($overlay overlay, namespace $ns)"
if [ -n "$host" ]; then
  echo "  Page:          http://$host/"
  echo "  API:           curl -F file=@fish.jpg http://$host/predict"
  [ -n "$address" ] && echo "                 ($host must resolve to $address)"
elif [ -n "$address" ]; then
  echo "  Page:          http://$address/"
  echo "  API:           curl -F file=@fish.jpg http://$address/predict"
else
  echo "  Page/API:      Ingress has no address yet; meanwhile:"
  echo "                 kubectl -n $ns port-forward svc/fish-serving 3000:3000  ->  http://localhost:3000/"
fi
echo "  Dagster UI:    kubectl -n $ns port-forward svc/dagster-dagster-webserver 3001:80  ->  http://localhost:3001/"
echo "  MLflow UI:     kubectl -n $ns port-forward svc/mlflow 5000:5000  ->  http://localhost:5000/"
echo "  Grafana:       kubectl -n $ns port-forward svc/grafana 3002:3000  ->  http://localhost:3002/ (user/password: Secret grafana-admin)"
echo "  Prometheus:    kubectl -n $ns port-forward svc/prometheus 9090:9090  ->  http://localhost:9090/alerts"
echo "  Autoscaling:   kubectl -n $ns get hpa fish-serving --watch"
