"""The network policy (transport.py): proxies from an env mapping, NO_PROXY, redaction,
the trust store, and the policy's target. Pure tables: no sockets; the environment is a
plain dict, never os.environ."""

from __future__ import annotations

import shutil
import ssl

import pytest
from netfixtures import make_pki

from anyfast_cli.errors import ExitCode, UsageError
from anyfast_cli.settings import timeouts
from anyfast_cli.transport import (
    MAX_HEADER_BYTES,
    build_ssl_context,
    bypasses_proxy,
    host_port,
    network_policy,
    proxy_for,
    redact_userinfo,
)

API = "https://api.example.com/v1"
PLAIN = "http://api.example.com/v1"
P = "http://proxy.corp:3128"


# --- proxy_for: which variable, for which scheme ---------------------------------------------


@pytest.mark.parametrize(
    "url, env, expected",
    [
        (API, {}, None),
        (API, {"https_proxy": P}, P),
        (API, {"HTTPS_PROXY": P}, P),
        (API, {"https_proxy": P, "HTTPS_PROXY": "http://upper:1"}, P),  # lowercase wins
        (API, {"HTTPS_PROXY": P, "https_proxy": "http://lower:1"}, "http://lower:1"),
        (API, {"http_proxy": P}, None),  # the scheme's own variable only
        (API, {"HTTP_PROXY": P}, None),
        (PLAIN, {"http_proxy": P}, P),
        (PLAIN, {"HTTP_PROXY": P}, P),
        (PLAIN, {"https_proxy": P}, None),
        (PLAIN, {"http_proxy": P, "HTTP_PROXY": "http://upper:1"}, P),
        (API, {"all_proxy": P}, P),
        (API, {"ALL_PROXY": P}, P),
        (PLAIN, {"ALL_PROXY": P}, P),
        (API, {"all_proxy": P, "ALL_PROXY": "http://upper:1"}, P),
        (API, {"HTTPS_PROXY": P, "all_proxy": "http://all:1"}, P),  # the scheme's variable before ALL_PROXY
        (API, {"https_proxy": "", "HTTPS_PROXY": P}, P),  # empty values are ignored
        (API, {"https_proxy": "   ", "HTTPS_PROXY": P}, P),
        (API, {"https_proxy": "", "HTTPS_PROXY": "", "all_proxy": P}, P),
        (API, {"https_proxy": "", "HTTPS_PROXY": ""}, None),
        (API, {"https_proxy": f"  {P}\n"}, P),
        (API, {"https_proxy": "proxy.corp:3128"}, P),  # no scheme: http://
        (API, {"https_proxy": "proxy.corp"}, "http://proxy.corp"),
        (API, {"https_proxy": "user:pw@proxy.corp:3128"}, "http://user:pw@proxy.corp:3128"),
        (API, {"https_proxy": "https://proxy.corp:443"}, "https://proxy.corp:443"),
        (API, {"https_proxy": "HTTP://Proxy.Corp:3128"}, "HTTP://Proxy.Corp:3128"),
        (API, {"https_proxy": "http://[fd00::1]:3128"}, "http://[fd00::1]:3128"),
        ("HTTPS://API.EXAMPLE.COM/v1", {"https_proxy": P}, P),
        ("https://[2001:db8::1]:8443/v1", {"https_proxy": P}, P),
        (API, {"ftp_proxy": P, "socks_proxy": "socks5://x:1"}, None),  # other variables are not read
    ],
    ids=repr,
)
def test_proxy_for(url, env, expected):
    assert proxy_for(url, env) == expected


