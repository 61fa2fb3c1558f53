# The lab's servers in a pod: HTTP on every TCP port given, a UDP echo on
# every UDP port, each answer naming the pod, so that a client can count
# hits per backend. GET /bytes/N returns N incompressible bytes and their
# SHA-256 in a header, computed here over what is sent, so that the client
# checks the transfer end to end. GET /peer names the pod and the address
# the connection came from, as this pod's kernel sees it (a hairpin
# connection's is the masquerade address).
# Usage: python3 server.py NAME TCP_PORTS UDP_PORTS   (ports comma-separated)
import hashlib, http.server, random, socket, sys, threading

name = sys.argv[1]
tcp = [int(p) for p in sys.argv[2].split(",") if p]
udp = [int(p) for p in sys.argv[3].split(",") if p]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path.startswith("/bytes/"):
            n = int(self.path[len("/bytes/"):])
            body = random.Random(n).randbytes(n)
        elif self.path == "/peer":
            peer = self.client_address[0].removeprefix("::ffff:")
            body = f"{name} {peer}\n".encode()
        else:
            body = (name + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Served-By", name)
        self.send_header("X-Content-SHA256", hashlib.sha256(body).hexdigest())
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    # One socket for both families: IPv4 clients arrive as ::ffff:a.b.c.d.
    address_family = socket.AF_INET6
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def echo(port):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    while True:
        data, peer = s.recvfrom(65535)
        s.sendto(name.encode() + b" " + data, peer)


for port in udp:
    threading.Thread(target=echo, args=(port,), daemon=True).start()
servers = [Server(("::", port), Handler) for port in tcp]
for srv in servers[1:]:
    threading.Thread(target=srv.serve_forever, daemon=True).start()
print("serving", name, "tcp", tcp, "udp", udp, flush=True)
if servers:
    servers[0].serve_forever()
else:
    threading.Event().wait()
