"""FAKE Paperless-ngx REST API: the part Paperless-AI v3.0.9 calls.

Paperless-ngx is not part of the collection: it is the user's, already
running in the home lab. The lab runs this stand-in as an outside service
(tools/lab/external.py) so that Paperless-AI has something to validate its token
against and documents to classify.

Strict where Paperless-AI depends on it, after paperless-ngx v3.0.5
(src/paperless/settings/__init__.py REST_FRAMEWORK and Django REST
framework's authentication and permission errors):
- every API path needs ``Authorization: Token <key>`` (DRF
  TokenAuthentication); the first authentication class is
  PaperlessBasicAuthentication, so a 401 carries ``WWW-Authenticate: Basic
  realm="api"``;
- a wrong key: 401 ``{"detail": "Invalid token."}``; ``Token`` with no key:
  401 ``{"detail": "Invalid token header. No credentials provided."}``; a key
  with spaces: 401 ``... Token string should not contain spaces.``; no
  credentials: 401 ``{"detail": "Authentication credentials were not
  provided."}``;
- a valid key of a user without the view permission of a list: 403
  ``{"detail": "You do not have permission to perform this action."}``;
- lists are paginated as Paperless-ngx's StandardPagination does: ``count``,
  ``next``, ``previous``, ``all`` (every id) and ``results``; ``page`` and
  ``page_size`` (at most 100000) are honoured, a page past the end is 404
  ``{"detail": "Invalid page."}``;
- ``/api/documents/<id>/`` carries ``content`` and ``user_can_change``,
  ``/api/documents/<id>/thumb/`` a thumbnail.

Served: GET on ``/api/`` lists of documents, tags, correspondents,
document_types, custom_fields and users, single documents and thumbnails.
Anything else answers 501 naming the method and path: Paperless-AI's
write-back (PATCH of documents, POST of tags) is not modelled.
"""

from __future__ import annotations

import re
import threading
import urllib.parse

from .http import FakeHandler, FakeServer

INVALID_TOKEN = {"detail": "Invalid token."}
NO_CREDENTIALS = {"detail": "Authentication credentials were not provided."}
NO_TOKEN_KEY = {"detail": "Invalid token header. No credentials provided."}
TOKEN_WITH_SPACES = {"detail": "Invalid token header. Token string should not contain spaces."}
FORBIDDEN = {"detail": "You do not have permission to perform this action."}
INVALID_PAGE = {"detail": "Invalid page."}
NOT_FOUND = {"detail": "No Document matches the given query."}
AUTHENTICATE = {"WWW-Authenticate": 'Basic realm="api"'}
LISTS = ("documents", "tags", "correspondents", "document_types", "custom_fields", "users")
# A 1x1 PNG: what a thumbnail request gets back.
THUMBNAIL = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                          "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")

INVOICE = ("ACME GmbH, Musterstrasse 1, 10115 Berlin\nRechnung Nr. 2026-11-0042, 30.11.2026\n"
           "Position 1: Druckerpapier A4, 5 x 2,50 EUR = 12,50 EUR\nGesamtbetrag: 12,50 EUR\n")


def sample_data(username):
    """A small library: one user (the token's), a few tags, two documents, one of them long."""
    long_text = INVOICE + "".join("Zeile %05d: Leistungsnachweis, Menge 1, Betrag 0,00 EUR.\n" % n
                                  for n in range(1, 1601))
    return {
        "users": [{"id": 3, "username": username, "is_superuser": False, "is_active": True}],
        "tags": [{"id": 1, "name": "invoice", "document_count": 2}, {"id": 2, "name": "receipt", "document_count": 0}],
        "correspondents": [{"id": 1, "name": "ACME GmbH", "document_count": 2}],
        "document_types": [{"id": 1, "name": "Invoice", "document_count": 2}],
        "custom_fields": [],
        "documents": [
            {"id": 1, "title": "scan-0001", "content": INVOICE, "tags": [], "correspondent": None,
             "document_type": None, "created": "2026-11-30", "created_date": "2026-11-30",
             "added": "2026-11-30T10:00:00+01:00", "owner": 3, "user_can_change": True, "custom_fields": []},
            {"id": 2, "title": "scan-0002", "content": long_text, "tags": [], "correspondent": None,
             "document_type": None, "created": "2026-11-30", "created_date": "2026-11-30",
             "added": "2026-11-30T10:05:00+01:00", "owner": 3, "user_can_change": True, "custom_fields": []},
        ],
    }


