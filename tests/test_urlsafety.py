"""Outbound address checks: rejected spellings, DNS rebinding, redirects and validate.

Nothing here connects to a rejected address. Tests that expect a rejection
replace ``socket.socket.connect`` with a function that fails the test.
Every name lookup goes through a fake resolver, which resolves test names
from a table and parses everything else as a numeric address, so no query
reaches DNS. Connections that do happen go to HTTP servers on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import ROOT, write_config
from ue_flow.delivery import Sender
from ue_flow.loader import url_problem
from ue_flow.urlsafety import (
    DisallowedAddress,
    VettedAdapter,
    address_problem,
    host_problem,
    parse_ip_host,
    resolve_vetted,
)

UE_FLOW = Path(sys.executable).parent / "ue-flow"

#: Connect and read timeouts of test posts, in milliseconds.
TIMEOUTS_MS = (2_000, 2_000)

#: A host name only the fake resolver resolves. The .test domain is reserved (RFC 2606).
TEST_NAME = "hooks.example.test"

_real_getaddrinfo = socket.getaddrinfo


@dataclass(frozen=True)
class Rejected:
    host: str
    reason: str


#: Hosts as a URL may write them, with the kind of address each one is.
REJECTED = [
    Rejected("127.0.0.1", "loopback"),
    Rejected("127.1", "loopback"),
    Rejected("2130706433", "loopback"),
    Rejected("0x7f000001", "loopback"),
    Rejected("0177.0.0.1", "loopback"),
    Rejected("0x7f.1", "loopback"),
    Rejected("017700000001", "loopback"),
    Rejected("127.255.255.254", "loopback"),
    Rejected("[::1]", "loopback"),
    Rejected("[::ffff:127.0.0.1]", "loopback"),
    Rejected("[::ffff:7f00:1]", "loopback"),
    Rejected("localhost", "loopback"),
    Rejected("0.0.0.0", "unspecified"),
    Rejected("0", "unspecified"),
    Rejected("[::]", "unspecified"),
    Rejected("10.0.0.1", "private"),
    Rejected("012.0.0.1", "private"),
    Rejected("172.16.0.1", "private"),
    Rejected("192.168.1.1", "private"),
    Rejected("169.254.169.254", "link-local"),
    Rejected("0xa9fea9fe", "link-local"),
    Rejected("2852039166", "link-local"),
    Rejected("[::ffff:169.254.169.254]", "link-local"),
    Rejected("[fe80::1]", "link-local"),
    Rejected("100.64.0.1", "shared"),
    Rejected("100.127.255.254", "shared"),
    Rejected("224.0.0.1", "multicast"),
    Rejected("[ff02::1]", "multicast"),
    Rejected("240.0.0.1", "reserved"),
    Rejected("255.255.255.255", "reserved"),
    Rejected("[fc00::1]", "unique local"),
    Rejected("[fd12:3456::1]", "unique local"),
    Rejected("[2002:7f00:1::]", "loopback (embedded IPv4)"),
    Rejected("[64:ff9b::a9fe:a9fe]", "link-local (embedded IPv4)"),
]

#: Public addresses in several spellings; none of them is ever connected to.
PUBLIC = ["93.184.215.14", "8.8.8.8", "0x08080808", "134744072", "[2606:4700:4700::1111]"]
PUBLIC += ["[::ffff:8.8.8.8]", "[2002:808:808::]"]


def _fake_getaddrinfo(names: dict[str, list[str]]) -> Callable[..., Any]:
    """Return a getaddrinfo that resolves ``names`` from the table and other hosts as numbers."""

    def getaddrinfo(
        host: str, port: int, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> list[Any]:
        if host in names:
            return [
                (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0))
                if ":" in address
                else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))
                for address in names[host]
            ]
        # AI_NUMERICHOST makes the C library parse the host and never ask DNS.
        return _real_getaddrinfo(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)

    return getaddrinfo


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """The fake resolver's table of names; tests add their own."""
    names: dict[str, list[str]] = {"localhost": ["127.0.0.1", "::1"]}
    monkeypatch.setattr(socket, "getaddrinfo", _fake_getaddrinfo(names))
    return names


@pytest.fixture
def no_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any socket tries to connect."""

    def connect(self: socket.socket, address: Any) -> None:
        pytest.fail(f"a connection to {address} was attempted")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect)


@dataclass
class LocalServer:
    """An HTTP server on 127.0.0.1 that responds with scripted statuses, then with 200."""

    responses: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    requests: list[dict[str, str]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@contextlib.contextmanager
def serving(local: LocalServer, context: ssl.SSLContext | None = None) -> Iterator[LocalServer]:
    """Serve ``local`` on 127.0.0.1, over TLS when ``context`` is given."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            local.requests.append({name.lower(): value for name, value in self.headers.items()})
            status, headers = local.responses.pop(0) if local.responses else (200, {})
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    local.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if context is not None:
        local.server.socket = context.wrap_socket(local.server.socket, server_side=True)
    threading.Thread(target=local.server.serve_forever, daemon=True).start()
    yield local
    local.server.shutdown()
    local.server.server_close()


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with serving(LocalServer()) as local:
        yield local


