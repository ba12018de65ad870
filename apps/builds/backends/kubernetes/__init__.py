"""The kubernetes builder: one repo2docker build pod per environment key, images pushed to a
registry (``BINDERY_BACKEND=kubernetes``).

- ``names``: the environment key, the image, pod and Secret names derived from it.
- ``options``: the settings the builder reads, and what is wrong with them (the system check).
- ``pods``: the build pod and credential Secret manifests (plain dicts, as the API takes them).
- ``registry``: does an image exist (Docker Registry HTTP API v2, token auth).
- ``cluster``: every Kubernetes API call the builder and the cleaner make, each with a timeout.
- ``r2dlog``: repo2docker's JSON log lines as build log lines.
- ``follow``: follows a pod's log into the build log.
- ``builder``: ``KubernetesBuilder``, the ``Builder`` protocol.
- ``cleaner``: deletes finished build pods and their Secrets.

This module imports nothing, so the system check can read ``options`` without loading the
kubernetes client.
"""
