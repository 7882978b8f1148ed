# A runnable image of the agent: `docker build -t mgmt . && docker run --rm mgmt`
FROM python:3.11-slim
WORKDIR /opt/mgmt
COPY pyproject.toml README.md ./
COPY engine engine
COPY resources resources
COPY mgmt mgmt
RUN pip install --no-cache-dir . && mkdir -p /var/lib/mgmt
COPY examples examples
ENTRYPOINT ["mgmt"]
CMD ["run", "yaml", "examples/hello.yaml"]
