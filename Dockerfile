# KMRL Connectors: one image for the worker, the beat and the web process (docker-compose.yml
# picks the command). Build: docker build -t kmrl-connectors .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # Every process (celery, gunicorn, kmrl-connectors) imports the code in /app, never a copy.
    PYTHONPATH=/app

# A fixed uid/gid so files on volumes keep one owner across rebuilds.
RUN groupadd --system --gid 10001 kmrl \
 && useradd --system --uid 10001 --gid kmrl --home-dir /app --no-create-home --shell /usr/sbin/nologin kmrl

# Text extraction (base/extraction): poppler's pdftotext, pdftoppm, pdfinfo and pdffonts for PDFs,
# Tesseract with its Malayalam and English models for scans and images. No recommends: no X, no docs.
RUN apt-get update \
 && apt-get install -y --no-install-recommends poppler-utils tesseract-ocr tesseract-ocr-mal tesseract-ocr-eng \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# Dependencies first, exactly as locked (versions and sha256 of every file): this layer is rebuilt
# only when requirements.lock changes. requirements.txt is the readable source of the lock.
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock
# The product only, as the wheel packages it (pyproject.toml): the simulators (sandbox/), tests and
# benchmarks run from a checkout, never in the image. README.md and LICENSE are the package's metadata;
# env.example documents the settings that error messages point to.
COPY pyproject.toml README.md LICENSE env.example cli.py scheduler.py ./
COPY base/ base/
COPY config/ config/
COPY connectors/ connectors/
COPY utils/ utils/
COPY web/ web/
COPY watchers/ watchers/
# The kmrl-connectors console script; --no-deps: everything it needs is installed above, and the
# locked setuptools builds it (--no-build-isolation: no unpinned download).
RUN pip install --no-deps --no-build-isolation -e . \
 && mkdir -p /app/var /app/logs \
 && chown -R kmrl:kmrl /app/var /app/logs

USER kmrl
# KMRL_ROLE tells the health probe what this container runs (worker, beat, watcher or web).
ENV KMRL_ROLE=worker \
    WORKER_LIVENESS_FILE=/tmp/kmrl-worker.alive
# 8000: the public listener (the webhook); 8001: the internal one (probes, operator routes).
EXPOSE 8000 8001
# worker: its liveness file is fresh; beat: a beat holds the RedBeat lock; web: /healthz answers.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 CMD ["kmrl-connectors", "probe"]
CMD ["celery", "-A", "scheduler", "worker", "--loglevel=info", "--concurrency=2"]
