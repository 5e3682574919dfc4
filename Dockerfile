# The authz image: the Rust binary (linked against glibc only) on a distroless-like base, running
# as uid 65532, with no shell. Two ways to build it:
#
#   docker build -t authz .                      # from source, in a Rust builder image
#   docker build --target authz-prebuilt -t authz:local \
#     --build-arg RUNTIME_IMAGE=authz-base:local .   # the binary built on the host (cargo build
#                                                  # --release, debug sections stripped into
#                                                  # target/images/authz), no registry:
#                                                  # scripts/build-images does all of it
#
# The prebuilt target comes before the builder stage so that even the classic builder (which
# builds every stage up to the target) never needs the Rust image.
ARG BUILDER_IMAGE=rust:1-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

# What every authz image is, whatever built the binary.
FROM ${RUNTIME_IMAGE} AS runtime
USER 65532:65532
# In a container the listeners must be reachable from Envoy's container (compose) or over the
# task's loopback (ECS awsvpc); both work on all interfaces. The health check probes loopback.
ENV AUTHZ_LISTEN__GRPC=0.0.0.0:9191 \
    AUTHZ_LISTEN__HTTP=0.0.0.0:9192
EXPOSE 9191 9192
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/authz", "healthcheck", "--url", "http://127.0.0.1:9192/readyz"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/authz"]

# The binary built on the host by `cargo build --release`, its debug sections stripped into
# target/images/authz by scripts/build-images (glibc: run it on a base made from the same
# machine's libraries, as that script does).
FROM runtime AS authz-prebuilt
COPY target/images/authz /usr/local/bin/authz

FROM ${BUILDER_IMAGE} AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY authz authz
COPY standin standin
COPY xtask xtask
COPY tests/containers tests/containers
RUN cargo build --release --locked -p authz && strip --strip-debug -o /authz target/release/authz

# The default target: built from source.
FROM runtime AS authz
COPY --from=builder /authz /usr/local/bin/authz
