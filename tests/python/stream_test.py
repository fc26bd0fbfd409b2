"""The official Python `kubernetes` client's `stream()` against a running Flotilla server:
exec (stdin, stdout, stderr, binary output, exit codes on the error channel, closing
stdin) and port-forward to an HTTP component, over its WebSocket (`v5.channel.k8s.io`
for exec, `v4.channel.k8s.io` for port-forward).

Usage: python stream_test.py KUBECONFIG POD   (POD: an `image: busybox`-style pod and an
HTTP pod in one: the nginx pod). Exits non-zero on the first thing that differs from what
kube-apiserver does.
"""

import sys

from kubernetes import client, config
from kubernetes.stream import portforward, stream

NS = "default"


def main(kubeconfig, pod):
    config.load_kube_config(config_file=kubeconfig)
    core = client.CoreV1Api()

    # A one-shot command: stdout as a string, as `stream()` returns it by default.
    out = stream(core.connect_get_namespaced_pod_exec, pod, NS, command=["echo", "hello", "python"],
                 stderr=True, stdin=False, stdout=True, tty=False)
    assert out == "hello python\n", repr(out)

    # stdout and stderr apart, and the exit code through the error channel.
    resp = stream(core.connect_get_namespaced_pod_exec, pod, NS,
                  command=["sh", "-c", "echo to-out; echo to-err >&2; exit 7"],
                  stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
    resp.run_forever(timeout=30)
    assert resp.read_stdout() == "to-out\n"
    assert resp.read_stderr() == "to-err\n"
    assert resp.returncode == 7, resp.returncode
    resp.close()

    # stdin, written in pieces, then closed (v5): `wc -c` counts it and ends.
    resp = stream(core.connect_get_namespaced_pod_exec, pod, NS, command=["wc", "-c"],
                  stderr=True, stdin=True, stdout=True, tty=False, _preload_content=False)
    for _ in range(10):
        resp.write_stdin("x" * 1000)
    resp.close_channel(0)
    resp.run_forever(timeout=30)
    counted = resp.read_stdout()
    assert counted.strip() == "10000", "wc -c of 10000 bytes: %r (stderr %r)" % (counted, resp.read_stderr())
    assert resp.returncode == 0, resp.returncode
    resp.close()

    # Binary output comes back byte for byte.
    resp = stream(core.connect_get_namespaced_pod_exec, pod, NS,
                  command=["sh", "-c", "printf '\\000\\001\\377'"],
                  stderr=True, stdin=False, stdout=True, tty=False, binary=True, _preload_content=False)
    resp.run_forever(timeout=30)
    data = resp.read_stdout()
    assert data == b"\x00\x01\xff", repr(data)
    resp.close()

    # Port-forward to the pod's HTTP listener on port 80.
    pf = portforward(core.connect_get_namespaced_pod_portforward, pod, NS, ports="80")
    sock = pf.socket(80)
    sock.setblocking(True)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    reply = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        reply += chunk
    sock.close()
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    assert b"Welcome to nginx!" in reply, reply[:400]
    assert pf.error(80) is None, pf.error(80)
    pf.close()
    print("python stream: ok")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
