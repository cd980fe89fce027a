# Multi-stage: a static binary on a distroless nonroot base.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
COPY third_party ./third_party
RUN go mod download
COPY . .
# The commit, for `sessionproxy version` and sessionproxy_build_info: docker build --build-arg COMMIT=$(git rev-parse --short HEAD)
ARG COMMIT=""
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.commitStamp=${COMMIT}" -o /out/sessionproxy ./cmd/sessionproxy

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sessionproxy /sessionproxy
USER 65532:65532
EXPOSE 6380 9380
# Listen on all interfaces inside the container; point -upstream at your Redis. Clients from
# other hosts get -DENIED (protected mode) unless something asks them for a password: set
# SESSIONPROXY_CLIENTS_PASSWORD, or use a Redis that requires one (clients AUTH with theirs).
ENTRYPOINT ["/sessionproxy", "-listen", "0.0.0.0:6380", "-metrics", "0.0.0.0:9380"]
