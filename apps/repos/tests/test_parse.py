"""What people paste into the launch form → (provider, spec), as mybinder's form does.
Pure parsing: nothing is contacted."""

from __future__ import annotations

import pytest

from apps.repos.services import parse_repo_input
from portal.errors import BinderyError

GITLAB_ESCAPED = "group%2Fsub%2Frepo"


@pytest.fixture(autouse=True)
def _real_provider_urls(provider_urls, settings):
    settings.SITE_URL = "https://bindery.example.org"


@pytest.mark.parametrize(
    "text,ref,expected",
    [
        # GitHub
        ("https://github.com/org/repo", "", ("gh", "org/repo/HEAD")),
        ("https://github.com/org/repo/", "", ("gh", "org/repo/HEAD")),
        ("https://github.com/org/repo.git", "", ("gh", "org/repo/HEAD")),
        ("http://github.com/org/repo", "", ("gh", "org/repo/HEAD")),
        ("https://www.github.com/org/repo", "", ("gh", "org/repo/HEAD")),
        ("https://github.com/org/repo", "v1.0", ("gh", "org/repo/v1.0")),
        ("https://github.com/org/repo/tree/dev", "", ("gh", "org/repo/dev")),
        ("https://github.com/org/repo/tree/dev/docs", "", ("gh", "org/repo/dev")),
        ("https://github.com/org/repo/blob/main/index.ipynb", "", ("gh", "org/repo/main")),
        ("https://github.com/org/repo/tree/dev", "feature/x", ("gh", "org/repo/feature/x")),
        ("https://github.com/org/repo/commit/" + "a" * 40, "", ("gh", "org/repo/" + "a" * 40)),
        ("org/repo", "", ("gh", "org/repo/HEAD")),
        ("org/repo", "main", ("gh", "org/repo/main")),
        ("  org/repo.git  ", "", ("gh", "org/repo/HEAD")),
        # GitLab
        ("https://gitlab.com/group/sub/repo", "", ("gl", f"{GITLAB_ESCAPED}/HEAD")),
        ("https://gitlab.com/group/sub/repo.git", "", ("gl", f"{GITLAB_ESCAPED}/HEAD")),
        ("https://gitlab.com/group/sub/repo/-/tree/dev", "", ("gl", f"{GITLAB_ESCAPED}/dev")),
        (
            "https://gitlab.com/group/sub/repo/-/blob/main/README.md",
            "",
            ("gl", f"{GITLAB_ESCAPED}/main"),
        ),
        ("https://gitlab.com/group/repo", "a/b", ("gl", "group%2Frepo/a/b")),
        # Gists
        ("https://gist.github.com/someone/0123abcd", "", ("gist", "someone/0123abcd")),
        (
            "https://gist.github.com/someone/0123abcd/" + "b" * 40,
            "",
            ("gist", "someone/0123abcd/" + "b" * 40),
        ),
        ("https://gist.github.com/someone/0123abcd", "HEAD", ("gist", "someone/0123abcd/HEAD")),
        # Any other git URL
        (
            "https://git.example.org/team/project.git",
            "",
            ("git", "https%3A%2F%2Fgit.example.org%2Fteam%2Fproject.git/HEAD"),
        ),
        (
            "https://git.example.org:8443/team/project",
            "release/1",
            ("git", "https%3A%2F%2Fgit.example.org%3A8443%2Fteam%2Fproject/release/1"),
        ),
        (
            "https://bitbucket.org/team/project",
            "main",
            ("git", "https%3A%2F%2Fbitbucket.org%2Fteam%2Fproject/main"),
        ),
        # DOIs
        ("10.5281/zenodo.3242074", "", ("zenodo", "10.5281/zenodo.3242074")),
        ("doi:10.5281/zenodo.3242074", "", ("zenodo", "10.5281/zenodo.3242074")),
        ("https://doi.org/10.5281/zenodo.3242074", "", ("zenodo", "10.5281/zenodo.3242074")),
        ("https://dx.doi.org/10.5281/zenodo.3242074", "", ("zenodo", "10.5281/zenodo.3242074")),
        (
            "10.6084/m9.figshare.9782777.v1",
            "",
            ("figshare", "10.6084/m9.figshare.9782777.v1"),
        ),
        (
            "https://doi.org/10.4211/hs.b8f6eae9d89241cf8b5904033460af61",
            "",
            ("hydroshare", "10.4211/hs.b8f6eae9d89241cf8b5904033460af61"),
        ),
        ("10.7910/DVN/TJCLKP", "", ("dataverse", "10.7910/DVN/TJCLKP")),
        # Record pages
        ("https://zenodo.org/records/3242074", "", ("zenodo", "10.5281/zenodo.3242074")),
        ("https://zenodo.org/record/3242074", "", ("zenodo", "10.5281/zenodo.3242074")),
        (
            "https://zenodo.org/doi/10.5281/zenodo.3242073",
            "",
            ("zenodo", "10.5281/zenodo.3242073"),
        ),
        (
            "https://figshare.com/articles/software/binder-examples_requirements/9782777/2",
            "",
            ("figshare", "10.6084/m9.figshare.9782777.v2"),
        ),
        (
            "https://figshare.com/articles/binder-examples_requirements/9782777",
            "",
            ("figshare", "10.6084/m9.figshare.9782777.v1"),
        ),
        (
            "https://www.hydroshare.org/resource/b8f6eae9d89241cf8b5904033460af61/",
            "",
            ("hydroshare", "b8f6eae9d89241cf8b5904033460af61"),
        ),
        (
            "https://dataverse.harvard.edu/dataset.xhtml?persistentId=doi:10.7910/DVN/TJCLKP",
            "",
            ("dataverse", "10.7910/DVN/TJCLKP"),
        ),
        (
            "https://demo.ckan.org/dataset/my-sample-dataset-001",
            "",
            ("ckan", "https://demo.ckan.org/dataset/my-sample-dataset-001"),
        ),
        (
            "swh:1:dir:2a7b2d9a3e1b5f4f0c5e0d6b7e6b4a2d1c0f9e8d",
            "",
            ("swhid", "swh:1:dir:2a7b2d9a3e1b5f4f0c5e0d6b7e6b4a2d1c0f9e8d"),
        ),
        (
            "https://archive.softwareheritage.org/swh:1:rev:5bd2bd4f3c8e9a1b7d6c0e2f4a3b5c7d9e1f0a2b",
            "",
            ("swhid", "swh:1:rev:5bd2bd4f3c8e9a1b7d6c0e2f4a3b5c7d9e1f0a2b"),
        ),
        # Binder links
        (
            "https://mybinder.org/v2/gh/binder-examples/requirements/HEAD",
            "",
            ("gh", "binder-examples/requirements/HEAD"),
        ),
        (
            "https://bindery.example.org/v2/zenodo/10.5281/zenodo.3242074/",
            "",
            ("zenodo", "10.5281/zenodo.3242074"),
        ),
    ],
)
def test_launch_form_input(text, ref, expected):
    assert parse_repo_input(text, ref) == expected


