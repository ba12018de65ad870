"""Bindery settings: everything comes from the environment (see .env.example).

Local defaults need nothing: SQLite and secrets under var/, an embedded Redis on a unix
socket under var/ when REDIS_URL is unset. With BINDERY_ENV=production the secrets and the
database must be given and the HTTPS hardening is on.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

from portal.sandbox_network import parse_networks

BASE_DIR = Path(__file__).resolve().parent.parent


class _SecretFiles(environ.FileAwareMapping):
    """``os.environ`` where ``<NAME>_FILE`` names a file holding NAME's value, with the
    file's trailing whitespace stripped: a Secret made with ``kubectl create secret
    --from-file`` from a file written by ``echo`` ends in a newline, which would otherwise
    become part of DATABASE_URL or a token. A value set directly is kept as it is."""

    def __getitem__(self, key: str) -> str:
        value: str = super().__getitem__(key)
        if key in self.files_cache or self.env.get(key + "_FILE"):
            return value.rstrip()
        return value


class _FileAwareEnv(environ.FileAwareEnv):
    ENVIRON = _SecretFiles()


env = _FileAwareEnv()  # every variable also reads from <NAME>_FILE (mounted secrets)
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env")

PRODUCTION = env.str("BINDERY_ENV", default="development") == "production"
TESTING = "pytest" in sys.modules


def _path(name: str, default: Path) -> Path:
    """A directory setting; relative paths are relative to the project root."""
    return (BASE_DIR / env.str(name, default=str(default))).resolve()


VAR_DIR = _path("BINDERY_VAR_DIR", BASE_DIR / "var")
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _local_secret(name: str, make: object) -> str:
    """A secret generated once and kept under var/ (local use only)."""
    path = VAR_DIR / name
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(make() if callable(make) else str(make))
    return path.read_text().strip()


def _required_in_production(name: str, local_default: object) -> str:
    value = env.str(name, default="")
    if value:
        return value
    if PRODUCTION:
        raise ImproperlyConfigured(f"{name} must be set when BINDERY_ENV=production")
    return _local_secret(name.lower(), local_default)


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


# --- Core ---------------------------------------------------------------------------------
SECRET_KEY = _required_in_production("SECRET_KEY", lambda: secrets.token_urlsafe(64))
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list(
    "ALLOWED_HOSTS", default=[] if PRODUCTION else ["127.0.0.1", "localhost", "[::1]", "testserver"]
)
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
SITE_URL = env.str("BINDERY_SITE_URL", default="http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "portal",
    "apps.accounts",
    "apps.teams",
    "apps.repos",
    "apps.builds",
    "apps.sessions",
    "apps.quotas",
    "apps.sharing",
    "apps.workshops",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "portal.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "portal.middleware.BinderyErrorMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"
ASGI_APPLICATION = "portal.asgi.application"
AUTH_USER_MODEL = "accounts.User"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

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

# --- Database -----------------------------------------------------------------------------
DATABASES = {
    "default": environ.Env.db_url_config(
        env.str("DATABASE_URL", default="") or f"sqlite:///{VAR_DIR / 'bindery.sqlite3'}"
    )
}
if PRODUCTION and not env.str("DATABASE_URL", default=""):
    raise ImproperlyConfigured("DATABASE_URL must be set when BINDERY_ENV=production")
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # web, worker and beat share the file: WAL and immediate transactions avoid lock errors.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    # Tests use a file too (not :memory:), so threads and processes share it with locking
    # that waits, as web, worker and beat do.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}
else:
    # Tests run workers in threads: connections closed after each task leave none behind.
    # The web process (ASGI) runs each request's sync code on a thread of its own, so a
    # connection kept per thread (CONN_MAX_AGE) would be one per request: a room of 30
    # joining at once ran PostgreSQL out of connections. It takes them from a pool instead
    # (psycopg_pool, DATABASE_POOL_WEB_SIZE at most; a request's connection goes back when
    # it ends, an event stream's after each query), which also spares each request the
    # ~10 ms of opening one. DATABASE_POOL_WEB_SIZE=0: a new connection per request.
    _web = bool(os.environ.get("BINDERY_ASGI")) and not TESTING
    WEB_POOL_SIZE = env.int("DATABASE_POOL_WEB_SIZE", default=20) if _web else 0
    DATABASES["default"]["CONN_MAX_AGE"] = (
        0 if TESTING or WEB_POOL_SIZE
        else env.int("DATABASE_CONN_MAX_AGE_WEB", default=0) if _web
        else env.int("DATABASE_CONN_MAX_AGE", default=60)
    )  # fmt: skip
    # with the pool: each connection is checked as it is taken (one empty round trip), so
    # that one PostgreSQL closed meanwhile (a restart) is replaced, not handed to a request
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    if WEB_POOL_SIZE:
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": min(2, WEB_POOL_SIZE),
            "max_size": WEB_POOL_SIZE,
            "timeout": env.float("DATABASE_POOL_WEB_TIMEOUT", default=10.0),
            "max_idle": 300,
        }

# --- Redis: broker, channel layer, cache -------------------------------------------------
REDIS_EMBEDDED = not env.str("REDIS_URL", default="")
# Each test run gets its own embedded server, so parallel runs never stop each other's.
REDIS_SOCKET = VAR_DIR / "redis" / (f"test-{os.getpid()}.sock" if TESTING else "redis.sock")
REDIS_URL = env.str("REDIS_URL", default="") or f"unix://{REDIS_SOCKET}"
if PRODUCTION and REDIS_EMBEDDED:
    raise ImproperlyConfigured("REDIS_URL must be set when BINDERY_ENV=production")
REDIS_KEY_PREFIX = env.str("BINDERY_REDIS_PREFIX", default="bindery")

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": REDIS_KEY_PREFIX,
        "TIMEOUT": 300,
    }
}

# --- Live streams (the channel layer, event streams, websockets) -------------------------
# channels_redis blocks in BZPOPMIN for 5 s at a time: redis-py's read timeout must be
# longer, or it gives up on reads the server is about to answer (its default is 5 s).
BINDERY_CHANNEL_SOCKET_TIMEOUT = env.float("BINDERY_CHANNEL_SOCKET_TIMEOUT", default=15.0)
# The longest silence on an event stream: a `:keepalive` comment comes at least this often.
BINDERY_STREAM_KEEPALIVE = env.float("BINDERY_STREAM_KEEPALIVE", default=15.0)
# Followers re-read the rows after this many quiet seconds (a publish may have been lost)...
BINDERY_STREAM_CHECK_EVERY = env.float("BINDERY_STREAM_CHECK_EVERY", default=10.0)
# ...and this often while the channel layer is failing, reconnecting with back-off up to
# BINDERY_STREAM_RETRY_MAX seconds between attempts.
BINDERY_STREAM_POLL_EVERY = env.float("BINDERY_STREAM_POLL_EVERY", default=2.0)
BINDERY_STREAM_RETRY_MAX = env.float("BINDERY_STREAM_RETRY_MAX", default=10.0)
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [
                {
                    "address": REDIS_URL,
                    "socket_timeout": BINDERY_CHANNEL_SOCKET_TIMEOUT,
                    "socket_connect_timeout": 5,
                }
            ],
            "prefix": f"{REDIS_KEY_PREFIX}:asgi",
            "expiry": 30,
        },
    }
}

# --- Celery -------------------------------------------------------------------------------
# kombu names unix sockets redis+socket://; everything else takes redis:// or unix:// as is.
CELERY_BROKER_URL = (
    "redis+socket://" + REDIS_URL.removeprefix("unix://")
    if REDIS_URL.startswith("unix://")
    else REDIS_URL
)
CELERY_BROKER_TRANSPORT_OPTIONS = {"global_keyprefix": f"{REDIS_KEY_PREFIX}:celery:"}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Backstops for a prefork worker (deploy/); the threads pool (the Procfile's) enforces no time
# limit: each task bounds its own waits (the builder's BINDERY_BUILD_TIMEOUT, the launch's
# deadline, the hub client's timeouts) and beat's reapers fail what a lost worker left.
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=300)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=360)
# Tasks at once in a worker started without --concurrency (the Procfile's: one process, tasks
# in threads). A launch holds its thread while its server starts (seconds, tens of seconds
# when a room launches at once), and the rest mostly wait on the hub, git and uv (builds are
# bounded by BINDERY_BUILDS_AT_ONCE): a thread each costs next to nothing, so there are
# enough that a burst of launches never queues behind busy ones (with 16, the 17th of 20 at
# once waited ~20 s to start). 4 per CPU, 64 to 256; each busy thread holds a database
# connection (PostgreSQL's max_connections is 100 by default).
CELERY_WORKER_CONCURRENCY = int(
    env.str("BINDERY_WORKER_CONCURRENCY", default="")
    or min(256, max(64, 4 * (os.cpu_count() or 1)))
)
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    "reap-stale-builds": {"task": "apps.builds.tasks.reap_stale_builds", "schedule": 60.0},
    "reconcile-sessions": {"task": "apps.sessions.tasks.reconcile_sessions", "schedule": 60.0},
    "cull-sessions": {"task": "apps.sessions.tasks.cull_sessions", "schedule": 60.0},
    "prune-build-logs": {"task": "apps.builds.tasks.prune_build_logs", "schedule": 3600.0},
    "prune-environments": {"task": "apps.builds.tasks.prune_environments", "schedule": 3600.0},
    "clean-build-pods": {"task": "apps.builds.tasks.clean_build_pods", "schedule": 300.0},
    "account-usage": {"task": "apps.quotas.tasks.account_usage", "schedule": 60.0},
    "tend-workshops": {"task": "apps.workshops.tasks.tend_workshops", "schedule": 15.0},
    "fill-hot-pool": {"task": "apps.sessions.tasks.fill_hot_pool", "schedule": 15.0},
    "measure-storage": {
        "task": "apps.quotas.tasks.measure_storage",
        "schedule": float(env.int("BINDERY_STORAGE_MEASURE_INTERVAL", default=900)),
    },
}
CELERY_TIMEZONE = "UTC"  # beat's clock; quota months follow TIME_ZONE

# --- Accounts (django-allauth) ------------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
# Sign-in redirects keep same-site paths only; the verification email keeps the return path.
ACCOUNT_ADAPTER = "apps.accounts.adapters.AccountAdapter"
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = env.str("ACCOUNT_EMAIL_VERIFICATION", default="mandatory")
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_LOGOUT_ON_PASSWORD_CHANGE = False
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_DEFAULT_HTTP_PROTOCOL = "https" if PRODUCTION else "http"
LOGIN_REDIRECT_URL = "/"
LOGIN_URL = "account_login"
SOCIALACCOUNT_EMAIL_AUTHENTICATION = False
SOCIALACCOUNT_PROVIDERS: dict[str, dict[str, object]] = {}
for _provider, _prefix in (("github", "GITHUB"), ("gitlab", "GITLAB"), ("orcid", "ORCID")):
    _client_id = env.str(f"{_prefix}_CLIENT_ID", default="")
    _secret = env.str(f"{_prefix}_CLIENT_SECRET", default="")
    if _client_id and _secret:
        INSTALLED_APPS.append(f"allauth.socialaccount.providers.{_provider}")
        SOCIALACCOUNT_PROVIDERS[_provider] = {
            "APPS": [{"client_id": _client_id, "secret": _secret, "key": ""}]
        }
if env.str("GITLAB_URL", default="") and "gitlab" in SOCIALACCOUNT_PROVIDERS:
    SOCIALACCOUNT_PROVIDERS["gitlab"]["APPS"][0]["settings"] = {  # type: ignore[index]
        "gitlab_url": env.str("GITLAB_URL")
    }
if env.bool("ORCID_SANDBOX", default=False) and "orcid" in SOCIALACCOUNT_PROVIDERS:
    SOCIALACCOUNT_PROVIDERS["orcid"]["BASE_DOMAIN"] = "sandbox.orcid.org"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Email --------------------------------------------------------------------------------
vars().update(env.email_url("EMAIL_URL", default="consolemail://"))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Bindery <bindery@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# --- REST API -----------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apps.accounts.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "portal.api.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "portal.api.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
if DEBUG:
    REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"].append(  # type: ignore[attr-defined]
        "rest_framework.renderers.BrowsableAPIRenderer"
    )
SPECTACULAR_SETTINGS = {
    "TITLE": "Bindery API",
    "DESCRIPTION": (
        "Launch git repositories and DOI records as Jupyter environments. Authenticate with "
        "`Authorization: token <personal token>` (or `Bearer <token>`)."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Several models have a "status": name each choice set after its model.
    "ENUM_NAME_OVERRIDES": {
        "BuildStatusEnum": "apps.builds.models.Build.Status",
        "SessionStatusEnum": "apps.sessions.models.Session.Status",
        "WorkshopStatusEnum": "apps.workshops.models.Workshop.Status",
    },
}

# --- Static files -------------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if PRODUCTION
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = not PRODUCTION

# --- Internationalisation -----------------------------------------------------------------
LANGUAGE_CODE = "en-us"
# The site's time zone: monthly quota periods (session hours, build minutes) follow it.
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

# --- Security (production) ----------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
# Names of their own, so they never collide with the hub's cookies (jupyterhub-*) nor with
# what a user server sets; production also keeps the hub on another host (below).
SESSION_COOKIE_NAME = "bindery_sessionid"
CSRF_COOKIE_NAME = "bindery_csrftoken"
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy on every response (portal.middleware.ContentSecurityPolicyMiddleware):
# scripts only from our static files, no inline script. Styles allow inline: xterm.js and
# Swagger UI inject <style> elements at run time.
BINDERY_CSP = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'", "'unsafe-inline'"],
    "img-src": ["'self'", "data:"],
    "font-src": ["'self'", "data:"],
    "connect-src": ["'self'"],  # plus ws://<host> and wss://<host> of the request
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "frame-ancestors": ["'none'"],
}
# /admin/ sign-in: this many failures per client address and user name within the window
# (seconds) answer 429 until the window ends.
BINDERY_ADMIN_LOGIN_ATTEMPTS = env.int("BINDERY_ADMIN_LOGIN_ATTEMPTS", default=5)
BINDERY_ADMIN_LOGIN_WINDOW = env.int("BINDERY_ADMIN_LOGIN_WINDOW", default=15 * 60)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_REDIRECT_EXEMPT = [r"^health$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    # Bearer tokens in URL paths (share links, invitations) are redacted from every line.
    "filters": {"redact": {"()": "portal.logfilters.RedactSecrets"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact"]}
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- Bindery ------------------------------------------------------------------------------
BINDERY_BACKEND = env.str("BINDERY_BACKEND", default="local")
# Fernet keys for secrets at rest (repository credentials), comma-separated: the first
# encrypts, every one decrypts, so a new key can be put first and old data re-encrypted
# with `manage.py rotate_encryption_key`.
BINDERY_ENCRYPTION_KEYS = [
    k.strip()
    for k in _required_in_production("BINDERY_ENCRYPTION_KEY", _fernet_key).split(",")
    if k.strip()
]

# --- Repositories -------------------------------------------------------------------------
# host[:port] entries that may resolve to loopback/private addresses (tests, on-premises git).
BINDERY_ALLOWED_GIT_HOSTS = [h.lower() for h in env.list("BINDERY_ALLOWED_GIT_HOSTS", default=[])]
# Per-provider regular expressions matched against the spec, as BinderHub's banned_specs /
# allowed_specs: {"gh": ["^evil-org/.*"]}. An empty allow list allows everything.
BINDERY_BANNED_SPECS: dict[str, list[str]] = env.json("BINDERY_BANNED_SPECS", default={})
BINDERY_ALLOWED_SPECS: dict[str, list[str]] = env.json("BINDERY_ALLOWED_SPECS", default={})
# Where the hosted providers live (override for GitHub Enterprise, self-hosted GitLab...).
BINDERY_DEFAULT_PROVIDER_URLS: dict[str, str] = {
    "gh": "https://github.com",
    "gist": "https://gist.github.com",
    "gl": "https://gitlab.com",
    "zenodo": "https://zenodo.org",
    "figshare": "https://api.figshare.com/v2",
    "hydroshare": "https://www.hydroshare.org",
    "swhid": "https://archive.softwareheritage.org/api/1",
    "doi": "https://doi.org",
}
BINDERY_PROVIDER_URLS: dict[str, str] = {
    **BINDERY_DEFAULT_PROVIDER_URLS,
    **env.json("BINDERY_PROVIDER_URLS", default={}),
}
BINDERY_GIT_TIMEOUT = env.int("BINDERY_GIT_TIMEOUT", default=60)
# Seconds a public repository's ref stays resolved (git ls-remote's answer, shared by every
# launch); a push is seen at most this long after. 0: ask the host at every launch.
BINDERY_REF_CACHE_SECONDS = env.int("BINDERY_REF_CACHE_SECONDS", default=10)

# --- Builds -------------------------------------------------------------------------------
BINDERY_BUILD_TIMEOUT = env.int("BINDERY_BUILD_TIMEOUT", default=20 * 60)
# Environments and the uv cache; bound whole into the build sandbox (keep nothing else in it).
BINDERY_BUILD_DIR = _path("BINDERY_BUILD_DIR", VAR_DIR / "build")
BINDERY_ENVS_DIR = _path("BINDERY_ENVS_DIR", BINDERY_BUILD_DIR / "envs")
BINDERY_CHECKOUTS_DIR = _path("BINDERY_CHECKOUTS_DIR", VAR_DIR / "checkouts")
BINDERY_UV_CACHE_DIR = _path("BINDERY_UV_CACHE_DIR", BINDERY_BUILD_DIR / "uv-cache")
# The Jupyter base set, installed and byte-compiled once per (Python, base set) and shared
# read-only by environments (builds/backends/local/shared_base.py): a build compiles only
# the repository's own packages. Remade after BINDERY_SHARED_BASE_DAYS (unpinned releases
# drift on the index). BINDERY_BASES_DIR must stay on the uv cache's filesystem.
BINDERY_SHARED_BASE = env.bool("BINDERY_SHARED_BASE", default=True)
BINDERY_SHARED_BASE_DAYS = env.float("BINDERY_SHARED_BASE_DAYS", default=7.0)
BINDERY_BASES_DIR = env.str("BINDERY_BASES_DIR", default="")
# Package index for builds; offline builds use only what the uv cache holds.
BINDERY_PACKAGE_INDEX = env.str("BINDERY_PACKAGE_INDEX", default="")
BINDERY_UV_OFFLINE = env.bool("BINDERY_UV_OFFLINE", default=False)
# Size budget for `manage.py prune_builds` (bytes; suffixes K, M, G accepted).
BINDERY_BUILD_DISK_BUDGET = env.str("BINDERY_BUILD_DISK_BUDGET", default="20G")
# on: code from repositories (builds, postBuild, sessions) runs only in the sandbox
# (apps.sandbox: bubblewrap, unprivileged uids, no capabilities), and is refused where this
# machine cannot do that; off: it runs as root without one (a loud warning; trusted use only).
BINDERY_SANDBOX = env.str("BINDERY_SANDBOX", default="on")
# Sandboxes' host uids start here (apps.sandbox.Ids: builds, users, teams' groups).
BINDERY_SANDBOX_UID_BASE = env.int("BINDERY_SANDBOX_UID_BASE", default=1_000_000)
# Limits on each build command's process tree (on top of BINDERY_BUILD_TIMEOUT).
BINDERY_BUILD_MAX_PROCESSES = env.int("BINDERY_BUILD_MAX_PROCESSES", default=512)
BINDERY_BUILD_MAX_FILE_BYTES = env.int("BINDERY_BUILD_MAX_FILE_BYTES", default=8 * 1024**3)
# Each build's memory (cgroup; K/M/G suffixes) and CPUs (cores; 0: no CPU limit).
BINDERY_BUILD_MEMORY = env.str("BINDERY_BUILD_MEMORY", default="4G")
BINDERY_BUILD_CPU = env.float("BINDERY_BUILD_CPU", default=0.0)
# Sessions' network: auto (an own namespace with pasta where possible, else the host's
# network with a warning), isolated (required), or shared.
BINDERY_SESSION_NETWORK = env.str("BINDERY_SESSION_NETWORK", default="auto")
# The same for builds (uv and postBuild): the internet, nothing on this machine.
BINDERY_BUILD_NETWORK = env.str("BINDERY_BUILD_NETWORK", default="auto")
# What sandboxes (builds and sessions) reach: the internet, but neither this machine, nor
# link-local (cloud metadata), shared, private, multicast or reserved IPv4 ranges, nor the
# database's and Redis's hosts (apps.netns.DEFAULT_BLOCKED, portal.sandbox_network), the
# host's DNS resolvers excepted (port 53). CIDRs listed here are lifted (comma-separated,
# e.g. an on-premises package mirror's 10.20.0.0/16; the most specific entry wins, so the
# database's and Redis's hosts inside a listed range stay blocked unless listed themselves).
BINDERY_SANDBOX_ALLOWED_NETWORKS = parse_networks(
    env.list("BINDERY_SANDBOX_ALLOWED_NETWORKS", default=[]),
    name="BINDERY_SANDBOX_ALLOWED_NETWORKS",
)
# The stored log of one build: at most this many bytes (UTF-8; the rest is not stored, the
# build goes on), and lines cut at this many bytes.
BINDERY_BUILD_LOG_MAX_BYTES = env.int("BINDERY_BUILD_LOG_MAX_BYTES", default=2 * 1024 * 1024)
BINDERY_BUILD_LOG_MAX_LINE = env.int("BINDERY_BUILD_LOG_MAX_LINE", default=4096)
# Beat deletes the stored log lines of builds finished longer ago than this (the builds stay).
BINDERY_BUILD_LOG_RETENTION_DAYS = env.int("BINDERY_BUILD_LOG_RETENTION_DAYS", default=30)

# --- Sessions and the hub -----------------------------------------------------------------
BINDERY_HUB_DIR = _path("BINDERY_HUB_DIR", VAR_DIR / "hub")
BINDERY_HUB_BIND = env.str("BINDERY_HUB_BIND", default="127.0.0.1:8001")  # the proxy
BINDERY_HUB_API_BIND = env.str("BINDERY_HUB_API_BIND", default="127.0.0.1:8081")  # the hub
# The proxy's own REST API (the hub talks to it); default: the public port + 1.
BINDERY_HUB_PROXY_API_BIND = env.str("BINDERY_HUB_PROXY_API_BIND", default="")
# Seconds runhub's watchdog gives a hub whose supervisor died to stop by itself (its servers
# take up to 15 s) before it sends TERM.
BINDERY_HUB_ORPHAN_GRACE = env.float("BINDERY_HUB_ORPHAN_GRACE", default=20.0)
BINDERY_HUB_URL = env.str("BINDERY_HUB_URL", default=f"http://{BINDERY_HUB_BIND}").rstrip("/")
# Per-user subdomains for the hub (c.JupyterHub.subdomain_host, e.g. https://hub.example.org:
# user servers at https://<hub user>.hub.example.org), so no two users share an origin.
BINDERY_HUB_SUBDOMAIN_HOST = env.str("BINDERY_HUB_SUBDOMAIN_HOST", default="").rstrip("/")
if BINDERY_HUB_SUBDOMAIN_HOST and "://" not in BINDERY_HUB_SUBDOMAIN_HOST:
    BINDERY_HUB_SUBDOMAIN_HOST = "https://" + BINDERY_HUB_SUBDOMAIN_HOST  # as JupyterHub does
if PRODUCTION:
    # The portal's cookies must never reach user servers: the browser sends cookies to every
    # port of a host, so the hub (and its user subdomains) must live on another host name.
    _portal_host = (urlsplit(SITE_URL).hostname or "").lower()
    for _name, _url in (
        ("BINDERY_HUB_URL", BINDERY_HUB_URL),
        ("BINDERY_HUB_SUBDOMAIN_HOST", BINDERY_HUB_SUBDOMAIN_HOST),
    ):
        if _url and (urlsplit(_url).hostname or "").lower() == _portal_host:
            raise ImproperlyConfigured(
                f"{_name} must not have the portal's host name ({_portal_host}) when "
                "BINDERY_ENV=production: the portal's cookies would reach user servers"
            )
BINDERY_HUB_API_URL = env.str(
    "BINDERY_HUB_API_URL", default=f"http://{BINDERY_HUB_API_BIND}/hub/api"
).rstrip("/")
BINDERY_HUB_TOKEN = _required_in_production("BINDERY_HUB_TOKEN", lambda: secrets.token_hex(32))
BINDERY_SESSIONS_DIR = _path("BINDERY_SESSIONS_DIR", VAR_DIR / "sessions")
BINDERY_VOLUMES_DIR = _path("BINDERY_VOLUMES_DIR", VAR_DIR / "volumes")
BINDERY_IDLE_TIMEOUT = env.int("BINDERY_IDLE_TIMEOUT", default=30 * 60)
BINDERY_MAX_AGE = env.int("BINDERY_MAX_AGE", default=8 * 3600)
BINDERY_ANONYMOUS_LAUNCH = env.bool("BINDERY_ANONYMOUS_LAUNCH", default=False)
BINDERY_SESSION_MEMORY = env.str("BINDERY_SESSION_MEMORY", default="2G")
BINDERY_SESSION_PROCESSES = env.int("BINDERY_SESSION_PROCESSES", default=256)
BINDERY_MAX_SESSIONS_PER_USER = env.int("BINDERY_MAX_SESSIONS_PER_USER", default=3)
# Builds one user may have running at once (429 BUILD_QUOTA_EXCEEDED past that).
BINDERY_MAX_BUILDS_PER_USER = env.int("BINDERY_MAX_BUILDS_PER_USER", default=2)
# Builds one worker process runs at once (more wait, pending, in the queue). Default: the
# machine's cores, at least 2: a build is mostly uv and byte-compiling, which use a core each.
BINDERY_BUILDS_AT_ONCE = int(
    env.str("BINDERY_BUILDS_AT_ONCE", default="") or max(2, os.cpu_count() or 1)
)
# Session servers the local hub starts at once, from the working copy to the port open (the
# single-user server's imports are ~2 s of a core each); the others wait their turn, first
# come first served, and are told so. Default: twice the cores, at least 2. 0: no bound.
_starts = env.str("BINDERY_SERVER_STARTS_AT_ONCE", default="")
BINDERY_SERVER_STARTS_AT_ONCE = int(_starts) if _starts else max(2, 2 * (os.cpu_count() or 1))
# Session servers start through apps/sessions/backends/local/lean_singleuser.py, which keeps
# the hub's ORM, SQLAlchemy and Alembic out of jupyterhub-singleuser's imports (~0.7 s of a
# core per start) and falls back to the plain import where a JupyterHub release needs them.
# False: run the environment's jupyterhub-singleuser as it is.
BINDERY_SERVER_LEAN_START = env.bool("BINDERY_SERVER_LEAN_START", default=True)
BINDERY_MAX_SESSIONS_ANONYMOUS = env.int("BINDERY_MAX_SESSIONS_ANONYMOUS", default=1)
# Quotas (apps/quotas/limits.py): the defaults a user (and a member within a team) has
# without limits of their own; empty = unlimited. CPU per session in cores, session hours
# and build minutes per calendar month, storage per volume (2G, 500M...).
BINDERY_SESSION_CPU = env.str("BINDERY_SESSION_CPU", default="")
BINDERY_SESSION_HOURS_PER_MONTH = env.str("BINDERY_SESSION_HOURS_PER_MONTH", default="")
BINDERY_BUILD_MINUTES_PER_MONTH = env.str("BINDERY_BUILD_MINUTES_PER_MONTH", default="")
BINDERY_VOLUME_STORAGE = env.str("BINDERY_VOLUME_STORAGE", default="")
# Hard ceilings for everyone, and a team pool's defaults: JSON objects of limit names in the
# API's units, e.g. {"sessions": 20, "memory": 8589934592, "session_hours": 500}.
BINDERY_QUOTA_CEILINGS = env.str("BINDERY_QUOTA_CEILINGS", default="")
BINDERY_QUOTA_TEAM_DEFAULTS = env.str("BINDERY_QUOTA_TEAM_DEFAULTS", default="")
# A team's ceiling until staff set its own: a person's defaults, overridden by this JSON
# (e.g. {"sessions": 30, "session_hours": 400}). Anyone may create a team.
BINDERY_QUOTA_TEAM_CEILING = env.str("BINDERY_QUOTA_TEAM_CEILING", default="")
# Everything one person runs at once, personal and for all their teams together.
BINDERY_MAX_SESSIONS_PER_PERSON = env.int("BINDERY_MAX_SESSIONS_PER_PERSON", default=10)
BINDERY_MAX_BUILDS_PER_PERSON = env.int("BINDERY_MAX_BUILDS_PER_PERSON", default=4)
# The most one session may ask for when no ceiling names it (default: this machine's cores
# and memory); set them to a node's size on Kubernetes.
BINDERY_SESSION_CPU_MAX = env.str("BINDERY_SESSION_CPU_MAX", default="")
BINDERY_SESSION_MEMORY_MAX = env.str("BINDERY_SESSION_MEMORY_MAX", default="")
# Workshops (apps/workshops): warm servers start this many seconds before a workshop opens,
# at most this many at once across workshops (each holds its seat's memory: bound it by
# what the machine can hold), and at most this many start at once. Sessions are warned this
# many minutes before the workshop closes; guest seats are removed this long after it closes.
BINDERY_WORKSHOP_WARM_LEAD = env.int("BINDERY_WORKSHOP_WARM_LEAD", default=900)
BINDERY_WORKSHOP_WARM_MAX = env.int("BINDERY_WORKSHOP_WARM_MAX", default=20)
BINDERY_WORKSHOP_WARM_STARTS = env.int("BINDERY_WORKSHOP_WARM_STARTS", default=4)
# Hot servers (apps.sessions.hot): ready servers of the environments visitors launched most
# in the last BINDERY_HOT_WINDOW seconds (at least BINDERY_HOT_MIN_LAUNCHES times), handed to
# the next visitor who launches one, so that a launch is a handover. At most this many, their
# memory limits at most BINDERY_HOT_MEMORY in all; one unclaimed for BINDERY_HOT_IDLE
# seconds is stopped (and replaced while its environment stays among the most launched).
# 0 servers: none.
BINDERY_HOT_SERVERS = env.int("BINDERY_HOT_SERVERS", default=2)
BINDERY_HOT_MEMORY = env.str("BINDERY_HOT_MEMORY", default="4G")
BINDERY_HOT_IDLE = env.int("BINDERY_HOT_IDLE", default=1800)
BINDERY_HOT_WINDOW = env.int("BINDERY_HOT_WINDOW", default=86400)
BINDERY_HOT_MIN_LAUNCHES = env.int("BINDERY_HOT_MIN_LAUNCHES", default=2)
# An unclaimed warm server older than this (seconds) is replaced by a fresh one, so that a
# server handed over late still has its whole session (age and token) ahead of it.
BINDERY_WORKSHOP_WARM_RECYCLE = env.int("BINDERY_WORKSHOP_WARM_RECYCLE", default=3600)
BINDERY_WORKSHOP_CLOSE_WARNING = env.int("BINDERY_WORKSHOP_CLOSE_WARNING", default=10)
BINDERY_WORKSHOP_GUEST_RETENTION = env.int("BINDERY_WORKSHOP_GUEST_RETENTION", default=86400)
# Who may create workshops: "any" signed-in user, or "staff" (team admins always may, for
# their team).
BINDERY_WORKSHOP_CREATORS = env.str("BINDERY_WORKSHOP_CREATORS", default="any")
# Joins by code over the API (POST /api/v1/workshops/join/) per client address, as DRF
# writes rates ("60/min", "1000/hour"; empty: unlimited). Codes are short: this stops walking
# them. A room behind one NAT address shares it: raise it for large workshops.
BINDERY_WORKSHOP_JOIN_RATE = env.str("BINDERY_WORKSHOP_JOIN_RATE", default="60/min")
# Sessions are warned this many minutes before their month's session hours run out.
BINDERY_QUOTA_WARN_MINUTES = env.int("BINDERY_QUOTA_WARN_MINUTES", default=10)
# How often (seconds) beat measures the volumes of running sessions for the ledger.
BINDERY_STORAGE_MEASURE_INTERVAL = env.int("BINDERY_STORAGE_MEASURE_INTERVAL", default=900)
# Outside HTTP calls (record providers): timeout per request, and the most a record may weigh.
BINDERY_HTTP_TIMEOUT = env.int("BINDERY_HTTP_TIMEOUT", default=30)
BINDERY_RECORD_MAX_BYTES = env.int("BINDERY_RECORD_MAX_BYTES", default=2 * 1024**3)
BINDERY_SWH_POLL_INTERVAL = env.float("BINDERY_SWH_POLL_INTERVAL", default=5.0)
# The interpreter builds use when runtime.txt names none (default: the portal's own), and
# the uv binary (default: the one installed with the portal).
BINDERY_BUILD_PYTHON = env.str("BINDERY_BUILD_PYTHON", default="")
BINDERY_UV_BIN = env.str("BINDERY_UV_BIN", default="")

# --- Kubernetes backend (BINDERY_BACKEND=kubernetes) -----------------------------------------
# Read by apps.builds.backends.kubernetes (builds) and the session backend; checked by
# `manage.py check` (apps.builds.checks) only when the backend is in use.


def _k8s_json(name: str, default: object) -> object:
    """A JSON setting; malformed JSON is kept as the text, for the system check to name."""
    raw = env.str(name, default="")
    if not raw.strip():
        return default
    try:
        return json.loads(raw)
    except ValueError:
        return raw


BINDERY_K8S_NAMESPACE = env.str("BINDERY_K8S_NAMESPACE", default="bindery")
BINDERY_K8S_KUBECONFIG = env.str("BINDERY_K8S_KUBECONFIG", default="")  # "": in-cluster
BINDERY_K8S_API_TIMEOUT = env.float("BINDERY_K8S_API_TIMEOUT", default=10.0)
BINDERY_K8S_BUILD_IMAGE = env.str(
    "BINDERY_K8S_BUILD_IMAGE", default="quay.io/jupyterhub/repo2docker:2024.07.0"
)
BINDERY_K8S_BUILD_NODE_SELECTOR = _k8s_json("BINDERY_K8S_BUILD_NODE_SELECTOR", {})
BINDERY_K8S_BUILD_TOLERATIONS = _k8s_json("BINDERY_K8S_BUILD_TOLERATIONS", [])
BINDERY_K8S_BUILD_CPU_REQUEST = env.str("BINDERY_K8S_BUILD_CPU_REQUEST", default="500m")
BINDERY_K8S_BUILD_CPU_LIMIT = env.str("BINDERY_K8S_BUILD_CPU_LIMIT", default="2")
BINDERY_K8S_BUILD_MEMORY_REQUEST = env.str("BINDERY_K8S_BUILD_MEMORY_REQUEST", default="1Gi")
BINDERY_K8S_BUILD_MEMORY_LIMIT = env.str("BINDERY_K8S_BUILD_MEMORY_LIMIT", default="4Gi")
BINDERY_K8S_BUILD_TIMEOUT = env.int("BINDERY_K8S_BUILD_TIMEOUT", default=BINDERY_BUILD_TIMEOUT)
BINDERY_K8S_BUILD_PENDING_TIMEOUT = env.int("BINDERY_K8S_BUILD_PENDING_TIMEOUT", default=300)
BINDERY_K8S_DOCKER_SOCKET = env.str("BINDERY_K8S_DOCKER_SOCKET", default="/var/run/docker.sock")
BINDERY_K8S_BUILD_POD_TTL = env.int("BINDERY_K8S_BUILD_POD_TTL", default=3600)
BINDERY_REGISTRY_URL = env.str("BINDERY_REGISTRY_URL", default="").rstrip("/")
BINDERY_REGISTRY_PREFIX = env.str("BINDERY_REGISTRY_PREFIX", default="")
BINDERY_REGISTRY_USERNAME = env.str("BINDERY_REGISTRY_USERNAME", default="")
BINDERY_REGISTRY_PASSWORD = env.str("BINDERY_REGISTRY_PASSWORD", default="")
BINDERY_REGISTRY_PUSH_SECRET = env.str("BINDERY_REGISTRY_PUSH_SECRET", default="")
# Sessions on the cluster (KubeSpawner).
BINDERY_K8S_SESSION_NODE_SELECTOR = _k8s_json("BINDERY_K8S_SESSION_NODE_SELECTOR", {})
BINDERY_K8S_SESSION_TOLERATIONS = _k8s_json("BINDERY_K8S_SESSION_TOLERATIONS", [])
BINDERY_K8S_STORAGE_CLASS = env.str("BINDERY_K8S_STORAGE_CLASS", default="")  # "": the default
BINDERY_K8S_TEAM_STORAGE_CLASS = env.str("BINDERY_K8S_TEAM_STORAGE_CLASS", default="")
BINDERY_K8S_VOLUME_SIZE = env.str("BINDERY_K8S_VOLUME_SIZE", default="10Gi")
BINDERY_K8S_IMAGE_PULL_SECRET = env.str("BINDERY_K8S_IMAGE_PULL_SECRET", default="")
if PRODUCTION and BINDERY_BACKEND == "kubernetes" and not BINDERY_REGISTRY_PREFIX:
    raise ImproperlyConfigured(
        "BINDERY_REGISTRY_PREFIX must be set when BINDERY_BACKEND=kubernetes and "
        "BINDERY_ENV=production: it says where built images are pushed "
        "(e.g. registry.example.org/bindery/)"
    )
