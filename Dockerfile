# roomcast server image. Used by compose.yaml (docs/deploy.md); works on its own too:
#   docker build -t roomcast .
#   docker run --rm -p 127.0.0.1:8080:8080 -p 7882-7883:7882-7883/udp \
#     -e ROOMCAST_PUBLIC_IP=203.0.113.7 -e ROOMCAST_WORKERS=2 roomcast
#
# Stage 1 builds the one binary; stage 2 is Debian slim with that binary, curl for the health
# check and nothing else. Both stages are bookworm, so the binary's glibc matches.

FROM rust:1-bookworm AS build
WORKDIR /src
# The whole workspace: the binary embeds web-client/ and cargo reads every member's manifest.
# .dockerignore keeps target/, node_modules/, .git and .env out of the context.
COPY . .
RUN cargo build --release --locked --bin roomcast \
 && install -D -m 0755 target/release/roomcast /out/roomcast

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/roomcast --shell /usr/sbin/nologin roomcast \
 && install -d -o roomcast -g roomcast -m 0750 /var/lib/roomcast
COPY --from=build /out/roomcast /usr/local/bin/roomcast

# Inside a container the listeners must not be loopback-only (the dev-mode default). The media
# port range, the public IP and the API key/secret come from the environment at run time
# (compose.yaml, .env.example).
ENV ROOMCAST_HTTP=0.0.0.0:8080 \
    ROOMCAST_RTMP=0.0.0.0:1935 \
    ROOMCAST_RTC_BIND=0.0.0.0 \
    ROOMCAST_RTC_PORT=7882

USER roomcast
WORKDIR /var/lib/roomcast
# HLS replays live here (ROOMCAST_REPLAY_DIR); compose.yaml mounts a named volume.
VOLUME ["/var/lib/roomcast"]

# HTTP + WebSocket, RTMP ingest, and the first two media ports (one UDP port per worker:
# ROOMCAST_RTC_PORT + i; publish as many as ROOMCAST_WORKERS).
EXPOSE 8080/tcp 1935/tcp 7882/udp 7883/udp

HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS --max-time 2 -o /dev/null http://127.0.0.1:8080/healthz || exit 1

ENTRYPOINT ["roomcast"]
CMD ["serve"]
