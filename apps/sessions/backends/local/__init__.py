"""The local session backend: servers on this machine, in the sandbox, volumes in directories.

``backend.LocalSessions`` is the portal's side (Django); ``spawner.BinderySpawner`` the
hub's (no Django); ``options.LaunchOptions`` the signed payload between them.
"""