@pytest.fixture
def other_server() -> Iterator[LocalServer]:
    with serving(LocalServer()) as local:
        yield local


def _post(url: str, *, allow_private_network: bool, sender: Sender | None = None) -> Any:
    return (sender or Sender()).post(
        url, b"{}", {}, TIMEOUTS_MS, allow_private_network=allow_private_network
    )


# --- the checker, with no connection ---------------------------------------------------


@pytest.mark.parametrize("case", REJECTED, ids=[case.host for case in REJECTED])
def test_host_problem_rejects_spelling(case: Rejected) -> None:
    problem = host_problem(case.host)

    assert problem is not None
    assert problem.startswith(case.reason)


@pytest.mark.parametrize("host", PUBLIC)
def test_checker_accepts_public_address(host: str) -> None:
    address = parse_ip_host(host)

    assert address is not None
    assert address_problem(address) is None
    assert host_problem(host) is None


def test_parse_ip_host_normalizes_ipv4() -> None:
    loopback = ipaddress.IPv4Address("127.0.0.1")
    for spelling in ("127.1", "2130706433", "0x7f000001", "0177.0.0.1", "127.0.0.1."):
        assert parse_ip_host(spelling) == loopback, spelling


def test_parse_ip_host_leaves_names() -> None:
    for name in ("example.com", "deadbeef", "127.0.0.1 x", "1.2.3.4.example", ""):
        assert parse_ip_host(name) is None, name


def test_host_problem_localhost_names() -> None:
    assert host_problem("LOCALHOST") is not None
    assert host_problem("api.localhost.") is not None
    assert host_problem("localhost.example.com") is None


def test_resolve_vetted_accepts_public_answer(resolver: dict[str, list[str]]) -> None:
    resolver[TEST_NAME] = ["93.184.215.14", "2606:4700:4700::1111"]

    infos = resolve_vetted(TEST_NAME, 443, allow_private_network=False)

    assert [info[4][0] for info in infos] == ["93.184.215.14", "2606:4700:4700::1111"]


def test_resolve_vetted_rejects_mixed_answer(resolver: dict[str, list[str]]) -> None:
    # One private address among public ones rejects the whole name.
    resolver[TEST_NAME] = ["93.184.215.14", "10.1.2.3"]

    with pytest.raises(DisallowedAddress, match=r"resolves to 10\.1\.2\.3, a private address"):
        resolve_vetted(TEST_NAME, 443, allow_private_network=False)


# --- the sender, rejecting before any connection ---------------------------------------


@pytest.mark.parametrize("case", REJECTED, ids=[case.host for case in REJECTED])
def test_sender_rejects_before_connect(
    case: Rejected, resolver: dict[str, list[str]], no_connect: None
) -> None:
    outcome = _post(f"http://{case.host}:8080/hook", allow_private_network=False)

    assert outcome.status is None
    assert outcome.error == "DisallowedAddress"
    assert not outcome.delivered


def test_sender_rejects_https_before_connect(
    resolver: dict[str, list[str]], no_connect: None
) -> None:
    outcome = _post("https://169.254.169.254/latest/meta-data/", allow_private_network=False)

    assert outcome.error == "DisallowedAddress"


def test_rebinding_name_rejected_at_send(resolver: dict[str, list[str]], no_connect: None) -> None:
    # The URL passes the static check, and the name resolves to loopback
    # only when the delivery is sent.
    url = f"https://{TEST_NAME}/hook"
    assert url_problem(url, allow_http=False, allow_private_network=False) is None
    resolver[TEST_NAME] = ["127.0.0.1"]

    outcome = _post(url, allow_private_network=False)

    assert outcome.error == "DisallowedAddress"


