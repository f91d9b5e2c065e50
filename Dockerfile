# banditroute in a container: the runtime dependencies only, a non-root user, state in a volume.
#   docker build -t banditroute .
#   docker run -p 50051:50051 -p 127.0.0.1:9464:9464 -v banditroute-state:/var/lib/banditroute banditroute
# (9464: Prometheus metrics, unauthenticated: publish it only where your Prometheus reaches it.)
# A config file: -v "$PWD/config.toml:/etc/banditroute/config.toml:ro" and append
#   serve --host 0.0.0.0 --metrics-port 9464 --metrics-host 0.0.0.0 --config /etc/banditroute/config.toml \
#     --log /var/lib/banditroute/banditroute.duckdb
FROM python:3.11-slim

WORKDIR /opt/banditroute
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir . \
    && useradd --system --create-home --home-dir /var/lib/banditroute banditroute

USER banditroute
WORKDIR /var/lib/banditroute
VOLUME /var/lib/banditroute
EXPOSE 50051 9464
# SIGTERM drains in-flight calls, ingests the journal and snapshots the policy (server.grace_s).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
    CMD python -c "import grpc, sys; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; r = g.HealthStub(grpc.insecure_channel('127.0.0.1:50051')).Check(h.HealthCheckRequest(), timeout=3); sys.exit(r.status != h.HealthCheckResponse.SERVING)"

ENTRYPOINT ["banditroute"]
CMD ["serve", "--host", "0.0.0.0", "--metrics-port", "9464", "--metrics-host", "0.0.0.0", "--log", "/var/lib/banditroute/banditroute.duckdb"]
