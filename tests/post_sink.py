"""An HTTP endpoint the tests run on 127.0.0.1:<free port>, standing in for a service
the app sends to (an OTLP trace receiver, Sentry's envelope endpoint): it keeps the body
of every POST to its path (gunzipped), and notes any other request, which it answers 404.
"""

import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self


class PostSink:
    PATH: ClassVar[str]
    CONTENT_TYPE: ClassVar[str | None] = None
    """The only content type kept; None: any."""
    REPLY_TYPE: ClassVar[str]
    REPLY: ClassVar[bytes]

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.refused: list[str] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                encoding = self.headers.get("Content-Encoding")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                content_type = self.headers.get_content_type()
                accepted = (
                    self.path == sink.PATH
                    and encoding in (None, "gzip")
                    and sink.CONTENT_TYPE in (None, content_type)
                )
                with sink._lock:
                    if accepted:
                        sink.bodies.append(body)
                    else:
                        sink.refused.append(f"{self.path} {content_type} {encoding}")
                self.send_response(200 if accepted else 404)
                self.send_header("Content-Type", sink.REPLY_TYPE)
                self.send_header("Content-Length", str(len(sink.REPLY)))
                self.end_headers()
                self.wfile.write(sink.REPLY)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def kept(self) -> list[bytes]:
        """The bodies received so far."""
        with self._lock:
            return list(self.bodies)
