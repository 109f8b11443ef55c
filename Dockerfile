# Honeycomb: a static (musl) binary on scratch, as a non-root user.
#
# The classic builder accepts this file (no BuildKit-only syntax). In an
# ordinary CI the build stage compiles from the official Rust image:
#
#   docker build -t honeycomb .
#
# On machines without an image registry, scripts/container-test imports a
# minimal build stage holding the release binary it already built, and passes
# it as BUILD_IMAGE (the stage then skips compiling):
#
#   docker build --build-arg BUILD_IMAGE=hive-prebuilt -t honeycomb .
ARG BUILD_IMAGE=docker.io/library/rust:1-bookworm

FROM ${BUILD_IMAGE} AS build
WORKDIR /src
COPY . .
# hadolint DL3008 (pin apt package versions) is accepted here: the apt-get
# below runs only when this stage compiles, installs build tools (musl-tools)
# and the CA bundle on the floating rust:1-bookworm image, and exact Debian
# versions would break the build whenever the archive moves on; only the CA
# bundle reaches the final image.
# hadolint ignore=DL3008
RUN if [ -x /prebuilt/honeycomb ]; then \
        mkdir -p /out && cp /prebuilt/honeycomb /out/honeycomb; \
    else \
        apt-get update && apt-get install -y --no-install-recommends musl-tools ca-certificates && \
        rustup target add x86_64-unknown-linux-musl && \
        cargo build --locked --release --target x86_64-unknown-linux-musl -p honeycomb && \
        mkdir -p /out && cp target/x86_64-unknown-linux-musl/release/honeycomb /out/honeycomb; \
    fi && \
    mkdir -p /out/data

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/honeycomb /honeycomb
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
ENV HONEYCOMB_LISTEN=0.0.0.0:8780 \
    HONEYCOMB_DATA_DIR=/data \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
VOLUME ["/data"]
EXPOSE 8780
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["/honeycomb", "healthcheck"]
ENTRYPOINT ["/honeycomb"]
CMD ["serve"]
