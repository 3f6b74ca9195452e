# blogapi: the production image (gunicorn with uvicorn workers, migrations applied on start).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=8000 \
    DATABASE_URL=sqlite:////app/data/blogapi.db

WORKDIR /app
RUN useradd --system --uid 10001 --user-group --no-create-home blogapi \
    && mkdir /app/data \
    && chown blogapi:blogapi /app/data

# Dependencies first: this layer is rebuilt only when requirements.txt changes.
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

# The commit the image is built from (docker build --build-arg BLOGAPI_COMMIT=$(git rev-parse
# HEAD) .), reported by /health. Declared after the install so that layer stays cached.
ARG BLOGAPI_COMMIT=""
ENV BLOGAPI_COMMIT=$BLOGAPI_COMMIT

COPY alembic.ini ./
COPY migrations ./migrations
COPY blogapi ./blogapi

USER blogapi
EXPOSE 8000
# Healthy means ready: the server answers, and so does its database, migrated (/health/ready).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/ready' % os.environ.get('PORT', '8000'), timeout=4)"
CMD ["python", "-m", "blogapi"]
