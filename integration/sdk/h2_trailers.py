"""One h2c request with a body and request trailers (prior knowledge, no TLS), as a client can
send through Envoy; prints {"status", "body", "timed_out"} as JSON. Uses the `h2` library, so
the framing is a well-known implementation's, not ours.

usage: h2_trailers.py PORT PATH [HEADER=VALUE ...] --body TEXT [--no-trailers]
       h2_trailers.py PORT PATH [HEADER=VALUE ...] --frames JSON_LIST [--no-trailers]

--frames sends the body as those DATA frames, 100 ms apart (the last one ends the stream unless
trailers follow).
"""

import json
import socket
import sys
import time

import h2.config
import h2.connection
import h2.events


def main() -> None:
    port, path = int(sys.argv[1]), sys.argv[2]
    args = sys.argv[3:]
    body = args[args.index("--body") + 1].encode() if "--body" in args else b""
    frames = [body]
    if "--frames" in args:
        frames = [f.encode() for f in json.loads(args[args.index("--frames") + 1])]
    trailers = "--no-trailers" not in args
    extra = [a.split("=", 1) for a in args
             if "=" in a and not a.startswith("--") and not a.startswith("[")]

    sock = socket.create_connection(("127.0.0.1", port), timeout=1)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    headers = [(":method", "POST"), (":scheme", "http"), (":authority", "gw.test"),
               (":path", path), ("content-type", "application/json")] + extra
    conn.send_headers(1, headers)
    for i, frame in enumerate(frames):
        if i:
            sock.sendall(conn.data_to_send())
            time.sleep(0.1)
        conn.send_data(1, frame, end_stream=not trailers and i == len(frames) - 1)
    if trailers:
        conn.send_headers(1, [("x-trailer", "1")], end_stream=True)
    sock.sendall(conn.data_to_send())

    status, reply, done = None, b"", False
    deadline = time.monotonic() + 10
    while not done and time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        if not data:
            break
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                status = int(dict(event.headers)[b":status"])
            elif isinstance(event, h2.events.DataReceived):
                reply += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                done = True
        sock.sendall(conn.data_to_send())
    sock.close()
    print(json.dumps({"status": status, "body": reply.decode("utf-8", "replace"),
                      "timed_out": not done}))


if __name__ == "__main__":
    main()
