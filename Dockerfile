# herdwatch as a container: `docker run --rm -v "$PWD/incident:/data:ro" herdwatch scan --replay /data`
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY herdwatch ./herdwatch
COPY rules ./rules
# herdwatch requires herdwatch-cache from ./cache-dist, which is built from ./herdwatch/cache.
COPY cache-dist ./cache-dist
# A regular (non-editable) install: the rules travel inside the wheel as herdwatch/_builtin_rules.
RUN pip install . && rm -rf /src

RUN useradd --create-home --uid 10001 herdwatch
USER herdwatch
WORKDIR /home/herdwatch

ENTRYPOINT ["herdwatch"]
CMD ["daemon", "--config", "/etc/herdwatch/herdwatch.yaml"]
