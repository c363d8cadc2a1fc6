# The image the Helm chart runs (helm/sluice). No Docker engine runs on our
# build machines, so this file is not built by CI: keep it minimal.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin sluice

FROM debian:bookworm-slim
# CA certificates for TLS to the cloud stores.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin sluice
COPY --from=build /src/target/release/sluice /usr/local/bin/sluice
USER 10001:10001
EXPOSE 50051 9464
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["serve", "--listen=0.0.0.0:50051", "--admin-listen=0.0.0.0:9464", "--data-dir=/var/lib/sluice"]
