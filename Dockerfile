# Dockerfile - QMessageServer-C in containers (see docs/CLUSTER.md).
#
#   docker build -t qmessageserver .                  # the server image (last stage)
#   docker run -p 8080:8080 -p 12345:12345 -v qms-data:/data qmessageserver
#
# Stages: build (Debian 12 with the -dev packages; python3 only because the
# CMake project looks for it, for its tests) -> runtime (Debian 12
# slim with only the shared libraries, a non-root user, the binary and the
# web UI) -> lb (runtime plus nginx: the TLS front compose.yml puts before
# the gateways) and server (the default image).  With no arguments
# the server runs every actor in one process; compose.yml runs one role per
# container instead.

FROM debian:bookworm AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      gcc libc6-dev make cmake ninja-build pkg-config python3 \
      libwebsockets-dev libczmq-dev libzmq3-dev libcjson-dev libsqlite3-dev libssl-dev libargon2-dev libicu-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DQMS_WERROR=ON \
 && cmake --build /build --target qmessageserver \
 && strip /build/qmessageserver

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libwebsockets17 libwebsockets-evlib-uv libuv1 libczmq4 libzmq5 libcjson1 libsqlite3-0 libssl3 libargon2-1 libicu72 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 qms \
 && useradd --system --uid 10001 --gid qms --home-dir /data --shell /usr/sbin/nologin qms \
 && mkdir -p /data && chown qms:qms /data
COPY --from=build /build/qmessageserver /usr/bin/qmessageserver
COPY html /usr/share/qmessageserver/html
WORKDIR /data

# The front: nginx as the same unprivileged user, terminating TLS
# (docker/lb-entrypoint picks or makes the certificate, finds the name
# server, writes the configuration from docker/nginx.conf.template).
FROM runtime AS lb
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx openssl \
 && rm -rf /var/lib/apt/lists/* \
 && ln -sf /dev/stderr /var/log/nginx/error.log \
 && mkdir -p /var/lib/qmessageserver-lb /etc/qmessageserver/tls \
 && chown qms:qms /var/lib/qmessageserver-lb
COPY docker/nginx.conf.template /etc/qmessageserver/nginx.conf.template
COPY docker/lb-entrypoint /usr/bin/lb-entrypoint
USER qms
EXPOSE 8080 8443 12345
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/bin/lb-entrypoint", "health"]
ENTRYPOINT ["/usr/bin/lb-entrypoint"]

FROM runtime AS server
USER qms
VOLUME /data
EXPOSE 12345 8080 8443
ENTRYPOINT ["/usr/bin/qmessageserver"]
CMD ["all", "--data-dir", "/data", "--html-dir", "/usr/share/qmessageserver/html"]
# The embedded default answers on its HTTP port; compose.yml asks each role.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/bin/qmessageserver", "--health", "all"]
