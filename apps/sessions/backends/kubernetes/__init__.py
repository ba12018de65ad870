"""The kubernetes session backend: servers as pods (KubeSpawner), volumes as claims.

``backend.KubernetesSessions`` is the portal's side (Django, the kubernetes client);
``spawner.BinderyKubeSpawner`` the hub's (no Django); ``options.KubeLaunchOptions`` the
signed payload between them.
"""