@pytest.mark.parametrize(
    "url, env",
    [
        (API, {"https_proxy": P, "no_proxy": "api.example.com"}),
        (API, {"https_proxy": P, "NO_PROXY": "api.example.com"}),
        (API, {"ALL_PROXY": P, "NO_PROXY": "*"}),
        (API, {"https_proxy": P, "NO_PROXY": "localhost, .example.com"}),
        ("https://api.example.com:8443/v1", {"https_proxy": P, "NO_PROXY": "api.example.com:8443"}),
        ("http://127.0.0.1:8080/v1", {"http_proxy": P, "NO_PROXY": "127.0.0.0/8"}),
        ("http://[::1]:8080/v1", {"http_proxy": P, "NO_PROXY": "[::1]"}),
        ("http://[::1]:8080/v1", {"http_proxy": P, "NO_PROXY": "[::1]:8080"}),
        ("http://[::1]:8080/v1", {"http_proxy": P, "NO_PROXY": "::1"}),
        (API, {"https_proxy": "socks5://u:pw@proxy:1080", "NO_PROXY": "api.example.com"}),  # exempt: never checked
        (API, {"https_proxy": "ftp://proxy", "NO_PROXY": "example.com"}),
    ],
    ids=repr,
)
def test_no_proxy_exempts_the_endpoint(url, env):
    assert proxy_for(url, env) is None


@pytest.mark.parametrize(
    "env, expected",
    [
        ({"https_proxy": P, "no_proxy": "other.com", "NO_PROXY": "api.example.com"}, P),  # lowercase wins
        ({"https_proxy": P, "NO_PROXY": "other.com"}, P),
        ({"https_proxy": P, "NO_PROXY": "example.co"}, P),
        ({"https_proxy": P, "NO_PROXY": "ample.com"}, P),  # a suffix must end at a dot
        ({"https_proxy": P, "NO_PROXY": "api.example.com:8443"}, P),  # another port
        ({"https_proxy": P, "NO_PROXY": ""}, P),
        ({"https_proxy": P, "NO_PROXY": " , ,"}, P),
    ],
    ids=repr,
)
def test_no_proxy_leaves_other_hosts_alone(env, expected):
    assert proxy_for(API, env) == expected


def test_an_empty_no_proxy_is_ignored_like_an_empty_proxy():
    assert proxy_for(API, {"https_proxy": P, "no_proxy": "", "NO_PROXY": "api.example.com"}) is None


@pytest.mark.parametrize(
    "url, no_proxy",
    [(API, "api.example.com:443"), (PLAIN, "api.example.com:80"), ("http://10.0.0.5/v1", "10.0.0.0/8:80")],
)
def test_no_proxy_with_the_default_port(url, no_proxy):
    assert proxy_for(url, {"all_proxy": P, "no_proxy": no_proxy}) is None


# --- bypasses_proxy: the NO_PROXY forms ---------------------------------------------------------


@pytest.mark.parametrize(
    "host, port, no_proxy, expected",
    [
        ("api.example.com", 443, "", False),
        ("api.example.com", 443, "*", True),
        ("api.example.com", 443, "foo.com,*", True),
        ("api.example.com", 443, "api.example.com", True),
        ("API.Example.COM", 443, "api.example.com", True),
        ("api.example.com", 443, "API.EXAMPLE.COM", True),
        ("api.example.com", 443, "example.com", True),  # a domain covers its subdomains
        ("api.example.com", 443, ".example.com", True),
        ("example.com", 443, ".example.com", True),
        ("api.example.com", 443, "*.example.com", True),
        ("a.b.example.com", 443, "example.com", True),
        ("api.example.com", 443, "com", True),
        ("api.example.com", 443, "ample.com", False),
        ("api.example.com", 443, "xample.com", False),
        ("example.com", 443, "api.example.com", False),
        ("api.example.com", 443, "example.co", False),
        ("api.example.com", 443, "other.com", False),
        ("api.example.com", 443, "localhost,127.0.0.1,.example.com", True),
        ("api.example.com", 443, "localhost 127.0.0.1   api.example.com", True),
        ("api.example.com", 443, " localhost , api.example.com ", True),
        ("api.example.com", 443, ",,", False),
        ("api.example.com", 443, ".", False),
        ("api.example.com", 443, "*.", False),
        ("api.example.com", 443, "api.example.com:443", True),
        ("api.example.com", 8443, "api.example.com:8443", True),
        ("api.example.com", 8443, "api.example.com:443", False),
        ("api.example.com", 8443, "example.com:8443", True),
        ("api.example.com", 443, "api.example.com:", True),  # an empty port is no port
        ("10.1.2.3", 80, "10.1.2.3", True),
        ("10.1.2.3", 80, "10.1.2.4", False),
        ("10.1.2.3", 80, "10.0.0.0/8", True),
        ("10.1.2.3", 80, "10.1.0.0/16", True),
        ("10.1.2.3", 80, "10.2.0.0/16", False),
        ("10.1.2.3", 80, "10.1.2.3/32", True),
        ("10.1.2.3", 80, "10.1.2.0/24:80", True),
        ("10.1.2.3", 80, "10.1.2.0/24:81", False),
        ("10.1.2.3", 80, "10.1.2.3:80", True),
        ("192.168.1.1", 80, "10.0.0.0/8", False),
        ("192.168.1.1", 80, "192.168.1.1/16", True),  # host bits set: strict=False
        ("::1", 80, "::1", True),
        ("::1", 80, "[::1]", True),
        ("[::1]", 80, "[::1]", True),
        ("::1", 8080, "[::1]:8080", True),
        ("::1", 9090, "[::1]:8080", False),
        ("::1", 80, "::2", False),
        ("fd12:3456::5", 443, "fd00::/8", True),
        ("fd12:3456::5", 443, "fe80::/10", False),
        ("2001:db8::1", 443, "2001:DB8::1", True),
        ("api.example.com", 443, "10.0.0.0/8", False),  # a name is not in a network
        ("10.1.2.3", 80, "example.com", False),
        ("localhost", 11434, "localhost", True),
    ],
    ids=repr,
)
def test_bypasses_proxy(host, port, no_proxy, expected):
    assert bypasses_proxy(host, port, no_proxy) is expected


