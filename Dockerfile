# One image per fnhook service: docker build --build-arg SERVICE=gateway -t fnhook-gateway .
FROM golang:1.26-bookworm AS build
ARG SERVICE
WORKDIR /src
COPY go.work go.work.sum* ./
COPY libs ./libs
COPY services ./services
COPY e2e/go.mod e2e/go.sum ./e2e/
COPY bench/go.mod bench/go.sum ./bench/
RUN CGO_ENABLED=0 go build -trimpath -o /out/service ./services/${SERVICE}

# The builder runs npm, the handler unpacks modules for Node runners: both want Node.
FROM node:20-bookworm-slim
ARG SERVICE
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /var/lib/apt/lists/*
# npm install scripts run in the builder's sandbox as this account of their own.
RUN useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin fnhook-build
COPY --from=build /out/service /usr/local/bin/fnhook-service
COPY jobs /opt/fnhook/jobs
COPY services/handler/runner /opt/fnhook/runner
ENV FNHOOK_RUNNER_JOB_FILE=/opt/fnhook/jobs/runner.nomad.hcl
ENTRYPOINT ["/usr/local/bin/fnhook-service"]
