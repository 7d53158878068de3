# The operator image: a static tusk-operator on a distroless base, running as non-root.
#   docker build -t tusk-operator:dev .
FROM rust:1-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl \
 && apt-get update && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --target x86_64-unknown-linux-musl -p tusk-operator --bin tusk-operator

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/tusk-operator /usr/local/bin/tusk-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/tusk-operator"]
CMD ["run"]