# --- proxies anyfast refuses -----------------------------------------------------------------


@pytest.mark.parametrize(
    "env, name, shown",
    [
        ({"ALL_PROXY": "socks5://user:secret@proxy:1080"}, "ALL_PROXY", "socks5://user:***@proxy:1080"),
        ({"all_proxy": "socks5h://proxy:1080"}, "all_proxy", "socks5h://proxy:1080"),
        ({"https_proxy": "socks4://proxy:1080"}, "https_proxy", "socks4://proxy:1080"),
        ({"HTTPS_PROXY": "SOCKS5://u:secret@proxy:1080"}, "HTTPS_PROXY", "socks5://u:***@proxy:1080"),
        ({"https_proxy": "socks://proxy"}, "https_proxy", "socks://proxy"),
        ({"https_proxy": "", "HTTPS_PROXY": "socks5://proxy:1080"}, "HTTPS_PROXY", "socks5://proxy:1080"),
    ],
    ids=repr,
)
def test_socks_proxies_are_refused(env, name, shown):
    with pytest.raises(UsageError) as caught:
        proxy_for(API, env)
    error = caught.value
    assert error.exit_code == ExitCode.USAGE == 2
    assert error.message == f"SOCKS proxies are not supported: {name}={shown}"
    assert "secret" not in error.message
    assert "NO_PROXY" in error.hint


@pytest.mark.parametrize(
    "value, shown",
    [
        ("ftp://proxy:21", "ftp://proxy:21"),
        ("ftp://u:secret@proxy:21", "ftp://u:***@proxy:21"),
        ("file:///etc/proxy", "file:///etc/proxy"),
        ("http://", "http://"),
        ("http://:3128", "http://:3128"),
        ("http://u:secret@", "http://u:***@"),
        ("://proxy", "://proxy"),
    ],
    ids=repr,
)
def test_a_proxy_anyfast_cannot_use_is_a_usage_error(value, shown):
    with pytest.raises(UsageError) as caught:
        proxy_for(API, {"HTTPS_PROXY": value})
    assert caught.value.message == f"HTTPS_PROXY={shown} is not a proxy URL anyfast can use"
    assert "secret" not in caught.value.message
    assert caught.value.hint == "give it as http://HOST:PORT"
    assert caught.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize("value", ["http://proxy:abc", "http://proxy:99999", "http://[proxy:3128", "proxy.corp:-1"])
def test_a_proxy_with_a_bad_port_is_a_usage_error(value):
    with pytest.raises(UsageError):
        network_policy(PLAIN, {"http_proxy": value}, None).proxy_target  # noqa: B018


