"""``swhid``: a Software Heritage persistent identifier.

Accepted: ``swh:1:dir:<sha1_git>``, ``swh:1:rev:<…>`` and ``swh:1:rel:<…>``, with optional
qualifiers (``;origin=…``), which do not change what is fetched. A revision or release
resolves to its root directory; resolved ref = ``swh:1:dir:<sha1_git>`` and archive_url =
the vault's flat tarball of that directory (``fetch`` asks the vault to cook it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from apps.repos.errors import RecordNotFound, SpecInvalid
from apps.repos.http import fetch_json
from apps.repos.providers.base import ParsedSpec, Resolution, get_path, provider_url
from apps.repos.types import GitCredential, ResolvedRepo
from apps.repos.validation import check_text, parse_http_url

_CORE = re.compile(r"^swh:1:(cnt|dir|rev|rel|snp):([0-9a-f]{40})$")
_QUALIFIER = re.compile(r"^[a-z_]+=[^;]*$")


class SoftwareHeritageProvider:
    name = "swhid"
    label = "Software Heritage ID"
    uses_credentials = False

    def parse(self, spec: str) -> ParsedSpec:
        check_text(spec, what="SWHID")
        core, *qualifiers = spec.split(";")
        match = _CORE.match(core)
        if match is None or not all(_QUALIFIER.match(q) for q in qualifiers):
            raise SpecInvalid(
                f'"{spec[:100]}" is not a Software Heritage id such as swh:1:dir:<40 hex>.'
            )
        kind, digest = match.groups()
        if kind not in ("dir", "rev", "rel"):
            raise SpecInvalid(
                "Only directory, revision and release ids (swh:1:dir, rev, rel) can be launched."
            )
        return ParsedSpec(
            self.name, spec, canonical=core, values={"kind": kind, "hash": digest, "core": core}
        )

    def credential_host(self, parsed: ParsedSpec) -> str:
        return ""

    def resolve(self, parsed: ParsedSpec, credentials: Sequence[GitCredential]) -> Resolution:
        api = provider_url("swhid")
        kind, digest, core = parsed.values["kind"], parsed.values["hash"], parsed.values["core"]
        not_found = RecordNotFound(f"Software Heritage has no object {core}.")
        if kind == "rel":
            release = fetch_json(f"{api}/release/{digest}/", not_found=not_found)
            kind = str(get_path(release, "target_type"))[:3]
            digest = str(get_path(release, "target"))
            if kind not in ("rev", "dir"):
                raise SpecInvalid("That release does not point to a revision or a directory.")
        if kind == "rev":
            revision = fetch_json(f"{api}/revision/{digest}/", not_found=not_found)
            digest = str(get_path(revision, "directory"))
        else:
            fetch_json(f"{api}/directory/{digest}/", not_found=not_found)
        if not re.match(r"^[0-9a-f]{40}$", digest):
            raise RecordNotFound(f"Software Heritage returned no directory for {core}.")
        directory = f"swh:1:dir:{digest}"
        web = re.sub(r"/api/1$", "", api)
        repo = ResolvedRepo(
            provider=self.name,
            spec=parsed.spec,
            kind="swh",
            repo_url=f"{web}/{core}",
            unresolved_ref="",
            resolved_ref=directory,
            persistent_spec=f"swhid/{core}",
            ref_url=f"{web}/{directory}",
            host=parse_http_url(api, allow_query=True).hostport,
            display_name=f"swh {core}",
            archive_url=f"{api}/vault/flat/{directory}/",
        )
        return Resolution(repo=repo)
