"""Errors of repository resolution, input checks and credentials.

Every refusal has a stable code (the API's ``error`` field) and a sentence a person
understands. Messages never contain a token: they are written here or built from the
user's own input (which is never a secret), never from a credential.
"""

from __future__ import annotations

from portal.errors import BinderyError


class InputTooLong(BinderyError):
    code = "INPUT_TOO_LONG"
    default_message = "That input is too long."


class InputControlCharacter(BinderyError):
    code = "INPUT_CONTROL_CHARACTER"
    default_message = "That input contains a control character (such as a newline or NUL)."


class ProviderUnknown(BinderyError):
    status = 404
    code = "PROVIDER_UNKNOWN"
    default_message = "Unknown repository provider."


class SpecInvalid(BinderyError):
    code = "SPEC_INVALID"
    default_message = "That repository specification is not valid."


class RefInvalid(BinderyError):
    code = "REF_INVALID"
    default_message = "That is not a valid git branch, tag or commit name."


class UrlInvalid(BinderyError):
    code = "URL_INVALID"
    default_message = "That is not a valid repository URL."


class UrlSchemeForbidden(BinderyError):
    code = "URL_SCHEME_FORBIDDEN"
    default_message = "Only http:// and https:// repository URLs are accepted."


class UrlLocalPath(BinderyError):
    code = "URL_LOCAL_PATH"
    default_message = "A path on this machine is not a repository URL; give an https:// URL."


class UrlCredentialsForbidden(BinderyError):
    code = "URL_CREDENTIALS_FORBIDDEN"
    default_message = (
        "Repository URLs cannot contain a user name or password; store a credential for the "
        "host instead."
    )


class HostForbidden(BinderyError):
    status = 403
    code = "HOST_FORBIDDEN"
    default_message = "That host is on a private or local network and is not allowed."


class HostUnresolvable(BinderyError):
    code = "HOST_UNRESOLVABLE"
    default_message = "That host name could not be found."


class RedirectForbidden(BinderyError):
    status = 403
    code = "REDIRECT_FORBIDDEN"
    default_message = "The server redirected to an address that is not allowed."


class SpecBanned(BinderyError):
    status = 403
    code = "SPEC_BANNED"
    default_message = "This repository has been banned on this site."


class SpecNotAllowed(BinderyError):
    status = 403
    code = "SPEC_NOT_ALLOWED"
    default_message = "This site only launches an approved list of repositories."


class RepoNotFoundOrPrivate(BinderyError):
    status = 404
    code = "REPO_NOT_FOUND_OR_PRIVATE"
    default_message = (
        "The repository does not exist, or it is private and none of your stored credentials "
        "for its host can read it."
    )


class RepoRedirected(BinderyError):
    code = "REPO_REDIRECTED"
    default_message = (
        "The server says this repository has moved; use its new address (Bindery does not "
        "follow git redirects)."
    )


class RefNotFound(BinderyError):
    status = 404
    code = "REF_NOT_FOUND"
    default_message = "No branch or tag of that name exists in the repository."


class RecordNotFound(BinderyError):
    status = 404
    code = "RECORD_NOT_FOUND"
    default_message = "No such record."


class ProviderUnavailable(BinderyError):
    status = 503
    code = "PROVIDER_UNAVAILABLE"
    default_message = "The repository host could not be reached; try again in a moment."


class ProviderBadResponse(BinderyError):
    status = 502
    code = "PROVIDER_BAD_RESPONSE"
    default_message = "The repository host answered with something Bindery does not understand."


class InputUnrecognised(BinderyError):
    code = "REPO_INPUT_UNRECOGNISED"
    default_message = (
        "Bindery does not recognise that: paste a repository URL (GitHub, GitLab, any https "
        "git URL), a gist, a DOI or a record URL."
    )


class CredentialInvalid(BinderyError):
    code = "CREDENTIAL_INVALID"
    default_message = "That credential is not valid."


class CredentialLimitReached(BinderyError):
    code = "CREDENTIAL_LIMIT_REACHED"
    default_message = "There are too many stored credentials; delete some first."


class CredentialUnreadable(BinderyError):
    status = 500
    code = "CREDENTIAL_UNREADABLE"
    default_message = (
        "A stored credential cannot be decrypted with the configured keys; ask an operator to "
        "check BINDERY_ENCRYPTION_KEY."
    )


class CredentialGone(BinderyError):
    status = 404
    code = "CREDENTIAL_GONE"
    default_message = "The credential used for this repository has been deleted."
