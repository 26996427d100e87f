# syntax=docker/dockerfile:1
# pairchat in a container: the static release binary (see .cargo/config.toml) on debian:bookworm-slim,
# run as a non-root user. Build and run:
#   docker build -t pairchat .
#   docker run --rm -p 3000:3000 pairchat
# Configure with PAIRCHAT_* variables (see `pairchat --help`), e.g. -e PAIRCHAT_ROOM_TTL=30m.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the target directory between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin pairchat \
    && install -m 0755 target/*/release/pairchat /usr/local/bin/pairchat

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin pairchat
COPY --from=build /usr/local/bin/pairchat /usr/local/bin/pairchat
USER pairchat
# The port is left to the default (3000) or to a platform's injected PORT: a PAIRCHAT_PORT set
# here would beat PORT (a flag beats PAIRCHAT_*, which beats PORT).
ENV PAIRCHAT_HOST=0.0.0.0
EXPOSE 3000
# GET /health over bash's /dev/tcp: the slim image has neither curl nor wget.
HEALTHCHECK --interval=30s --timeout=3s --start-period=5s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${PAIRCHAT_PORT:-${PORT:-3000}} && printf 'GET /health HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && grep -q '\"status\":\"ok\"' <&3"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/pairchat"]
