# The lb-bin image: one binary for the controller and the speaker (and standalone mode).
#   docker build -t lb-bin:0.1.0 .
FROM rust:1.95-slim-trixie AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p lb-bin \
 && install -D -m 0755 target/release/lb-bin /out/lb-bin

FROM gcr.io/distroless/cc-debian13:nonroot
COPY --from=build /out/lb-bin /usr/local/bin/lb-bin
ENTRYPOINT ["/usr/local/bin/lb-bin"]
