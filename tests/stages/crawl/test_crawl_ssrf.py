"""The SSRF guard: private, loopback, link-local, mapped and numeric forms, other schemes.

Every socket connect in the process is recorded, so "no connection made" is measured, not
assumed: the crawl runs in this process (local executor, fetch threads included).
"""

from __future__ import annotations

import socket

import pytest

from pipeline import run
from tests.stages.crawl.conftest import RouteServer, crawl_config, crawl_stats, page, redirect


@pytest.fixture
def connects(monkeypatch):
    seen: list = []
    real = socket.socket.connect

    def connect(self, address):
        seen.append(address)
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return seen


def test_private_seeds_are_refused_without_any_connection(tmp_path, connects):
    seeds = [
        "http://127.0.0.1:8765/a",
        "http://[::1]:8765/b",
        "http://10.0.0.1/c",
        "http://169.254.169.254/latest/meta-data/",
        "http://2130706433/d",  # 127.0.0.1 as one decimal number
        "http://0x0A000001/e",  # 10.0.0.1 in hex
        "http://[::ffff:127.0.0.1]/f",  # IPv4-mapped IPv6
        "http://[::ffff:a9fe:a9fe]/g",  # 169.254.169.254, mapped
        "http://192.168.1.1/h",
        "http://224.0.0.1/i",
        "http://localhost:8765/j",
        "file:///etc/passwd",
        "ftp://10.0.0.1/k",
    ]
    run(crawl_config(tmp_path, seeds, allow_private=False))
    assert connects == []
    stats = crawl_stats(tmp_path)
    assert stats["kept"] == 0
    assert stats["dropped"] == {
        "refused:loopback": 5,  # 127.0.0.1, ::1, 2130706433, ::ffff:127.0.0.1, localhost
        "refused:private": 3,  # 10.0.0.1 twice (dotted, hex), 192.168.1.1
        "refused:link_local": 2,  # metadata address, dotted and mapped
        "refused:multicast": 1,
        "refused:scheme": 2,  # file://, ftp://
    }
    assert stats["in"] == len(seeds)


def test_redirects_to_private_targets_are_refused_after_the_hop(tmp_path, connects):
    targets = {
        "/go-private": "http://10.0.0.1/admin",
        "/go-loopback6": "http://[::1]/",
        "/go-metadata": "http://169.254.169.254/latest/meta-data/",
        "/go-decimal": "http://2130706434/",  # 127.0.0.2: loopback, not in the allowed /32
        "/go-mapped": "http://[::ffff:10.0.0.1]/",
        "/go-file": "file:///etc/passwd",
    }
    routes = {"/": page("home", list(targets)), **{p: redirect(t) for p, t in targets.items()}}
    with RouteServer(routes) as srv:
        port = srv.httpd.server_address[1]
        # Only the test server's address is allowed; scope admits the redirect targets.
        run(crawl_config(tmp_path, [srv.base + "/"], allow_private=False,
                         allowed_networks=["127.0.0.1/32"],
                         allowed_domains=["127.0.0.1", "10.0.0.1", "::1", "169.254.169.254",
                                          "127.0.0.2", "::ffff:a00:1"]))
    assert {address[:2] for address in connects} == {("127.0.0.1", port)}
    assert sorted(srv.paths()) == sorted(["/robots.txt", "/", *targets])
    stats = crawl_stats(tmp_path)
    assert stats["dropped"] == {
        "redirect": 6,
        "refused:private": 2,
        "refused:loopback": 2,
        "refused:link_local": 1,
        "refused:scheme": 1,
    }
    assert stats["kept"] == 1


def test_guard_on_by_default_even_for_the_local_test_server(tmp_path, connects):
    with RouteServer({"/": page("home")}) as srv:
        run(crawl_config(tmp_path, [srv.base + "/"], allow_private=False))
    assert srv.paths() == [] and connects == []
    assert crawl_stats(tmp_path)["dropped"] == {"refused:loopback": 1}