@pytest.mark.parametrize(
    "text,code",
    [
        ("", "REPO_INPUT_UNRECOGNISED"),
        ("https://github.com/just-a-user", "REPO_INPUT_UNRECOGNISED"),
        ("https://gitlab.com/lonely", "REPO_INPUT_UNRECOGNISED"),
        ("https://zenodo.org/communities/x", "REPO_INPUT_UNRECOGNISED"),
        ("https://git.example.org/repo.git?x=1", "REPO_INPUT_UNRECOGNISED"),
        ("repo", "URL_LOCAL_PATH"),
        ("/home/me/repo", "URL_LOCAL_PATH"),
        ("git@github.com:org/repo.git", "URL_SCHEME_FORBIDDEN"),
        ("https://me:pw@github.com/org/repo", "URL_CREDENTIALS_FORBIDDEN"),
    ],
)
def test_unusable_input(text, code):
    with pytest.raises(BinderyError) as caught:
        parse_repo_input(text)
    assert caught.value.code == code


def test_enterprise_hosts_come_from_settings(settings):
    settings.BINDERY_PROVIDER_URLS = {
        **settings.BINDERY_PROVIDER_URLS,
        "gh": "https://github.example.com",
        "gl": "https://gitlab.example.com:8443",
    }
    assert parse_repo_input("https://github.example.com/org/repo") == ("gh", "org/repo/HEAD")
    assert parse_repo_input("https://gitlab.example.com:8443/a/b/-/tree/x") == ("gl", "a%2Fb/x")
