# One image for both services and the CLI; the task definition's command
# picks the binary (hookline-ingress, hookline-worker, hookline).
#
# The build stage runs exactly what CI compiles in `make test`
# (`cargo build --release --locked --workspace --bins`), so a green CI means
# this stage builds.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# gcc for the bundled SQLite of the embedded backend.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release --locked --workspace --bins

# Small runtime with CA certificates and glibc, no shell, non-root.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/hookline-ingress /src/target/release/hookline-worker /src/target/release/hookline /usr/local/bin/
USER 65532:65532
EXPOSE 8080 9090
CMD ["hookline-ingress"]