def test_rebinding_public_then_private(
    resolver: dict[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first lookup is public, so the connection attempt reaches the
    # connect stub; the second lookup, at the next send, is loopback.
    attempts: list[Any] = []

    def record(self: socket.socket, address: Any) -> None:
        attempts.append(address)
        raise ConnectionRefusedError("test stub: no connection is made")

    monkeypatch.setattr(socket.socket, "connect", record)
    sender = Sender()
    resolver[TEST_NAME] = ["93.184.215.14"]
    first = _post(f"http://{TEST_NAME}/hook", allow_private_network=False, sender=sender)
    resolver[TEST_NAME] = ["127.0.0.1"]
    second = _post(f"http://{TEST_NAME}/hook", allow_private_network=False, sender=sender)

    assert first.error == "ConnectionError"
    assert attempts == [("93.184.215.14", 80)]
    assert second.error == "DisallowedAddress"
    assert len(attempts) == 1


# --- the sender, connecting to local servers -------------------------------------------


def test_private_allowed_reaches_local(server: LocalServer) -> None:
    outcome = _post(server.url, allow_private_network=True)

    assert outcome.status == 200
    assert len(server.requests) == 1


def test_private_rejected_sends_nothing(server: LocalServer) -> None:
    outcome = _post(server.url, allow_private_network=False)

    assert outcome.error == "DisallowedAddress"
    assert server.requests == []


def test_policies_share_no_connection(server: LocalServer) -> None:
    # A keep-alive connection opened for a permissive system must not carry
    # a strict system's delivery to the same address.
    sender = Sender()
    allowed = _post(server.url, allow_private_network=True, sender=sender)
    rejected = _post(server.url, allow_private_network=False, sender=sender)

    assert allowed.status == 200
    assert rejected.error == "DisallowedAddress"
    assert len(server.requests) == 1


def test_allowed_name_keeps_host_header(
    server: LocalServer, resolver: dict[str, list[str]]
) -> None:
    resolver[TEST_NAME] = ["127.0.0.1"]

    outcome = _post(f"http://{TEST_NAME}:{server.port}/hook", allow_private_network=True)

    assert outcome.status == 200
    assert server.requests[0]["host"] == f"{TEST_NAME}:{server.port}"


def test_redirect_not_followed(server: LocalServer, other_server: LocalServer) -> None:
    server.responses = [(301, {"Location": other_server.url})]

    outcome = _post(server.url, allow_private_network=True)

    assert outcome.status == 301
    assert not outcome.delivered
    assert len(server.requests) == 1
    assert other_server.requests == []


# --- TLS: SNI and the certificate check use the URL's name -----------------------------


def _write_certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """Write a self-signed certificate for ``name`` and its key with openssl; return both."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            f"/CN={name}",
            "-addext",
            f"subjectAltName=DNS:{name}",
            "-keyout",
            str(key_path),
            "-out",
            str(cert_path),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert_path, key_path


def test_https_verifies_url_name(tmp_path: Path, resolver: dict[str, list[str]]) -> None:
    cert_path, key_path = _write_certificate(tmp_path, TEST_NAME)
    server_names: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    context.sni_callback = lambda _socket, name, _context: server_names.append(name)
    resolver[TEST_NAME] = ["127.0.0.1"]
    resolver["other.example.test"] = ["127.0.0.1"]
    session = requests.Session()
    session.trust_env = False
    session.mount("https://", VettedAdapter(allow_private_network=True))

    # The second name reaches the same address, but the certificate does not name it.
    with serving(LocalServer(), context) as server, session:
        response = session.post(
            f"https://{TEST_NAME}:{server.port}/hook", data=b"{}", verify=str(cert_path)
        )
        with pytest.raises(requests.exceptions.SSLError):
            session.post(
                f"https://other.example.test:{server.port}/hook", data=b"{}", verify=str(cert_path)
            )

    assert response.status_code == 200
    assert server_names[0] == TEST_NAME
    assert server.requests[0]["host"] == f"{TEST_NAME}:{server.port}"
    assert len(server.requests) == 1


# --- static checks: url_problem and ue-flow validate -----------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://0177.0.0.1/hook", "loopback address 127.0.0.1"),
        ("https://localhost:8443/hook", "loopback name 'localhost'"),
        ("https://[::ffff:169.254.169.254]/hook", "link-local address 169.254.169.254"),
        ("https://0xa9fea9fe/latest", "link-local address 169.254.169.254"),
        ("https://100.64.1.1/hook", "shared (carrier-grade NAT) address 100.64.1.1"),
    ],
)
def test_url_problem_literal_private(url: str, expected: str) -> None:
    problem = url_problem(url, allow_http=False, allow_private_network=False)

    assert problem is not None
    assert expected in problem
    assert "allow_private_network: true" in problem
    assert url_problem(url, allow_http=False, allow_private_network=True) is None


def test_url_problem_public_literal() -> None:
    assert (
        url_problem("https://93.184.215.14/hook", allow_http=False, allow_private_network=False)
        is None
    )


def _edit_learn(systems_file: Path, url: str) -> int:
    """Point learn at ``url`` without allow_private_network; return the url's line number."""
    lines = systems_file.read_text(encoding="utf-8").splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.strip() == "- slug: learn")
    url_line = None
    for index in range(start, len(lines)):
        stripped = lines[index].strip()
        if stripped.startswith("url:"):
            lines[index] = f'    url: "{url}"\n'
            url_line = index + 1
        elif stripped == "allow_private_network: true":
            lines[index] = "    allow_private_network: false\n"
    systems_file.write_text("".join(lines), encoding="utf-8")
    assert url_line is not None
    return url_line


def test_validate_reports_private_literal(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    systems_file = config / "systems.yaml"
    line = _edit_learn(systems_file, "https://10.0.0.5/hook")
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("UE_FLOW_") and not name.endswith("_WEBHOOK_URL")
    }

    result = subprocess.run(
        [str(UE_FLOW), "validate", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )

    assert result.returncode == 1
    assert f"{systems_file}:{line}:" in result.stderr
    assert "points at the private address 10.0.0.5" in result.stderr
    assert "set allow_private_network: true" in result.stderr