class PaperlessNgxHandler(FakeHandler):
    server_version = "granian"

    def _authenticate(self):
        """The user a request authenticates as, or (status, body) of DRF's refusal."""
        header = self.headers.get("Authorization", "")
        parts = header.split()
        if not parts or parts[0].lower() != "token":
            # Neither Basic nor Token credentials, no session: DRF's NotAuthenticated.
            return None, (401, NO_CREDENTIALS)
        if len(parts) == 1:
            return None, (401, NO_TOKEN_KEY)
        if len(parts) > 2:
            return None, (401, TOKEN_WITH_SPACES)
        user = self.server.user_of(parts[1])
        if user is None:
            return None, (401, INVALID_TOKEN)
        return user, None

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        self.server.record("GET", url.path, self.headers.get("Authorization"))
        if not url.path.startswith("/api/"):
            return self._unmodelled()
        user, refusal = self._authenticate()
        if refusal:
            return self.send_body(refusal[0], refusal[1], headers=AUTHENTICATE if refusal[0] == 401 else None)
        match = re.fullmatch(r"/api/(\w+)/", url.path)
        if match and match.group(1) in LISTS:
            if match.group(1) not in self.server.permissions:
                return self.send_body(403, FORBIDDEN)
            return self._list(match.group(1), url.path, query)
        match = re.fullmatch(r"/api/documents/(\d+)/(thumb/)?", url.path)
        if match:
            if "documents" not in self.server.permissions:
                return self.send_body(403, FORBIDDEN)
            doc = next((d for d in self.server.data["documents"] if d["id"] == int(match.group(1))), None)
            if doc is None:
                return self.send_body(404, NOT_FOUND)
            if match.group(2):
                return self.send_body(200, THUMBNAIL, content_type="image/webp")
            return self.send_body(200, doc)
        if url.path == "/api/":
            return self.send_body(200, {name: "%s/api/%s/" % (self.server.url, name) for name in LISTS})
        return self._unmodelled()

    def _list(self, name, path, query):
        items = self.server.data[name]
        try:
            page = int(query.get("page", ["1"])[0])
            size = min(int(query.get("page_size", ["25"])[0]), 100000)
        except ValueError:
            return self.send_body(404, INVALID_PAGE)
        start = (page - 1) * size
        if page < 1 or size < 1 or (start >= len(items) and page != 1):
            return self.send_body(404, INVALID_PAGE)
        fields = query.get("fields", [""])[0].split(",") if query.get("fields") else None
        results = [{k: v for k, v in item.items() if not fields or k in fields} for item in items[start:start + size]]

        def page_url(number):
            if number < 1 or (number - 1) * size >= len(items):
                return None
            params = dict((k, v[-1]) for k, v in query.items())
            params["page"] = str(number)
            return "%s%s?%s" % (self.server.url, path, urllib.parse.urlencode(params))
        return self.send_body(200, {"count": len(items), "next": page_url(page + 1),
                                    "previous": page_url(page - 1) if page > 1 else None,
                                    "all": [item["id"] for item in items], "results": results})

    def _unmodelled(self):
        self.send_body(501, {"detail": "the lab's FAKE Paperless-ngx does not model %s %s" % (
            self.command, urllib.parse.urlsplit(self.path).path)})

    do_POST = do_PUT = do_PATCH = do_DELETE = lambda self: (
        self.server.record(self.command, self.path, self.headers.get("Authorization")), self._unmodelled())


class PaperlessNgxServer(FakeServer):
    """``token_source`` gives the one valid key (read at each request, so a key
    written after start is honoured); ``permissions`` names the lists its user
    may view (all of them unless narrowed)."""

    def __init__(self, address, token_source, username="paperless-ai"):
        super().__init__(address, PaperlessNgxHandler)
        self.token_source = token_source
        self.data = sample_data(username)
        self.permissions = set(LISTS)
        self.requests = []
        self.requests_lock = threading.Lock()

    def user_of(self, key):
        token = self.token_source()
        if token and key == token:
            return self.data["users"][0]
        return None

    def record(self, method, path, authorization):
        # Which key was sent is recorded as valid or not, never the key itself.
        scheme = (authorization or "").split(" ", 1)[0]
        with self.requests_lock:
            self.requests.append({"method": method, "path": path, "auth": scheme or None,
                                  "valid": bool(authorization) and self.user_of(
                                      (authorization or "").partition(" ")[2]) is not None})
