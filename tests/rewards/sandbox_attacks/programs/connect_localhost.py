"""Reaching the network: TCP to a listener on 127.0.0.1, UDP, DNS, an abstract unix socket and netlink."""
import socket

PARAMS = {}  # filled in by the runner

attempts = [lambda: socket.create_connection(("127.0.0.1", PARAMS["port"]), timeout=1).sendall(b"pwned"),
            lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"pwned", ("127.0.0.1", PARAMS["port"])),
            lambda: socket.getaddrinfo("example.com", 80),
            lambda: socket.socket(socket.AF_UNIX).connect("\0rftflow-attack"),
            lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)]
for attempt in attempts:
    try:
        attempt()
    except OSError:
        pass


def f(x):
    return -1
