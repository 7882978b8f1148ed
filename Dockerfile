# A runnable image of the agent: `docker build -t mgmt . && docker run --rm mgmt`
FROM python:3.11-slim
# tini as PID 1 reaps the orphans that commands run by exec resources may leave behind;
# etcd-server is the cluster's engine (the agent runs it only when a graph needs the cluster).
RUN apt-get update && apt-get install -y --no-install-recommends tini etcd-server \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/mgmt
COPY pyproject.toml README.md ./
COPY engine engine
COPY resources resources
COPY mgmt mgmt
RUN pip install --no-cache-dir . && mkdir -p /var/lib/mgmt
COPY examples examples
ENTRYPOINT ["/usr/bin/tini", "--", "mgmt"]
CMD ["run", "yaml", "examples/hello.yaml"]
