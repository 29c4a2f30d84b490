"""Serves one of the book's socketserver classes (2_1, 2_2) for --vs=book.

Why Python, not TypeScript: it runs the book's own Python classes. The
book's 2_1 and 2_2 only run a demo of two or three clients and exit; this
loads the script by path (its name starts with a digit, so it cannot be
imported by name), builds the book's server class with the book's handler on
127.0.0.1, port 0, prints the port and calls serve_forever(), which is what
the book's main() does, minus the demo clients. SIGTERM ends it (Python's
default). Nothing of the book is copied here.

    python3 bench/book_server.py PATH SERVER_CLASS HANDLER_CLASS
"""

import importlib.util
import sys

path, server_class, handler_class = sys.argv[1:4]
spec = importlib.util.spec_from_file_location("book_recipe", path)
book = importlib.util.module_from_spec(spec)
spec.loader.exec_module(book)
handler = getattr(book, handler_class)
server = getattr(book, server_class)(("127.0.0.1", 0), handler)
print("Listening on 127.0.0.1:%d" % server.server_address[1], flush=True)
server.serve_forever()
