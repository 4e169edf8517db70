"""Outbound address checks: which hosts a webhook may reach, enforced when connecting.

A system's URL may name any host, but unless the system sets
``allow_private_network: true`` a delivery connects only to public
addresses. The check runs on the addresses the connection itself resolves,
so a name that resolves to a private address at send time (DNS rebinding)
is rejected as well as a literal one, in any spelling. The Host header, TLS
SNI and certificate checks keep using the name from the URL.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from collections.abc import Sequence
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3 import PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import allowed_gai_family

from .errors import Error

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: One result of socket.getaddrinfo: family, type, protocol, canonical name, socket address.
AddressInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, Any]

#: Shared address space for carrier-grade NAT (RFC 6598).
SHARED_NETWORK = ipaddress.IPv4Network("100.64.0.0/10")

#: IPv6 unique local addresses (RFC 4193).
UNIQUE_LOCAL_NETWORK = ipaddress.IPv6Network("fc00::/7")

#: The NAT64 well-known prefix (RFC 6052): its last 32 bits are an IPv4
#: address that a NAT64 gateway connects to.
NAT64_NETWORK = ipaddress.IPv6Network("64:ff9b::/96")

#: The characters of every IPv4 spelling that inet_aton accepts: decimal,
#: octal and hex parts, one to four of them.
_IPV4_CHARACTERS = frozenset("0123456789abcdefx.")

#: Host names that resolve to loopback without asking DNS (RFC 6761).
_LOOPBACK_NAME = "localhost"


class DisallowedAddress(Error):
    """Raised before connecting when a webhook host is or resolves to a rejected address.

    ``host`` is the name from the URL, ``address`` the rejected address and
    ``reason`` its kind, such as ``loopback``.
    """

    def __init__(self, host: str, address: IPAddress, reason: str) -> None:
        self.host = host
        self.address = address
        self.reason = reason
        message = (
            f"{host} resolves to {address}, a {reason} address; webhooks reach loopback, "
            "private and other non-public addresses only when the system sets "
            "allow_private_network: true"
        )
        super().__init__(message)


def address_problem(address: IPAddress) -> str | None:
    """Return the kind of non-public address ``address`` is, or None when it is public.

    An IPv6 address that carries an IPv4 address (mapped, 6to4 or NAT64)
    is rejected when the IPv4 address is.
    """
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address_problem(address.ipv4_mapped)
        embedded = _embedded_ipv4(address)
        embedded_reason = None if embedded is None else address_problem(embedded)
        if embedded_reason is not None:
            return f"{embedded_reason} (embedded IPv4)"

    # NOTE: is_private, is_reserved and is_global come from the stdlib's
    # tables, which later Python patch releases extended; the order below
    # only picks the most specific name.
    checks: tuple[tuple[bool, str], ...] = (
        (address.is_unspecified, "unspecified"),
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local"),
        (address.is_multicast, "multicast"),
        (address in SHARED_NETWORK, "shared (carrier-grade NAT)"),
        (address in UNIQUE_LOCAL_NETWORK, "unique local"),
        (isinstance(address, ipaddress.IPv6Address) and address.is_site_local, "site-local"),
        (address.is_reserved, "reserved"),
        (address.is_private, "private"),
        (not address.is_global, "non-public"),
    )
    for matches, reason in checks:
        if matches:
            return reason

    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64_NETWORK:
        return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)

    return None


def parse_ip_host(host: str) -> IPAddress | None:
    """Parse a URL host as an IP address, or return None when it is a name.

    IPv4 accepts every spelling the C library's resolver does, as
    ``socket.inet_aton`` parses it: ``127.1``, ``2130706433``,
    ``0x7f000001``, ``0177.0.0.1``. IPv6 may be bracketed and carry a zone.
    """
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            return None

    # inet_aton ignores anything after whitespace, so only the characters of
    # a number may reach it; a trailing dot is allowed in a URL host.
    name = host.lower().removesuffix(".")
    if not name or not set(name) <= _IPV4_CHARACTERS:
        return None
    try:
        packed = socket.inet_aton(name)
    except OSError:
        return None

    return ipaddress.IPv4Address(packed)


def host_problem(host: str) -> str | None:
    """Describe why ``host`` is rejected without looking it up, or return None.

    Only literal addresses and ``localhost`` names are judged here; other
    names are checked when a delivery resolves them.
    """
    address = parse_ip_host(host)
    if address is not None:
        reason = address_problem(address)
        if reason is None:
            return None
        # An IPv4-mapped IPv6 address connects to its IPv4 address, so show that.
        mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
        return f"{reason} address {mapped or address}"

    name = host.lower().removesuffix(".")
    if name == _LOOPBACK_NAME or name.endswith("." + _LOOPBACK_NAME):
        return f"loopback name {host!r}"

    return None


def resolve_vetted(host: str, port: int, *, allow_private_network: bool) -> Sequence[AddressInfo]:
    """Resolve ``host`` for a TCP connection and return its addresses.

    Raises DisallowedAddress when any address is rejected, so that nothing
    connects to a host with a rejected address among its resolved addresses, and
    ``socket.gaierror`` when the name does not resolve.
    """
    infos = socket.getaddrinfo(host, port, allowed_gai_family(), socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"getaddrinfo returned no addresses for {host}")

    if not allow_private_network:
        for info in infos:
            address = ipaddress.ip_address(info[4][0])
            reason = address_problem(address)
            if reason is not None:
                raise DisallowedAddress(host, address, reason)

    return infos


def _connect_vetted(connection: HTTPConnection, allow_private_network: bool) -> socket.socket:
    # The same steps as urllib3.util.connection.create_connection (urllib3 2.x), on
    # addresses that resolve_vetted has already accepted.
    host = connection._dns_host.strip("[]")
    infos = resolve_vetted(host, connection.port, allow_private_network=allow_private_network)
    timeout = connection.timeout
    last_error = OSError(f"no address of {host} accepted a connection")
    for family, kind, protocol, _, sockaddr in infos:
        sock = socket.socket(family, kind, protocol)
        try:
            for option in connection.socket_options or ():
                sock.setsockopt(*option)
            # Any other value is urllib3's marker for the socket default timeout.
            if timeout is None or isinstance(timeout, int | float):
                sock.settimeout(timeout)
            if connection.source_address:
                sock.bind(connection.source_address)
            sock.connect(sockaddr)
        except OSError as error:
            sock.close()
            last_error = error
            continue
        return sock

    raise last_error


def _new_vetted_conn(connection: HTTPConnection, allow_private_network: bool) -> socket.socket:
    # Errors are converted as urllib3's own HTTPConnection._new_conn does.
    try:
        sock = _connect_vetted(connection, allow_private_network)
    except socket.gaierror as error:
        raise NameResolutionError(connection.host, connection, error) from error
    except TimeoutError as error:
        message = (
            f"Connection to {connection.host} timed out. (connect timeout={connection.timeout})"
        )
        raise ConnectTimeoutError(connection, message) from error
    except OSError as error:
        message = f"Failed to establish a new connection: {error}"
        raise NewConnectionError(connection, message) from error

    sys.audit("http.client.connect", connection, connection.host, connection.port)
    return sock


class VettedHTTPConnection(HTTPConnection):
    """An HTTP connection that connects only to addresses the policy accepts."""

    def __init__(self, *args: Any, allow_private_network: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.allow_private_network = allow_private_network

    def _new_conn(self) -> socket.socket:
        return _new_vetted_conn(self, self.allow_private_network)


class VettedHTTPSConnection(HTTPSConnection):
    """An HTTPS connection that connects only to addresses the policy accepts.

    SNI and certificate checks use the URL's host name, not the address.
    """

    def __init__(self, *args: Any, allow_private_network: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.allow_private_network = allow_private_network

    def _new_conn(self) -> socket.socket:
        return _new_vetted_conn(self, self.allow_private_network)


class _VettedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = VettedHTTPConnection


class _VettedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = VettedHTTPSConnection


class _VettedPoolManager(PoolManager):
    def __init__(self, *args: Any, allow_private_network: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.allow_private_network = allow_private_network
        self.pool_classes_by_scheme = {
            "http": _VettedHTTPConnectionPool,
            "https": _VettedHTTPSConnectionPool,
        }

    def _new_pool(
        self,
        scheme: str,
        host: str,
        port: int,
        request_context: dict[str, Any] | None = None,
    ) -> HTTPConnectionPool:
        # urllib3 documents this method as the place to customize pools; the
        # pool passes unknown keywords on to each connection it opens.
        context = dict(self.connection_pool_kw if request_context is None else request_context)
        context["allow_private_network"] = self.allow_private_network
        return super()._new_pool(scheme, host, port, context)


class VettedAdapter(HTTPAdapter):
    """A requests transport adapter whose connections go only to accepted addresses.

    With ``allow_private_network`` false, connecting to a host that is or
    resolves to a non-public address raises DisallowedAddress and sends
    nothing to it.

    NOTE: requests sent through a proxy are not checked, because the
    connection goes to the proxy. ue-flow's sender configures none.
    """

    def __init__(self, *, allow_private_network: bool, **kwargs: Any) -> None:
        # HTTPAdapter.__init__ calls init_poolmanager, which reads this.
        self.allow_private_network = allow_private_network
        super().__init__(**kwargs)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        """Create the pool manager whose connections check their addresses."""
        self._pool_connections = connections
        self._pool_maxsize = maxsize
        self._pool_block = block
        self.poolmanager = _VettedPoolManager(
            num_pools=connections,
            maxsize=maxsize,
            block=block,
            allow_private_network=self.allow_private_network,
            **pool_kwargs,
        )
