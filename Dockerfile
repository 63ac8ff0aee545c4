# Wattline application image: one image for migrate, api, collectors and jobs.
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /opt/wattline
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY collectors ./collectors
COPY jobs ./jobs
COPY alembic ./alembic
COPY sql ./sql
COPY examples ./examples
COPY grafana ./grafana
RUN pip install --no-cache-dir -e . && useradd --system --home /opt/wattline wattline \
    && mkdir -p /var/lib/wattline && chown wattline /var/lib/wattline
USER wattline
ENV WATTLINE_DATA_DIR=/var/lib/wattline
CMD ["wattline", "--help"]
