"""What a sandbox (a build's commands, a session) may reach: the policy of ``apps.netns``.

The pure part: :func:`netns.sandbox_routes` read back by a small model of the kernel's rule
lookup (first matching rule by priority; ``lookup main`` then meets the main table's
``prohibit`` routes). The real part: namespaces made by ``netns.Namespace.create`` (root,
bubblewrap, pasta), asked with ``ip route get`` which way an address goes — nothing is
sent there, except connects that the kernel refuses inside the namespace (EACCES) before a
packet leaves, after ``ip route get`` has shown the address prohibited. And an unprivileged
sandbox entering such a namespace cannot change its routes or rules, while root can.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from apps import netns
from apps.testing import require
from portal import sandbox_network

ROOT = Path(__file__).resolve().parents[3]
HOST = ["192.0.2.2/32", "fd00::2/128"]  # a host's own addresses, as host_local_networks()


# --- the pure policy ------------------------------------------------------------------------


def fate(lines: Sequence[str], address: str, proto: str | None = None, port: int = 0) -> str:
    """``"prohibit"`` or ``"main"`` (routed by the main table), as the kernel decides for a
    flow to ``address`` (``proto`` None: a lookup without protocol, as the kernel's check of
    a route's next hop) under the ``ip -batch`` ``lines``."""
    ip = ipaddress.ip_address(address)
    routes = [line.split()[3] for line in lines if line.startswith("route add prohibit ")]
    rules = []
    for line in lines:
        words = line.split()
        if words[:2] == ["rule", "add"]:
            fields = dict(zip(words[2::2], words[3::2], strict=False))
            rules.append((int(fields["prio"]), words))
    for _, words in sorted(rules, key=lambda rule: rule[0]):
        where = words.index("to") + 1
        if ip not in ipaddress.ip_network(words[where]):
            continue
        if "ipproto" in words and words[words.index("ipproto") + 1] != proto:
            continue
        if "dport" in words and int(words[words.index("dport") + 1]) != port:
            continue
        if words[-1] == "prohibit":
            return "prohibit"
        assert words[-2:] == ["lookup", "main"], words
        break
    return "prohibit" if any(ip in ipaddress.ip_network(net) for net in routes) else "main"


def test_by_default_metadata_private_shared_and_reserved_ranges_are_prohibited() -> None:
    lines = netns.sandbox_routes(HOST)
    blocked = ["169.254.169.254", "10.1.2.3", "172.16.5.5", "172.31.255.1", "192.168.1.1",
               "100.64.0.1", "0.0.0.1", "192.0.0.9", "224.0.0.251", "255.255.255.255"]  # fmt: skip
    for address in blocked:
        assert fate(lines, address, "tcp", 80) == "prohibit", address
        assert fate(lines, address, "udp", 53) == "prohibit", address
    for address in ("1.1.1.1", "151.101.0.223", "203.0.113.80", "172.32.0.1", "100.128.0.1"):
        assert fate(lines, address, "tcp", 443) == "main", address
    # this host's addresses are prohibit routes in the main table, as before (IPv6 too)
    assert "route add prohibit 192.0.2.2/32\n" in lines
    assert "route add prohibit fd00::2/128\n" in lines
    assert fate(lines, "192.0.2.2", "tcp", 5432) == "prohibit"
    assert fate(lines, "192.0.2.3", "tcp", 80) == "main"  # the rest of its network is not


def test_resolvers_are_reachable_on_port_53_only() -> None:
    resolvers = ["10.255.255.53", netns.DNS_FORWARD, "127.0.0.53", "2001:db8::53"]
    lines = netns.sandbox_routes(HOST, resolvers=resolvers)
    for resolver in ("10.255.255.53", netns.DNS_FORWARD):
        assert fate(lines, resolver, "udp", 53) == "main"
        assert fate(lines, resolver, "tcp", 53) == "main"
        assert fate(lines, resolver, "tcp", 80) == "prohibit"  # its range is still blocked
        assert fate(lines, resolver, "udp", 5353) == "prohibit"
    assert fate(lines, "10.255.255.54", "udp", 53) == "prohibit"  # only the resolver itself
    # a loopback resolver is the namespace's own loopback (pasta's DNS_FORWARD stands in)
    assert not [line for line in lines if "127.0.0.53" in line]
    assert not [line for line in lines if line.startswith("rule") and ":" in line]


def test_allowed_networks_lift_a_blocked_range_but_not_the_database_inside_it() -> None:
    database, redis = "10.1.0.7/32", "10.9.8.7/32"
    blocked = [*netns.DEFAULT_BLOCKED, database, redis]
    lines = netns.sandbox_routes(HOST, blocked, allowed=["10.1.0.0/16"])
    assert fate(lines, "10.1.2.3", "tcp", 443) == "main"
    assert fate(lines, "10.1.0.7", "tcp", 5432) == "prohibit"  # more specific than the lift
    assert fate(lines, "10.2.0.1", "tcp", 443) == "prohibit"  # the rest of 10/8
    assert fate(lines, "10.9.8.7", "tcp", 6379) == "prohibit"
    assert fate(lines, "169.254.169.254", "tcp", 80) == "prohibit"
    # naming the host itself lifts it too (the operator asked for exactly that)
    lines = netns.sandbox_routes(HOST, blocked, allowed=["10.1.0.0/16", database])
    assert fate(lines, "10.1.0.7", "tcp", 5432) == "main"
    # the most specific wins: the whole internet allowed lifts no blocked range in it, and
    # nothing lifts this host's own addresses
    lines = netns.sandbox_routes(HOST, blocked, allowed=["0.0.0.0/0", "192.0.2.0/24"])
    assert fate(lines, "10.2.0.1", "tcp", 443) == "prohibit"
    assert fate(lines, "10.9.8.7", "tcp", 6379) == "prohibit"
    assert fate(lines, "192.0.2.2", "tcp", 80) == "prohibit"


def test_ipv6_entries_are_ignored_and_bad_ones_refused() -> None:
    lines = netns.sandbox_routes(HOST, ["fd00::/8", "10.0.0.0/8"], ["::/0"], ["2001:db8::1"],
                                 ["fe80::1"])  # fmt: skip
    assert [line for line in lines if line.startswith("rule")] == [
        f"rule add prio {netns.RULE_PRIORITY} to 10.0.0.0/8 prohibit\n"
    ]
    with pytest.raises(ValueError, match="does not appear to be"):
        netns.sandbox_routes(HOST, allowed=["10.1.0.0/16", "intranet"])


def test_a_blocked_gateway_stays_a_next_hop_but_is_not_reachable() -> None:
    lines = netns.sandbox_routes(HOST, gateways=["10.0.0.1", "192.0.2.1"])
    assert fate(lines, "10.0.0.1") == "main"  # the kernel accepts pasta's default route
    for proto in ("tcp", "udp", "icmp"):
        assert fate(lines, "10.0.0.1", proto, 80 if proto != "icmp" else 0) == "prohibit"
    assert fate(lines, "10.0.0.2") == "prohibit"  # its neighbours are not next hops
    # a gateway outside the blocked ranges needs no rule
    assert not [line for line in lines if "192.0.2.1" in line]


def test_host_routes_and_resolv_conf_are_read() -> None:
    route = (
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n"
        "eth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
        "eth0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
    )
    if sys.byteorder == "little":
        assert netns.ipv4_default_gateways(route) == ["10.0.0.1"]
    text = "search example.org\nnameserver 10.255.255.53\nnameserver ::1\nnameserver 1.1.1.1\n"
    assert netns.resolv_conf_servers(text) == ["10.255.255.53", "1.1.1.1"]


# --- what the portal adds: the database's and Redis's hosts, the operator's setting ---------


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_blocked_networks_add_the_database_and_redis_hosts(settings: Any) -> None:
    settings.DATABASES = {
        **settings.DATABASES,
        "replica": {"ENGINE": "django.db.backends.postgresql", "HOST": "10.20.30.40"},
        "socket": {"ENGINE": "django.db.backends.postgresql", "HOST": "/run/postgresql"},
        "local": {"ENGINE": "django.db.backends.postgresql", "HOST": "127.0.0.1"},
    }
    settings.REDIS_URL = "redis://:secret@10.20.30.41:6380/0"
    settings.CELERY_BROKER_URL = "rediss://[fd00::6]:6379/1"
    blocked = sandbox_network.blocked_networks()
    assert blocked[: len(netns.DEFAULT_BLOCKED)] == list(netns.DEFAULT_BLOCKED)
    assert set(blocked[len(netns.DEFAULT_BLOCKED) :]) == {
        "10.20.30.40/32",
        "10.20.30.41/32",
        "fd00::6/128",  # (ignored by the namespace, which has no IPv6)
    }
    settings.BINDERY_SANDBOX_ALLOWED_NETWORKS = ["10.20.0.0/16"]
    lines = netns.sandbox_routes(HOST, blocked, sandbox_network.allowed_networks())
    assert fate(lines, "10.20.1.1", "tcp", 443) == "main"
    assert fate(lines, "10.20.30.40", "tcp", 5432) == "prohibit"
    assert fate(lines, "10.20.30.41", "tcp", 6380) == "prohibit"


def test_unix_sockets_add_nothing(settings: Any) -> None:
    settings.REDIS_URL = "unix:///srv/bindery/redis.sock"
    settings.CELERY_BROKER_URL = "redis+socket:///srv/bindery/redis.sock"
    databases = [str(db.get("HOST") or "") for db in settings.DATABASES.values()]
    expected = [h for h in dict.fromkeys(databases) if h and not h.startswith("/")]
    assert sandbox_network.service_hosts() == expected  # nothing of Redis
    settings.REDIS_URL = "redis://10.20.30.41:6379/0"
    assert "10.20.30.41" in sandbox_network.service_hosts()


def test_allowed_networks_setting_is_parsed_and_checked() -> None:
    assert sandbox_network.parse_networks([" 10.1.0.0/16", "192.168.1.5", ""], name="X") == [
        "10.1.0.0/16",
        "192.168.1.5/32",
    ]
    with pytest.raises(ImproperlyConfigured, match="X: 'intranet' is not a network"):
        sandbox_network.parse_networks(["intranet"], name="X")
    code = "import django; django.setup(); from django.conf import settings as s; "
    code += "print(s.BINDERY_SANDBOX_ALLOWED_NETWORKS)"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings"}
    env["BINDERY_SANDBOX_ALLOWED_NETWORKS"] = "10.1.0.0/16,192.168.7.0/24"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert done.stdout.strip() == "['10.1.0.0/16', '192.168.7.0/24']", done.stderr
    env["BINDERY_SANDBOX_ALLOWED_NETWORKS"] = "10.1.0.0/16,intranet"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode != 0
    assert "BINDERY_SANDBOX_ALLOWED_NETWORKS: 'intranet' is not a network" in done.stderr


def test_hub_config_hands_the_policy_to_the_spawner(settings: Any, tmp_path: Path) -> None:
    from portal.hubconfig import hub_config

    settings.BINDERY_HUB_DIR = tmp_path / "hub"
    settings.REDIS_URL = "redis://10.20.30.41:6379/0"
    settings.BINDERY_SANDBOX_ALLOWED_NETWORKS = ["10.1.0.0/16"]
    spawner = hub_config()["BinderySpawner"]
    assert "169.254.0.0/16" in spawner["blocked_networks"]
    assert "10.20.30.41/32" in spawner["blocked_networks"]
    assert spawner["allowed_networks"] == ["10.1.0.0/16"]


# --- real namespaces --------------------------------------------------------------------------


@pytest.fixture
def tools() -> netns.Tools:
    found, why = netns.find_tools(who="the test")
    require(found is not None, why)
    require(shutil.which("bwrap") is not None, "bubblewrap (bwrap) not installed")
    assert found is not None
    return found


@pytest.fixture
def gateway(tools: netns.Tools) -> str:
    gateways = netns.host_default_gateways()
    require(bool(gateways), "this host has no IPv4 default gateway")
    return gateways[0]


@pytest.fixture
def namespaces(tools: netns.Tools) -> Iterator[Any]:
    made: list[netns.Namespace] = []

    def make(**kwargs: Any) -> netns.Namespace:
        made.append(netns.Namespace.create(tools, dns_forward=netns.DNS_FORWARD, **kwargs))
        return made[-1]

    yield make
    for namespace in made:
        namespace.close()


def inside(namespace: netns.Namespace, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*namespace.enter, *command], pass_fds=namespace.pass_fds,
                          capture_output=True, text=True, timeout=30, check=False)  # fmt: skip


