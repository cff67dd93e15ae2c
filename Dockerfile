FROM python:3.11.7-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY engine engine
COPY events events
COPY projections projections
COPY replay replay
COPY cli cli
RUN pip install --no-cache-dir .
ENTRYPOINT []
CMD ["marginbook", "demo"]
