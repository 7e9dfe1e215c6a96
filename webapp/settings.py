"""The one settings module of Likeness, driven by environment variables.

Zero-setup default (``make run``): SQLite and an embedded Celery broker (kombu's filesystem
transport), everything under ``var/``. Production and CI: set ``DATABASE_URL`` (PostgreSQL)
and ``CELERY_BROKER_URL`` (Redis). Every variable is documented in README.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean: use 1/0, true/false, yes/no.")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer.") from None


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)

# Runtime state of the embedded default (database, media, broker folders, embeddings).
VAR_DIR = Path(os.environ.get("LIKENESS_VAR_DIR", BASE_DIR / "var")).resolve()

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set SECRET_KEY to a long random string "
            "(python -c 'import secrets; print(secrets.token_urlsafe(50))'), "
            "or set DEBUG=1 for local development."
        )
    SECRET_KEY = "insecure-development-key-only-used-with-DEBUG=1"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "template_partials",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and Redoc served locally: no CDN
    "csp",
    "evaluation",
    "annotation",
    "webapp",
    "api",
]

MIDDLEWARE = [
    "webapp.health.HealthCheckMiddleware",  # /healthz, before host checks
    "django.middleware.security.SecurityMiddleware",
    "webapp.csp.LikenessCSPMiddleware",  # Content-Security-Policy: see Security below
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, so that it sees a view's exception first: outages answer 503, not a bare 500.
    "webapp.middleware.OutageMiddleware",
]

ROOT_URLCONF = "webapp.urls"
WSGI_APPLICATION = "webapp.wsgi.application"

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
                "webapp.context_processors.roles",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------
DEFAULT_SQLITE_PATH = VAR_DIR / "likeness.sqlite3"
DATABASE_URL = os.environ.get("DATABASE_URL") or f"sqlite:///{DEFAULT_SQLITE_PATH}"
if DATABASE_URL.startswith("sqlite:"):
    VAR_DIR.mkdir(parents=True, exist_ok=True)
try:
    # Persistent connections (checked before reuse) halve the cost of a short request on
    # PostgreSQL; keep gunicorn workers x threads below the server's max_connections.
    _database = dj_database_url.parse(
        DATABASE_URL,
        conn_max_age=env_int("DB_CONN_MAX_AGE", 0 if DATABASE_URL.startswith("sqlite:") else 60),
        conn_health_checks=True,
    )
except Exception as exc:  # dj-database-url raises bare ValueErrors with terse messages
    raise ImproperlyConfigured(
        f"DATABASE_URL={DATABASE_URL!r} cannot be parsed ({exc}). "
        "Expected e.g. postgres://user@127.0.0.1:5432/likeness or sqlite:////path/db.sqlite3."
    ) from None
if _database["ENGINE"] == "django.db.backends.sqlite3":
    # The web server and the worker write concurrently: WAL plus IMMEDIATE transactions
    # turn SQLite's "database is locked" errors into short waits.
    _database["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
elif _database["ENGINE"] == "django.db.backends.postgresql":
    _database.setdefault("OPTIONS", {})["connect_timeout"] = env_int("DB_CONNECT_TIMEOUT", 5)
    if env_int("DB_PREPARED_STATEMENTS", 1):
        # Parameters bound by the server, and a statement run twice on a connection is
        # prepared: each answer then skips parsing and planning, and Python skips quoting
        # values into SQL text (measured in-process: about a quarter less CPU per answer in
        # Python and in PostgreSQL). Set
        # DB_PREPARED_STATEMENTS=0 behind a pooler in transaction mode (e.g. PgBouncer
        # before 1.21), which cannot keep prepared statements per connection.
        _database["OPTIONS"].update(server_side_binding=True, prepare_threshold=2)
DATABASES = {"default": _database}
if "TEST_DATABASE_NAME" in os.environ:
    DATABASES["default"]["TEST"] = {"NAME": os.environ["TEST_DATABASE_NAME"]}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "home"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static and media files -----------------------------------------------------------
STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / "staticfiles"))
# Media (stimulus files, uploads handed to a worker) and embedding files live on local disk
# (MEDIA_ROOT, EMBEDDINGS_ROOT: shared by every machine that runs workers, e.g. over NFS), or
# with STORAGE_BUCKET set, in an S3-compatible object store that every machine reaches; each
# machine then keeps what it reads in STORAGE_CACHE_DIR (evaluation/storage.py).
STORAGE_BUCKET = os.environ.get("STORAGE_BUCKET", "")
# Empty: Amazon S3. MinIO, Ceph RGW and others: their URL (addressed path-style).
STORAGE_ENDPOINT_URL = os.environ.get("STORAGE_ENDPOINT_URL", "")
STORAGE_REGION = os.environ.get("STORAGE_REGION", "")
# This machine's copies of stored files (content-addressed, safe to delete at any time),
# and in its work/ folder files being written before they are stored (not to delete
# while workers or imports run).
STORAGE_CACHE_DIR = Path(os.environ.get("STORAGE_CACHE_DIR") or VAR_DIR / "storage-cache").resolve()


def object_storage(
    prefix: str,
    *,
    bucket: str = STORAGE_BUCKET,
    endpoint_url: str = STORAGE_ENDPOINT_URL,
    region: str = STORAGE_REGION,
) -> dict[str, object]:
    """The STORAGES entry of files under ``prefix/`` in the bucket (credentials: boto3's
    own chain, e.g. AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or the machine's role)."""
    options: dict[str, object] = {
        "bucket_name": bucket,
        "location": prefix,
        "file_overwrite": True,  # names are content-addressed or unique: same name, same bytes
        "querystring_auth": True,  # never a public URL: files are served through the app
        "default_acl": None,
    }
    from botocore.config import Config  # only where a bucket is configured

    client = {
        # A store that cannot be reached fails the work in seconds with its name, not minutes.
        "connect_timeout": 10,
        "read_timeout": 60,
        "retries": {"mode": "standard", "max_attempts": 4},
        # evaluation.storage moves 8 files at once (PARALLEL_TRANSFERS), a large one in
        # parts over several connections: botocore's 10 would make them wait for a socket.
        "max_pool_connections": 32,
    }
    if endpoint_url:
        options["endpoint_url"] = endpoint_url
        # Path-style addresses (host/bucket/key) need no DNS name per bucket. Checksums only
        # where the API requires them: boto3 >= 1.36 sends new ones by default that some
        # S3-compatible stores (older MinIO, Ceph RGW) refuse.
        client.update(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
    options["client_config"] = Config(**client)
    if region:
        options["region_name"] = region
    return {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": options}


STORAGES = {
    "default": (
        object_storage("media")
        if STORAGE_BUCKET
        else {"BACKEND": "django.core.files.storage.FileSystemStorage"}  # MEDIA_ROOT
    ),
    "embeddings": (
        object_storage("embeddings")
        if STORAGE_BUCKET
        else {"BACKEND": "evaluation.storage.EmbeddingsFileSystemStorage"}  # EMBEDDINGS_ROOT
    ),
    # Hashed, compressed files need `collectstatic` first: on in production, off for
    # DEBUG and the test suite (STATIC_MANIFEST=0), which serve straight from static/.
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if env_bool("STATIC_MANIFEST", not DEBUG)
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}
# Without the manifest, serve static files straight from the finders (no collectstatic).
WHITENOISE_USE_FINDERS = not env_bool("STATIC_MANIFEST", not DEBUG)
MEDIA_URL = "/media/"
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", VAR_DIR / "media")).resolve()
# Content-addressed embedding files; shared storage when workers run on several machines.
EMBEDDINGS_ROOT = Path(os.environ.get("EMBEDDINGS_ROOT", VAR_DIR / "embeddings")).resolve()

# Uploads: Django spools anything over this to a temporary file instead of memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
FILE_UPLOAD_HANDLERS = [
    "core.uploads.UploadLimitHandler",  # refuses oversize bodies before reading them
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]
# Dataset archives and CSVs larger than this are refused before they are read.
DATASET_UPLOAD_MAX_BYTES = env_int("DATASET_UPLOAD_MAX_BYTES", 512 * 1024 * 1024)
# Total size of the files inside a zip once extracted (guards against zip bombs).
DATASET_UNZIPPED_MAX_BYTES = env_int("DATASET_UNZIPPED_MAX_BYTES", 2 * 1024 * 1024 * 1024)
DATASET_MAX_STIMULI = env_int("DATASET_MAX_STIMULI", 200_000)
# Every imported video clip is decoded whole on import: these caps bound what that costs
# (a clip is refused by name if its header or its frames go over them).
VIDEO_MAX_SECONDS = env_int("VIDEO_MAX_SECONDS", 600)
VIDEO_MAX_FRAMES = env_int("VIDEO_MAX_FRAMES", 36_000)  # 10 minutes at 60 fps
VIDEO_MAX_PIXELS = env_int("VIDEO_MAX_PIXELS", 3840 * 2160)  # per frame: 4K UHD

# --- Security -------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # htmx reads the token from the page, not the cookie
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy (django-csp) on every response: scripts, styles and everything else
# only from this site, never inline, so markup that slips into a page cannot run. Templates
# carry no inline script, style or event handler (JS in static/js, CSS in static/css; htmx is
# told not to insert its indicator <style>: see templates/base.html). The API documentation
# pages relax styles (and Redoc its worker) only: webapp/csp.py.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],  # data: for the empty favicon and Swagger UI's icons
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    }
}
if env_bool("SECURE_COOKIES", False):  # turn on behind HTTPS
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

# --- Cache ----------------------------------------------------------------------------
# What pages keep between requests (compare sections, figures, board tables). Without
# CACHE_URL each server process keeps its own in memory, which is right for `make run`'s
# single process; behind gunicorn's several workers set CACHE_URL to a Redis database so
# that a section computed by one worker is not computed again by the next.
CACHE_URL = os.environ.get("CACHE_URL", "")
if CACHE_URL and not CACHE_URL.startswith(("redis://", "rediss://")):
    raise ImproperlyConfigured(f"CACHE_URL={CACHE_URL!r} is not a redis:// or rediss:// address.")
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}
        if CACHE_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

