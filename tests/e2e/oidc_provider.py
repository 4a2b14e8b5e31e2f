"""A small OpenID Connect provider on 127.0.0.1, for the sign-in browser test.

It speaks the authorization-code flow the way Streamlit's `st.login` (Authlib) uses it:
discovery document, an authorize page where the "user" types an email and presses Sign in,
a token endpoint that checks the client's secret, the code, its redirect URI and single use,
and answers with an ID token signed RS256 (joserfc, which Authlib brings) carrying ``iss``,
``sub``, ``aud``, ``nonce``, ``email`` and ``name``; its public key at ``jwks_uri``; and an
``end_session_endpoint`` that sends the browser back. Nothing here is a real identity
provider's code: it is the protocol, small enough to read, with every step recorded in
``events`` for the test to check.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit


class MockOIDCProvider:
    """One client (``client_id``, ``client_secret``, ``redirect_uri``); any email may sign in."""

    def __init__(self, client_id: str, client_secret: str, redirect_uri: str):
        from joserfc.jwk import RSAKey

        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uri = redirect_uri
        self.key = RSAKey.generate_key(2048, parameters={"kid": "mock-1", "use": "sig", "alg": "RS256"})
        self.codes: dict[str, dict[str, str]] = {}
        self.events: list[str] = []  # "authorize", "sign-in <email>", "token <email>", "logout", refusals
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None
        self.issuer = ""

    # ---------------------------------------------------------------------------------
    @staticmethod
    def sub_for(email: str) -> str:
        """The stable subject this provider gives an email (what a real provider keeps per account)."""
        return "mock-" + hashlib.sha256(email.strip().lower().encode()).hexdigest()[:16]

    @property
    def metadata_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    def metadata(self) -> dict[str, object]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "end_session_endpoint": f"{self.issuer}/logout",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "scopes_supported": ["openid", "email", "profile"],
        }

    def id_token(self, email: str, nonce: str) -> str:
        from joserfc import jwt

        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": self.sub_for(email),
            "aud": self.client_id,
            "iat": now,
            "exp": now + 600,
            "nonce": nonce,
            "email": email,
            "email_verified": True,
            "name": email.split("@")[0].capitalize(),
        }
        return jwt.encode({"alg": "RS256", "kid": "mock-1"}, claims, self.key)

    def record(self, event: str) -> None:
        with self.lock:
            self.events.append(event)

    # ---------------------------------------------------------------------------------
    def start(self) -> MockOIDCProvider:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt, *args):  # noqa: ANN001 - quiet: the test reads `events`
                return

            def send(
                self,
                status: int,
                body: bytes | str,
                ctype: str = "text/plain; charset=utf-8",
                headers: dict[str, str] | None = None,
            ) -> None:
                data = body.encode() if isinstance(body, str) else body
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def redirect(self, url: str) -> None:
                self.send(302, "", headers={"Location": url})

            def refuse(self, status: int, why: str) -> None:
                provider.record(f"refused {self.path.split('?')[0]}: {why}")
                self.send(
                    status, json.dumps({"error": "invalid_request", "error_description": why}), "application/json"
                )

            def form(self) -> dict[str, str]:
                length = int(self.headers.get("Content-Length") or 0)
                return {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                url = urlsplit(self.path)
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path == "/.well-known/openid-configuration":
                    self.send(200, json.dumps(provider.metadata()), "application/json")
                elif url.path == "/jwks":
                    self.send(200, json.dumps({"keys": [provider.key.as_dict(private=False)]}), "application/json")
                elif url.path == "/authorize":
                    if q.get("client_id") != provider.client_id:
                        return self.refuse(400, "unknown client_id")
                    if q.get("redirect_uri") != provider.redirect_uri:
                        return self.refuse(400, f"redirect_uri {q.get('redirect_uri')!r} is not registered")
                    if q.get("response_type") != "code" or "openid" not in q.get("scope", "").split():
                        return self.refuse(400, "only response_type=code with the openid scope")
                    provider.record("authorize")
                    hidden = "".join(
                        f'<input type="hidden" name="{k}" value="{html.escape(q.get(k, ""))}">'
                        for k in ("state", "nonce", "redirect_uri")
                    )
                    page = (
                        "<!doctype html><title>Mock identity provider</title><h1>Mock identity provider</h1>"
                        f'<form method="post" action="/authorize">{hidden}'
                        '<label>Email <input id="email" name="email" type="email" required></label> '
                        '<button id="sign-in" type="submit">Sign in</button></form>'
                    )
                    self.send(200, page, "text/html; charset=utf-8")
                elif url.path == "/logout":
                    provider.record("logout")
                    back = q.get("post_logout_redirect_uri")
                    if back and back == provider.redirect_uri:
                        return self.redirect(back)
                    self.send(200, "signed out")
                else:
                    self.send(404, "not found")

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                url = urlsplit(self.path)
                body = self.form()
                if url.path == "/authorize":
                    email = body.get("email", "").strip()
                    if "@" not in email or body.get("redirect_uri") != provider.redirect_uri:
                        return self.refuse(400, "bad sign-in form")
                    code = secrets.token_urlsafe(24)
                    with provider.lock:
                        provider.codes[code] = {
                            "email": email,
                            "nonce": body.get("nonce", ""),
                            "redirect_uri": body["redirect_uri"],
                        }
                    provider.record(f"sign-in {email}")
                    self.redirect(
                        provider.redirect_uri + "?" + urlencode({"code": code, "state": body.get("state", "")})
                    )
                elif url.path == "/token":
                    client_id, client_secret = body.get("client_id"), body.get("client_secret")
                    auth = self.headers.get("Authorization", "")
                    if auth.startswith("Basic "):
                        from urllib.parse import unquote

                        user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                        client_id, client_secret = unquote(user), unquote(password)
                    if client_id != provider.client_id or client_secret != provider.client_secret:
                        return self.refuse(401, "client authentication failed")
                    if body.get("grant_type") != "authorization_code":
                        return self.refuse(400, "unsupported grant_type")
                    with provider.lock:
                        grant = provider.codes.pop(body.get("code", ""), None)  # single use
                    if grant is None:
                        return self.refuse(400, "unknown or used code")
                    if body.get("redirect_uri") != grant["redirect_uri"]:
                        return self.refuse(400, "redirect_uri differs from the authorize request")
                    provider.record(f"token {grant['email']}")
                    token = {
                        "access_token": secrets.token_urlsafe(24),
                        "token_type": "Bearer",
                        "expires_in": 600,
                        "scope": "openid email profile",
                        "id_token": provider.id_token(grant["email"], grant["nonce"]),
                    }
                    self.send(200, json.dumps(token), "application/json")
                else:
                    self.send(404, "not found")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="mock-oidc", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
