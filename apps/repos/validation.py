"""Checks of hostile input, done before anything runs.

A spec, URL, ref or DOI from a user is hostile until checked here:

- ``check_text``: length and control characters (newline, NUL...), for every input.
- ``validate_ref``: a git ref follows ``git check-ref-format`` (no leading ``-``, ``..``,
  ``@{``, ``~^:?*[\\``, ``.lock``...), so it can never be read as an option or a rev
  expression.
- ``parse_http_url``: only ``http(s)://host[:port]/path``; no ``file://``, ``ext::``, ssh,
  scp-like ``user@host:path``, local paths, or user info (credentials never go in URLs).
- ``check_host``: the host must not resolve to a loopback, private, link-local, multicast,
  reserved, unspecified (or IPv4-mapped/6to4/NAT64-embedded such) address, unless
  ``host[:port]`` is in ``settings.BINDERY_ALLOWED_GIT_HOSTS``. Hosts of the operator's
  ``BINDERY_PROVIDER_URLS`` are trusted as configured. The addresses found are returned so
  that git can be pinned to them (``http.curloptResolve``): a DNS answer that changes between
  the check and the connection (rebinding) cannot take git elsewhere.
- ``safe_relative_path``: a file path from a record or an archive stays inside its target.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings

from apps.repos.errors import (
    HostForbidden,
    HostUnresolvable,
    InputControlCharacter,
    InputTooLong,
    RedirectForbidden,
    RefInvalid,
    SpecInvalid,
    UrlCredentialsForbidden,
    UrlInvalid,
    UrlLocalPath,
    UrlSchemeForbidden,
)

MAX_SPEC_LENGTH = 2048
MAX_URL_LENGTH = 2048
MAX_REF_LENGTH = 255

_CONTROL = re.compile(r"[\x00-\x1f\x7f\x80-\x9f\u2028\u2029]")
_SHA = re.compile(r"^[0-9a-fA-F]{40}$")
_REF_FORBIDDEN = re.compile(r"[\s~^:?*\[\\]")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_LABEL = r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}\.?$){_LABEL}(\.{_LABEL})*\.?$")
_NUMERIC_HOST = re.compile(r"^[0-9a-fx.]+$")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SSH_SCHEMES = {"ssh", "git", "git+ssh", "ssh+git", "scp", "sftp"}


def check_text(value: object, *, what: str, max_length: int = MAX_SPEC_LENGTH) -> str:
    """``value`` as a string, refused when too long or holding a control character."""
    if not isinstance(value, str):
        raise SpecInvalid(f"The {what} must be text.")
    if len(value) > max_length:
        raise InputTooLong(f"The {what} is longer than {max_length} characters.")
    if _CONTROL.search(value):
        raise InputControlCharacter(
            f"The {what} contains a control character (such as a newline or NUL)."
        )
    return value


def is_full_sha(ref: str) -> bool:
    return bool(_SHA.match(ref))


def validate_ref(ref: str) -> str:
    """``ref`` if git would accept it as a branch, tag or full ref name (check-ref-format
    rules, plus: no leading ``-`` or ``/``), else RefInvalid. ``HEAD`` and shas pass."""
    check_text(ref, what="git ref", max_length=MAX_REF_LENGTH)
    if not ref:
        raise RefInvalid("Give a branch, tag or commit.")
    if ref.startswith("-"):
        raise RefInvalid("A git ref cannot start with '-'.")
    if ref == "@":
        raise RefInvalid("'@' is not a branch or tag name.")
    if "@{" in ref:
        raise RefInvalid("A git ref cannot contain '@{'.")
    if ".." in ref:
        raise RefInvalid("A git ref cannot contain '..'.")
    if _REF_FORBIDDEN.search(ref):
        raise RefInvalid(
            "A git ref cannot contain spaces or any of ~ ^ : ? * [ \\ (use the name of a "
            "branch or tag, or a full commit sha)."
        )
    if ref.startswith("/") or ref.endswith("/") or "//" in ref:
        raise RefInvalid("A git ref cannot start or end with '/' or contain '//'.")
    if ref.endswith("."):
        raise RefInvalid("A git ref cannot end with '.'.")
    for part in ref.split("/"):
        if part.startswith("."):
            raise RefInvalid("No part of a git ref can start with '.'.")
        if part.endswith(".lock"):
            raise RefInvalid("No part of a git ref can end with '.lock'.")
    return ref


@dataclass(frozen=True)
class HttpUrl:
    """A syntactically safe http(s) URL."""

    scheme: str  # "http" | "https"
    hostname: str  # lower case; IPv6 without brackets
    port: int | None  # as written (None: the scheme's default)
    path: str
    query: str
    url: str  # normalised

    @property
    def effective_port(self) -> int:
        return self.port or _DEFAULT_PORTS[self.scheme]

    @property
    def hostport(self) -> str:
        """``host`` or ``host:port`` (default ports dropped), the form of credentials and of
        BINDERY_ALLOWED_GIT_HOSTS entries."""
        host = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        if self.port is None or self.port == _DEFAULT_PORTS[self.scheme]:
            return host
        return f"{host}:{self.port}"


def refuse_non_http(text: str, *, what: str = "repository URL") -> None:
    """Refuse what is not even trying to be an http(s) URL: options, git transports
    (``ext::``), other schemes (``file:``, ``ssh:``...), scp-like ``user@host:path`` and
    local paths, each with its own code."""
    if text.startswith("-"):
        raise UrlInvalid(f"A {what} cannot start with '-'.")
    head = text.split("/", 1)[0]
    if "::" in head:
        raise UrlSchemeForbidden(
            f"git transports such as '{head.split('::', 1)[0]}::' are not allowed; give an "
            "https:// URL."
        )
    if re.match(r"^[A-Za-z]:[\\/]", text) or text.startswith(("/", "\\", "~", "./", "../")):
        raise UrlLocalPath()
    if text in (".", ".."):
        raise UrlLocalPath()
    match = _SCHEME.match(text)
    if match:
        scheme = match.group(1).lower()
        if scheme in ("http", "https"):
            return
        if scheme in _SSH_SCHEMES or "." in scheme:  # ssh://, git://, or scp-like host:path
            raise UrlSchemeForbidden(
                "ssh and git:// addresses are not supported; give the https:// URL of the "
                "repository."
            )
        raise UrlSchemeForbidden(
            f"'{scheme}:' URLs are not allowed; give an https:// URL of the repository."
        )
    if "@" in head and ":" in text:
        raise UrlSchemeForbidden(
            "ssh addresses (user@host:path) are not supported; give the https:// URL of the "
            "repository."
        )
    raise UrlLocalPath(f"'{text[:80]}' is not an https:// URL; give the full URL.")


def parse_http_url(
    text: str, *, what: str = "repository URL", allow_query: bool = False
) -> HttpUrl:
    """Parse ``text`` as an http(s) URL, refusing anything else (see the module doc)."""
    check_text(text, what=what, max_length=MAX_URL_LENGTH)
    refuse_non_http(text, what=what)
    if "\\" in text or any(c.isspace() for c in text):
        raise UrlInvalid(f"A {what} cannot contain spaces or backslashes.")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise UrlInvalid(f"The {what} has an invalid host or port.") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not text[len(scheme) + 1 :].startswith("//"):
        raise UrlInvalid(f"The {what} must start with https://.")
    netloc = parts.netloc
    if "@" in netloc:
        raise UrlCredentialsForbidden()
    if parts.fragment or "#" in text:
        raise UrlInvalid(f"A {what} cannot contain '#'.")
    if (parts.query or "?" in text) and not allow_query:
        raise UrlInvalid(f"A {what} cannot contain a query ('?').")
    if port is not None and not 0 < port < 65536:
        raise UrlInvalid(f"The {what} has an invalid port.")
    if port is not None and not re.search(r":\d{1,5}$", netloc):
        raise UrlInvalid(f"The {what} has an invalid port.")
    hostname = _normalise_host(netloc.rsplit(":", 1)[0] if port is not None else netloc, what)
    path = parts.path
    segments = path.split("/")
    escaped = not allow_query and re.search(r"%2e|%2f|%5c", path, re.IGNORECASE)
    if any(seg in (".", "..") for seg in segments) or escaped:
        raise UrlInvalid(f"The {what} path cannot contain '.', '..' or escaped slashes.")
    url = urlunsplit((scheme, _netloc(hostname, port), path, parts.query, ""))
    return HttpUrl(
        scheme=scheme, hostname=hostname, port=port, path=path, query=parts.query, url=url
    )


def _netloc(hostname: str, port: int | None) -> str:
    host = f"[{hostname}]" if ":" in hostname else hostname
    return host if port is None else f"{host}:{port}"


def _normalise_host(host: str, what: str) -> str:
    if host.startswith("["):
        if not host.endswith("]") or "%" in host:
            raise UrlInvalid(f"The {what} has an invalid IPv6 host.")
        try:
            return str(ipaddress.IPv6Address(host[1:-1]))
        except ValueError:
            raise UrlInvalid(f"The {what} has an invalid IPv6 host.") from None
    if not host:
        raise UrlInvalid(f"The {what} has no host.")
    try:
        ascii_host = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise UrlInvalid(f"The {what} has an invalid host name.") from None
    if not _HOSTNAME.match(ascii_host):
        raise UrlInvalid(f"The {what} has an invalid host name.")
    return ascii_host.rstrip(".")


def normalise_hostport(text: str) -> str:
    """``host[:port]`` in the canonical form used for credentials (lower case, default ports
    443 and 80 dropped). Accepts a pasted URL and keeps only its host. Raises UrlInvalid or
    UrlCredentialsForbidden."""
    check_text(text, what="host", max_length=300)
    text = text.strip()
    if "://" in text:
        url = parse_http_url(text if text.count("/") > 2 else text + "/", what="host")
        return url.hostport
    if "@" in text:
        raise UrlCredentialsForbidden()
    if not text or "/" in text or any(c.isspace() for c in text):
        raise UrlInvalid("Give a host name such as github.com or git.example.org:8443.")
    url = parse_http_url(f"https://{text}/", what="host")
    return url.hostport


@dataclass(frozen=True)
class HostCheck:
    hostport: str
    addresses: tuple[str, ...] = ()  # validated addresses to pin git to; () = no pinning


def _trusted_hostports() -> set[str]:
    trusted = {h.lower() for h in settings.BINDERY_ALLOWED_GIT_HOSTS}
    for base in settings.BINDERY_PROVIDER_URLS.values():
        try:
            trusted.add(parse_http_url(base, what="provider URL", allow_query=True).hostport)
        except Exception:  # noqa: S112 -- a bad operator URL is reported where it is used
            continue
    return trusted


def is_forbidden_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for anything but a public unicast address, looking inside IPv6 forms that
    embed an IPv4 address (mapped, 6to4, Teredo, NAT64)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded: list[ipaddress.IPv4Address] = []
        if address.ipv4_mapped is not None:
            embedded.append(address.ipv4_mapped)
        if address.sixtofour is not None:
            embedded.append(address.sixtofour)
        if address.teredo is not None:
            embedded.extend(address.teredo)
        if address in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if int(address) >> 32 == 0:  # IPv4-compatible ::a.b.c.d (deprecated)
            embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if any(is_forbidden_address(v4) for v4 in embedded):
            return True
    return (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_unspecified
        or address.is_reserved
        or not address.is_global
    )


def _literal_address(hostname: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(hostname)
    except ValueError:
        pass
    # Forms that C resolvers read as IPv4 although they are not dotted quads:
    # 2130706433, 0x7f000001, 0177.0.0.1, 127.1.
    if _NUMERIC_HOST.match(hostname) and re.search(r"\d", hostname):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(hostname))
        except OSError:
            return None
    return None


def check_host(url: HttpUrl, *, redirect: bool = False) -> HostCheck:
    """Refuse a host that is or resolves to a non-public address (see the module doc).

    Raises HostForbidden (or, for ``redirect``, RedirectForbidden) and HostUnresolvable.
    """
    hostport = url.hostport
    if hostport in _trusted_hostports():
        return HostCheck(hostport=hostport)
    literal = _literal_address(url.hostname)
    if literal is not None:
        if is_forbidden_address(literal):
            raise _forbidden(url, redirect)
        return HostCheck(hostport=hostport)
    if url.hostname == "localhost" or url.hostname.endswith((".localhost", ".local")):
        raise _forbidden(url, redirect)
    try:
        infos = socket.getaddrinfo(url.hostname, url.effective_port, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        raise HostUnresolvable(f"The host {url.hostname} could not be found.") from None
    addresses: list[str] = []
    for info in infos:
        raw = str(info[4][0]).split("%", 1)[0]
        address = ipaddress.ip_address(raw)
        if is_forbidden_address(address):
            raise _forbidden(url, redirect)
        if str(address) not in addresses:
            addresses.append(str(address))
    if not addresses:
        raise HostUnresolvable(f"The host {url.hostname} could not be found.")
    return HostCheck(hostport=hostport, addresses=tuple(addresses))


def _forbidden(url: HttpUrl, redirect: bool) -> Exception:
    if redirect:
        return RedirectForbidden(
            f"The server redirected to {url.hostname}, which is on a private or local network."
        )
    return HostForbidden(
        f"The host {url.hostname} is on a private or local network and is not allowed here."
    )


def check_url(
    text: str, *, what: str = "repository URL", allow_query: bool = False, redirect: bool = False
) -> tuple[HttpUrl, HostCheck]:
    """``parse_http_url`` then ``check_host``. For a redirect target, every refusal is
    RedirectForbidden."""
    if redirect:
        try:
            url = parse_http_url(text, what=what, allow_query=True)
        except Exception:
            raise RedirectForbidden(
                "The server redirected to an address that is not an http(s) URL."
            ) from None
    else:
        url = parse_http_url(text, what=what, allow_query=allow_query)
    return url, check_host(url, redirect=redirect)


def git_pin_config(url: HttpUrl, check: HostCheck) -> list[str]:
    """git ``-c`` options that pin the connection to the validated addresses and refuse
    redirects (a redirect target would not have been checked)."""
    config = ["-c", "http.followRedirects=false"]
    if check.addresses:
        addresses = ",".join(f"[{a}]" if ":" in a else a for a in check.addresses)
        config += ["-c", f"http.curloptResolve={url.hostname}:{url.effective_port}:{addresses}"]
    return config


def safe_relative_path(path: str) -> PurePosixPath:
    """A relative path that stays inside its target directory, else ValueError."""
    if not isinstance(path, str) or not path or len(path) > 4096:
        raise ValueError("empty or overlong path")
    if _CONTROL.search(path) or "\\" in path:
        raise ValueError("control character or backslash in path")
    pure = PurePosixPath(path)
    if pure.is_absolute() or re.match(r"^[A-Za-z]:", path):
        raise ValueError("absolute path")
    parts = [p for p in pure.parts if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        raise ValueError("path leaves its directory")
    if parts[0] == ".git":
        raise ValueError("path inside .git")
    return PurePosixPath(*parts)