# --- Celery ---------------------------------------------------------------------------
BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or "filesystem://localhost/"
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {}
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
    }
elif CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # A message whose worker died unacknowledged is redelivered after this long; the
    # worker-start recovery in workers/ picks up orphaned runs much sooner than that.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 6 * 3600),
        "socket_connect_timeout": 5,
    }
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "cpu"
CELERY_TASK_ROUTES = {
    "evaluation.extract_embeddings": {"queue": "gpu"},
    "evaluation.inspect_model": {"queue": "gpu"},
    "evaluation.score_embeddings": {"queue": "cpu"},
    "evaluation.import_embeddings": {"queue": "cpu"},
    "evaluation.requeue_stalled": {"queue": "cpu"},
}
CELERY_TASK_IGNORE_RESULT = True  # results live in the database, not a result backend
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE = {
    "requeue-stalled-run-steps": {"task": "evaluation.requeue_stalled", "schedule": 60.0},
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# A run step whose worker has not reported for this long is taken back and queued again.
RUN_STALL_SECONDS = env_int("RUN_STALL_SECONDS", 15 * 60)
RUN_MAX_ATTEMPTS = env_int("RUN_MAX_ATTEMPTS", 3)
# Every worker looks this often (and at once after it reconnects to the broker) for waiting
# steps whose task message is lost (never sent, or gone with a restarted broker) and for steps
# it holds without running them (a task that lost the database mid-step), and requeues them.
RUN_SWEEP_SECONDS = 30
# A message sent, or a step claimed, more recently than this is left alone by that sweep.
RUN_MESSAGE_GRACE_SECONDS = 10
# Each worker writes that it is alive this often (the runs list counts those seen within
# three beats). A worker with no task for WORKER_IDLE_EXIT_SECONDS leaves (0: never), so a
# SLURM allocation goes back; slurm/worker.sbatch sets it.
WORKER_HEARTBEAT_SECONDS = env_int("WORKER_HEARTBEAT_SECONDS", 20)
WORKER_IDLE_EXIT_SECONDS = env_int("WORKER_IDLE_EXIT_SECONDS", 0)

# --- Engine ---------------------------------------------------------------------------
EXTRACTION_DEVICE = os.environ.get("EXTRACTION_DEVICE", "auto")  # auto, cpu, cuda, mps
EXTRACTION_BATCH_SIZE = env_int("EXTRACTION_BATCH_SIZE", 64)
# fp32, or bf16/fp16 autocast where the worker's device supports it (part of the cache key).
EXTRACTION_PRECISION = os.environ.get("EXTRACTION_PRECISION") or "fp32"
EXTRACTION_NUM_WORKERS = env_int("EXTRACTION_NUM_WORKERS", 0)
# auto: channels-last memory layout for convolutional image models (faster on CPU and GPU).
EXTRACTION_CHANNELS_LAST = os.environ.get("EXTRACTION_CHANNELS_LAST") or "auto"
# Embeddings are saved every this many stimuli; a crashed extraction resumes from there.
EXTRACTION_CHUNK_SIZE = env_int("EXTRACTION_CHUNK_SIZE", 1024)
# Hugging Face and timm caches: set HF_HOME to a shared volume on GPU machines.

# --- REST API (api/) ----------------------------------------------------------------------
REST_FRAMEWORK = {
    # Scripts send "Authorization: Token <key>"; a logged-in researcher's browser session
    # works too, with DRF's CSRF check on writes. Token first: anonymous callers get a 401.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "api.authentication.TokenAuthentication",  # named tokens (hashed), and DRF's
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["api.permissions.IsResearcher"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["api.parsers.JSONParser"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "api.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "api.schema.AutoSchema",
    "EXCEPTION_HANDLER": "api.errors.exception_handler",
    # ?format= is the exports' own parameter, not a renderer override.
    "URL_FORMAT_OVERRIDE": None,
    # Password guessing on POST /api/auth/token/.
    "DEFAULT_THROTTLE_RATES": {"auth-token": "20/minute"},
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Likeness API",
    "DESCRIPTION": "Register models and datasets, launch runs, read scores, export human "
    "data. Authenticate with `Authorization: Token <token>`: make a named token on "
    "[your API tokens page](/api/tokens/) (shown once, revocable there), or exchange your "
    "username and password at POST /api/auth/token/. "
    'Every error is `{"error": {"code", "message", "fields"}}`.',
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/",
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},  # no online validator
    "REDOC_DIST": "SIDECAR",
    # Several models have fields called kind, status, modality: name each set of choices.
    "ENUM_NAME_OVERRIDES": {
        "ModalityEnum": "evaluation.models.Modality",
        "RunStatusEnum": "evaluation.models.RunStatus",
        "StepStatusEnum": "evaluation.models.StepStatus",
        "TargetKindEnum": "evaluation.models.TargetKind",
        "JudgmentKindEnum": "evaluation.models.JudgmentKind",
        "ValueMeaningEnum": "evaluation.models.ValueMeaning",
        "StudyKindEnum": "annotation.models.StudyKind",
        "StudyStatusEnum": "annotation.models.StudyStatus",
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
