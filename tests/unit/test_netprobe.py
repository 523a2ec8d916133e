"""Parsing /proc/net/tcp{,6} and finding socket owners, against fixture proc trees."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from hal0_lemonade import netprobe

TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:33F9 00000000:0000 0A 00000000:00000000 00:00000000 00000000   999        0 4242 1
   1: 0100007F:8E1B 0100007F:D152 01 00000000:00000000 03:000014FC 00000000     0        0 0 3
   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1
"""
TCP6 = """\
  sl  local_address                         remote_address                        st
   0: 00000000000000000000000001000000:33F9 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 5151 1
"""  # noqa: E501


def test_listeners_are_parsed_with_addresses_ports_and_inodes() -> None:
    assert netprobe.parse_proc_net_tcp(TCP) == [
        netprobe.Listener("127.0.0.1", 13305, 4242),
        netprobe.Listener("0.0.0.0", 22, 77),  # noqa: S104
    ]
    assert netprobe.parse_proc_net_tcp(TCP6) == [netprobe.Listener("::1", 13305, 5151)]


def test_listeners_and_holders_from_a_proc_tree(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    (tmp_path / "net/tcp").write_text(TCP)
    (tmp_path / "net/tcp6").write_text(TCP6)
    proc = tmp_path / "321"
    (proc / "fd").mkdir(parents=True)
    (proc / "fd/3").symlink_to("socket:[4242]")
    (proc / "fd/4").symlink_to("/dev/null")
    (proc / "comm").write_text("lemond\n")
    (proc / "cmdline").write_text("/opt/lemonade/lemond\0/var/lib/hal0/lemonade\0")
    (tmp_path / "self").mkdir()  # not a pid

    found = netprobe.listeners(13305, tmp_path)
    assert {lst.inode for lst in found} == {4242, 5151}
    holders = netprobe.holders({4242}, tmp_path)
    assert [(h.pid, h.comm) for h in holders] == [(321, "lemond")]
    # The service's MainPID is what makes it lemond, not its name.
    assert netprobe.is_service(holders[0], 321, Path("/opt/lemonade/lemond"))
    assert not netprobe.is_service(holders[0], 999, Path("/opt/lemonade/lemond"))
    assert not netprobe.is_service(holders[0], 0, tmp_path / "no-such-lemond")
    assert holders[0].describe() == "/opt/lemonade/lemond /var/lib/hal0/lemonade"


def test_this_process_is_found_holding_a_real_socket() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        found = netprobe.listeners(port)
        assert [lst.address for lst in found] == ["127.0.0.1"]
        holders = netprobe.holders({found[0].inode})
    assert [h.pid for h in holders] == [os.getpid()]
    assert not netprobe.is_service(holders[0], 0, Path("/opt/lemonade/lemond"))
