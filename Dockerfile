# syntax=docker/dockerfile:1
# The operator image: a static tusk-operator (musl, no libc needed) on distroless/static,
# running as the non-root user 65532: about 2 MB of base plus the stripped binary (23.5 MB
# for the glibc release build measured on 2026-11-22; the e2e workflow fails above 30 MB).
#
#   docker build -t tusk-operator:dev .
#
# BuildKit cache mounts keep the cargo registry and target directory between builds.
FROM rust:1-bookworm AS build
ARG TARGETARCH
RUN set -eux; \
    case "${TARGETARCH:-amd64}" in \
      amd64) target=x86_64-unknown-linux-musl ;; \
      arm64) target=aarch64-unknown-linux-musl ;; \
      *) echo "unsupported architecture ${TARGETARCH}" >&2; exit 1 ;; \
    esac; \
    echo "$target" > /rust-target; \
    rustup target add "$target"; \
    apt-get update; \
    apt-get install -y --no-install-recommends musl-tools; \
    rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    set -eux; \
    target="$(cat /rust-target)"; \
    cargo build --release --locked --target "$target" -p tusk-operator --bin tusk-operator; \
    cp "target/$target/release/tusk-operator" /tusk-operator

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="tusk-operator" \
      org.opencontainers.image.description="tusk, a Kubernetes operator for PostgreSQL" \
      org.opencontainers.image.source="https://github.com/tusk-operator/tusk" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /tusk-operator /usr/local/bin/tusk-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/tusk-operator"]
CMD ["run"]
