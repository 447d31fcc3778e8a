# syntax=docker/dockerfile:1
#
# tokenwarm as a container: a static binary (CGO_ENABLED=0: the SQLite
# driver is pure Go) on distroless "static" (CA certificates, tzdata, no
# shell, no curl), running as the non-root user 65532.
#
#   docker build -t tokenwarm .
#   docker run --rm -p 8080:8080 -e TOKENWARM_PUBLIC_URL=http://localhost:8080 tokenwarm
#
# With no settings that is the demo (embedded SQLite under /data, the
# built-in Salesforce emulator). Production settings (DATABASE_URL,
# TOKENWARM_SEAL_KEYS, SALESFORCE_*, SALESFORCE_PROXY_URL): see
# deploy/compose.yaml and deploy/kubernetes/.
#
# cmd/server's TestStaticBinaryBuiltAsTheDockerfileServesReadyz runs the
# build stage's `go build` line exactly as written here (keep it one RUN
# line) and checks that the binary is static and serves /readyz against
# Postgres.

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG TARGETOS TARGETARCH
RUN CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} go build -trimpath -ldflags="-s -w" -o /out/tokenwarm ./cmd/server
# An empty data directory the runtime user owns (embedded mode only).
RUN mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/tokenwarm /tokenwarm
COPY --from=build --chown=65532:65532 /out/data /data
ENV TOKENWARM_ADDR=:8080 \
    TOKENWARM_DATA_DIR=/data \
    TOKENWARM_LOG_FORMAT=json
USER 65532:65532
EXPOSE 8080
# No curl in the image: the binary checks itself (GET /readyz on
# TOKENWARM_ADDR; exit 0 on 200, else 1).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 CMD ["/tokenwarm", "healthcheck"]
ENTRYPOINT ["/tokenwarm"]
CMD ["serve"]
