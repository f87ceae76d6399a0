# The one kpool image: /usr/local/bin/{kpool-webhook,kpool-agent,kpool-certs,kpool-mesh,kpool-probe},
# as the chart runs them (values.yaml `image`).
#
#   docker build -t ghcr.io/kpool/kpool:0.1.0 .
#
# kpool-probe is linked statically (it is copied into broker containers, whatever their
# base image); the servers link glibc dynamically (getaddrinfo for Kafka bootstrap names)
# and run on distroless/cc as the non-root user.
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p kpool-webhook -p kpool-agent -p kpool-certs -p kpool-mesh --bins \
 && RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked \
      -p kpool-agent --bin kpool-probe --target "$(uname -m)-unknown-linux-gnu" \
 && mkdir /out \
 && cp target/release/kpool-webhook target/release/kpool-agent target/release/kpool-certs \
      target/release/kpool-mesh /out/ \
 && cp "target/$(uname -m)-unknown-linux-gnu/release/kpool-probe" /out/

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/kpool-webhook"]
