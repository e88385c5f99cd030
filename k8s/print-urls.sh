#!/usr/bin/env bash
# Print where the fish platform answers: the page and API through the Ingress (HTTPS), and the
# port-forward commands for the operator UIs (Dagster, MLflow, Grafana, Prometheus).
#
#   k8s/print-urls.sh [local|yandex]
set -euo pipefail

overlay=${1:-${FISH_OVERLAY:-local}}
ns=fish-platform

address=$(kubectl -n "$ns" get ingress fish-platform \
  -o jsonpath='{.status.loadBalancer.ingress[0].ip}{.status.loadBalancer.ingress[0].hostname}' 2>/dev/null || true)
host=$(kubectl -n "$ns" get ingress fish-platform -o jsonpath='{.spec.rules[0].host}' 2>/dev/null || true)
# The local certificate is self-signed: curl needs -k there.
insecure=""
[ "$overlay" = local ] && insecure="-k "

echo "Fish platform ($overlay overlay, namespace $ns)"
if [ -n "$host" ]; then
  echo "  Page:          https://$host/"
  echo "  API:           curl ${insecure}-F file=@fish.jpg https://$host/predict"
  [ -n "$address" ] && echo "                 ($host must resolve to $address)"
elif [ -n "$address" ]; then
  echo "  Page:          https://$address/"
  echo "  API:           curl -k -F file=@fish.jpg https://$address/predict"
else
  echo "  Page/API:      Ingress has no address yet; meanwhile:"
fi
echo "                 or: kubectl -n $ns port-forward svc/fish-serving 3000:3000  ->  http://localhost:3000/"
echo "  Serving:       ready once a model is promoted: kubectl -n $ns rollout status deployment/fish-serving"
echo "  Dagster UI:    kubectl -n $ns port-forward svc/dagster-dagster-webserver 3001:8080  ->  http://localhost:3001/"
echo "  MLflow UI:     kubectl -n $ns port-forward svc/mlflow 5000:5000  ->  http://localhost:5000/ (user/password: Secret mlflow-auth)"
echo "  Grafana:       kubectl -n $ns port-forward svc/grafana 3002:3000  ->  http://localhost:3002/ (user/password: Secret grafana-admin)"
echo "  Prometheus:    kubectl -n $ns port-forward svc/prometheus 9090:9090  ->  http://localhost:9090/alerts"
echo "  Autoscaling:   kubectl -n $ns get hpa fish-serving --watch"
