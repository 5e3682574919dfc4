# The Google stand-in (tests and the compose dev profile only), on the same base as authz.
# Built by scripts/build-images from the host-built binary; context: the repository root.
ARG RUNTIME_IMAGE=authz-base:local
FROM ${RUNTIME_IMAGE}
COPY target/release/standin /usr/local/bin/standin
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/standin"]
CMD ["--listen", "0.0.0.0:8080"]
