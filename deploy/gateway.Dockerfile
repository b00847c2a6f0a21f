# The gateway image for Kubernetes (deploy/k8s/base/gateway.yaml): Envoy with its configuration
# and the gRPC descriptor set baked in, so the Deployment needs no ConfigMap of them.
# Build from the repository root: docker build -f deploy/gateway.Dockerfile -t mppo/gateway .
# (docker-compose.yml mounts the same two files into the stock image instead.)
FROM envoyproxy/envoy:v1.36-latest
COPY gateway/envoy.yaml /etc/envoy/envoy.yaml
# built by `make gen` from proto/ (docs/conventions.md)
COPY gateway/descriptors.binpb /etc/envoy/descriptors.binpb
USER 101
EXPOSE 8080
CMD ["envoy", "-c", "/etc/envoy/envoy.yaml"]