# --- redact_userinfo ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, expected",
    [
        ("http://proxy:3128", "http://proxy:3128"),
        ("http://user@proxy:3128", "http://user@proxy:3128"),
        ("http://user:secret@proxy:3128", "http://user:***@proxy:3128"),
        ("http://user:secret@proxy:3128/path?q=1", "http://user:***@proxy:3128/path?q=1"),
        ("http://user:p@ss@proxy:3128", "http://user:***@proxy:3128"),  # an @ in the password
        ("http://user:p:ss@proxy", "http://user:***@proxy"),
        ("http://user:@proxy", "http://user:***@proxy"),
        ("http://:secret@proxy", "http://:***@proxy"),
        ("http://us%40er:p%3Aw@proxy", "http://us%40er:***@proxy"),
        ("socks5://u:pw@[::1]:1080", "socks5://u:***@[::1]:1080"),
        ("https://api.example.com/v1", "https://api.example.com/v1"),
        ("", ""),
    ],
    ids=repr,
)
def test_redact_userinfo(url, expected):
    assert redact_userinfo(url) == expected


# --- build_ssl_context -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory):
    """A self-signed CA certificate ("anyfast test CA"), from the parity suite's throwaway PKI."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    return make_pki(tmp_path_factory.mktemp("ca")).ca_pem


def subjects(context: ssl.SSLContext) -> list:
    return [dict(part[0] for part in ca["subject"]).get("commonName") for ca in context.get_ca_certs()]


@pytest.mark.parametrize("name", ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"])
def test_a_ca_file_is_loaded(name, ca_file):
    context = build_ssl_context({name: str(ca_file)})
    assert type(context) is ssl.SSLContext
    assert subjects(context) == ["anyfast test CA"]  # that CA only, not the system's
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True


def test_a_ca_directory_is_loaded(ca_file):
    context = build_ssl_context({"SSL_CERT_DIR": str(ca_file.parent)})
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_every_named_ca_counts(ca_file, tmp_path):
    other = tmp_path / "copy.pem"
    other.write_bytes(ca_file.read_bytes())
    context = build_ssl_context(
        {"SSL_CERT_FILE": str(ca_file), "REQUESTS_CA_BUNDLE": str(other), "SSL_CERT_DIR": str(ca_file.parent)}
    )
    assert subjects(context) == ["anyfast test CA"]


@pytest.mark.parametrize("name", ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "SSL_CERT_DIR"])
def test_a_missing_ca_is_a_usage_error(name, tmp_path):
    missing = tmp_path / "nowhere" / "ca.pem"
    with pytest.raises(UsageError) as caught:
        build_ssl_context({name: str(missing)})
    assert caught.value.message == f"{name} names {missing}, which cannot be read"
    assert caught.value.exit_code == ExitCode.USAGE


def test_one_missing_ca_among_good_ones_is_still_an_error(ca_file, tmp_path):
    with pytest.raises(UsageError, match="^REQUESTS_CA_BUNDLE names"):
        build_ssl_context({"SSL_CERT_FILE": str(ca_file), "REQUESTS_CA_BUNDLE": str(tmp_path / "missing.pem")})


@pytest.mark.parametrize(
    "name, kind",
    [("SSL_CERT_FILE", "dir"), ("REQUESTS_CA_BUNDLE", "dir"), ("SSL_CERT_DIR", "file")],
)
def test_a_ca_of_the_wrong_kind_is_a_usage_error(name, kind, tmp_path):
    path = tmp_path
    if kind == "file":
        path = tmp_path / "ca.pem"
        path.write_text("x")
    with pytest.raises(UsageError, match=f"^{name} names .*, which cannot be read$"):
        build_ssl_context({name: str(path)})


@pytest.mark.parametrize(
    "content",
    [b"not a certificate\n", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", b"\x00\xff" * 64],
    ids=["text", "bad pem", "binary"],
)
def test_a_file_without_certificates_is_a_usage_error(content, tmp_path):
    path = tmp_path / "ca.pem"
    path.write_bytes(content)
    with pytest.raises(UsageError) as caught:
        build_ssl_context({"SSL_CERT_FILE": str(path)})
    assert caught.value.message.startswith(f"SSL_CERT_FILE names {path}, which holds no usable certificate: ")
    assert "_ssl.c" not in caught.value.message  # where Python raised it means nothing to a user
    assert caught.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize(
    "env",
    [{}, {"SSL_CERT_FILE": "", "REQUESTS_CA_BUNDLE": "", "SSL_CERT_DIR": ""}, {"CURL_CA_BUNDLE": "/nowhere"}],
    ids=["none", "all empty", "other variable"],
)
def test_without_variables_the_system_store_is_used(env):
    truststore = pytest.importorskip("truststore")
    context = build_ssl_context(env)
    assert isinstance(context, truststore.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True


# --- network_policy ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, target",
    [
        ("https://api.example.com/v1", "api.example.com:443"),
        ("http://api.example.com/v1", "api.example.com:80"),
        ("https://api.example.com:8443/v1", "api.example.com:8443"),
        ("http://localhost:11434/v1", "localhost:11434"),
        ("http://API.Example.com/v1", "api.example.com:80"),
        ("http://127.0.0.1:8080", "127.0.0.1:8080"),
        ("http://[::1]:8080/v1", "[::1]:8080"),
        ("https://[2001:db8::1]/v1", "[2001:db8::1]:443"),
        ("http://[fe80::1%25eth0]:8080/v1", "[fe80::1%25eth0]:8080"),
        ("https://user:secret@api.example.com/v1", "api.example.com:443"),  # never the credentials
    ],
    ids=repr,
)
def test_network_policy_target(url, target):
    policy = network_policy(url, {}, None)
    assert policy.target == target == host_port(url)
    assert policy.url == url


@pytest.mark.parametrize(
    "url, env, proxy, proxy_target",
    [
        (PLAIN, {}, None, None),
        (PLAIN, {"http_proxy": "user:secret@proxy.corp:3128"}, "http://user:secret@proxy.corp:3128", "proxy.corp:3128"),
        (PLAIN, {"http_proxy": "http://proxy.corp"}, "http://proxy.corp", "proxy.corp:80"),
        (PLAIN, {"http_proxy": "https://proxy.corp"}, "https://proxy.corp", "proxy.corp:443"),
        (PLAIN, {"http_proxy": "http://[fd00::1]:3128"}, "http://[fd00::1]:3128", "[fd00::1]:3128"),
        (PLAIN, {"http_proxy": P, "no_proxy": "example.com"}, None, None),
        (PLAIN, {"https_proxy": P}, None, None),
    ],
    ids=repr,
)
def test_network_policy_proxy(url, env, proxy, proxy_target):
    policy = network_policy(url, env, None)
    assert policy.proxy == proxy
    assert policy.proxy_target == proxy_target


@pytest.mark.parametrize("timeout", [None, 5.0, 30.0, 0.5, 1200.0])
def test_network_policy_limits(timeout):
    policy = network_policy(PLAIN, {}, timeout)
    assert (policy.connect_timeout, policy.read_timeout) == timeouts(timeout)
    assert policy.connect_timeout <= policy.read_timeout
    if timeout is not None:
        assert policy.read_timeout == timeout
    assert policy.max_header_bytes == MAX_HEADER_BYTES == 100 * 1024
    assert policy.follow_redirects is False


def test_network_policy_trust(ca_file):
    assert network_policy(PLAIN, {"SSL_CERT_FILE": "/nowhere"}, None).ssl_context is None  # not read for http://
    context = network_policy(API, {"SSL_CERT_FILE": str(ca_file)}, None).ssl_context
    assert subjects(context) == ["anyfast test CA"]
    with pytest.raises(UsageError, match="SSL_CERT_FILE"):
        network_policy(API, {"SSL_CERT_FILE": "/nowhere/ca.pem"}, None)


def test_network_policy_with_a_refused_proxy_is_a_usage_error():
    with pytest.raises(UsageError, match="SOCKS"):
        network_policy(API, {"ALL_PROXY": "socks5://proxy:1080"}, None)
