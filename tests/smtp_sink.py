"""A local SMTP sink: a server on 127.0.0.1 that keeps every message it is sent.

Just enough SMTP for a client that sends mail without TLS or login (EHLO,
MAIL, RCPT, DATA, QUIT), in a thread of the test's process; the messages
are the raw bytes of each DATA, dot-unstuffed.
"""
import socketserver
import threading


class _Session(socketserver.StreamRequestHandler):
    def _say(self, line):
        self.wfile.write(line.encode("ascii") + b"\r\n")
        self.wfile.flush()

    def handle(self):
        self._say("220 sink ESMTP")
        while True:
            line = self.rfile.readline()
            if not line:
                return
            verb = line[:4].upper()
            if verb == b"EHLO":
                self._say("250-sink")
                self._say("250 8BITMIME")
            elif verb == b"DATA":
                self._say("354 end with .")
                body = []
                while True:
                    part = self.rfile.readline()
                    if not part or part in (b".\r\n", b".\n"):
                        break
                    body.append(part[1:] if part.startswith(b"..") else part)
                self.server.messages.append(b"".join(body))
                self.server.arrived.set()
                self._say("250 kept")
            elif verb == b"QUIT":
                self._say("221 bye")
                return
            else:  # HELO, MAIL, RCPT, RSET, NOOP
                self._say("250 ok")


class SmtpSink(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Session)
        self.messages = []
        self.arrived = threading.Event()
        self.port = self.server_address[1]
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()