def route(namespace: netns.Namespace, tools: netns.Tools, address: str, *flow: str) -> str:
    """``via <gateway>`` or ``prohibit``, from ``ip route get`` inside (nothing is sent)."""
    done = inside(namespace, tools.ip, "route", "get", address, *flow)
    if done.returncode != 0:
        assert "Permission denied" in done.stderr, done.stderr  # EACCES: a prohibit rule
        return "prohibit"
    words = done.stdout.split()
    assert "via" in words, done.stdout
    return f"via {words[words.index('via') + 1]}"


def connect_errors(namespace: netns.Namespace, targets: Sequence[tuple[str, int]]) -> list[str]:
    """The errno names of TCP connects to ``targets`` inside; call it only for addresses
    ``ip route get`` has shown prohibited (the kernel refuses before any packet leaves)."""
    code = (
        "import errno, socket, sys\n"
        "for host, port in zip(sys.argv[1::2], sys.argv[2::2]):\n"
        "    try:\n"
        "        socket.create_connection((host, int(port)), timeout=5).close()\n"
        "        print('connected')\n"
        "    except OSError as exc:\n"
        "        print(errno.errorcode.get(exc.errno, str(exc)))\n"
    )
    args = [str(part) for target in targets for part in target]
    done = inside(namespace, sys.executable, "-c", code, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_a_sandbox_reaches_the_internet_and_dns_but_not_metadata_nor_private_ranges(
    tools: netns.Tools, gateway: str, namespaces: Any
) -> None:
    namespace = namespaces(blocked=[*netns.DEFAULT_BLOCKED, "10.1.0.7/32"])
    via = f"via {gateway}"
    assert route(namespace, tools, "1.1.1.1", "ipproto", "tcp", "dport", "443") == via
    assert route(namespace, tools, "1.1.1.1") == via
    blocked = ["169.254.169.254", "10.1.2.3", "10.1.0.7", "192.168.1.1", "172.16.0.1",
               "100.64.0.1"]  # fmt: skip
    for address in blocked:
        assert route(namespace, tools, address) == "prohibit", address
        assert route(namespace, tools, address, "ipproto", "tcp", "dport", "80") == "prohibit"
    # and a program inside is refused by the kernel at once (no packet leaves)
    assert connect_errors(namespace, [("169.254.169.254", 80), ("10.1.2.3", 443)]) == [
        "EACCES",
        "EACCES",
    ]
    # DNS: pasta's forward address and the host's own resolvers, on port 53 only
    resolvers = [r for r in netns.host_resolvers() if not ipaddress.ip_address(r).is_loopback]
    for resolver in [netns.DNS_FORWARD, *resolvers]:
        assert route(namespace, tools, resolver, "ipproto", "udp", "dport", "53") == via
        assert route(namespace, tools, resolver, "ipproto", "tcp", "dport", "53") == via
        if any(ipaddress.ip_address(resolver) in ipaddress.ip_network(net)
               for net in netns.DEFAULT_BLOCKED):  # fmt: skip
            assert route(namespace, tools, resolver, "ipproto", "tcp", "dport", "80") == "prohibit"


def test_allowed_networks_are_lifted_inside(
    tools: netns.Tools, gateway: str, namespaces: Any
) -> None:
    namespace = namespaces(blocked=[*netns.DEFAULT_BLOCKED, "10.1.0.7/32"],
                           allowed=["10.1.0.0/16"])  # fmt: skip
    assert route(namespace, tools, "10.1.2.3", "ipproto", "tcp", "dport", "443") == f"via {gateway}"
    assert route(namespace, tools, "10.1.0.7", "ipproto", "tcp", "dport", "5432") == "prohibit"
    assert route(namespace, tools, "10.2.0.1") == "prohibit"
    assert route(namespace, tools, "169.254.169.254") == "prohibit"


def test_a_host_on_a_private_network_keeps_its_default_route_and_no_neighbours(
    tools: netns.Tools, gateway: str, namespaces: Any
) -> None:
    # as a cloud machine whose own network and gateway are in a private range: block the
    # gateway's network here (a /24 around it) and pasta's default route must still work
    subnet = ipaddress.ip_network(f"{gateway}/24", strict=False)
    namespace = namespaces(blocked=[*netns.DEFAULT_BLOCKED, str(subnet)])
    assert route(namespace, tools, "1.1.1.1", "ipproto", "tcp", "dport", "443") == f"via {gateway}"
    assert route(namespace, tools, gateway, "ipproto", "tcp", "dport", "80") == "prohibit"
    assert route(namespace, tools, gateway, "ipproto", "udp", "dport", "161") == "prohibit"
    own = {ipaddress.ip_network(n).network_address for n in netns.host_local_networks()}
    neighbour = next(a for a in subnet.hosts() if str(a) != gateway and a not in own)
    assert route(namespace, tools, str(neighbour)) == "prohibit"


BWRAP = ["bwrap", "--unshare-all", "--unshare-user", "--disable-userns", "--share-net",
         "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib",
         "/lib", "--symlink", "usr/lib64", "/lib64", "--proc", "/proc", "--dev", "/dev",
         "--"]  # fmt: skip
UNPRIVILEGED = ["setpriv", "--reuid", "200500", "--regid", "200500", "--clear-groups",
                "--no-new-privs"]  # fmt: skip


def test_a_sandbox_cannot_change_its_routes_or_rules(
    tools: netns.Tools, gateway: str, namespaces: Any
) -> None:
    require(shutil.which("setpriv") is not None, "setpriv (util-linux) not installed")
    namespace = namespaces()
    first_rule = str(netns.RULE_PRIORITY)
    for command in (["route", "del", "default"], ["rule", "del", "prio", first_rule],
                    ["route", "add", "prohibit", "198.51.100.0/24"]):  # fmt: skip
        done = inside(namespace, *UNPRIVILEGED, *BWRAP, tools.ip, *command)
        assert done.returncode != 0 and "Operation not permitted" in done.stderr, done
        # root's bubblewrap with a user namespace of its own cannot either: the namespace
        # belongs to the holder's user namespace, not to the sandbox's
        done = inside(namespace, *BWRAP, tools.ip, *command)
        assert done.returncode != 0 and "Operation not permitted" in done.stderr, done
    rules = inside(namespace, tools.ip, "rule", "show").stdout
    assert f"{first_rule}:" in rules and "169.254.0.0/16 prohibit" in rules
    assert route(namespace, tools, "1.1.1.1") == f"via {gateway}"
    assert route(namespace, tools, "169.254.169.254") == "prohibit"
    # the control: root in the namespace itself can, so the targets are real
    assert inside(namespace, tools.ip, "rule", "del", "prio", first_rule).returncode == 0
    assert first_rule + ":" not in inside(namespace, tools.ip, "rule", "show").stdout
    assert inside(namespace, tools.ip, "route", "del", "default").returncode == 0
    done = inside(namespace, tools.ip, "route", "get", "1.1.1.1")
    assert done.returncode != 0 and "unreachable" in done.stderr, done
