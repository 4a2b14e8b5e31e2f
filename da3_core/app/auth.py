"""Sign-in for teams, optional: Streamlit's built-in OpenID Connect (`st.login`, `st.user`).

Sign-in is on when ``.streamlit/secrets.toml`` has an ``[auth]`` section (an example is in
``.streamlit/secrets.toml.example``). Then every page asks for sign-in first
(`require_sign_in`, called by `da3_core.app.ui.page_setup`), a user's runs live in one folder
keyed by `identity_key` (the same from any browser; `da3_core.app.session.session_dir`), and
the Runner page admits only the emails in ``DA3_ADMINS`` (`require_admin`).

Without ``[auth]`` nothing changes: the session id rides in the page address (``?s=``) and
whoever has the link sees its runs.

An ``[auth]`` section that is there but incomplete is an error on every page, never a
silent fall-back to an open app. The pure helpers (`auth_state`, `providers`,
`identity_key`, `is_admin`) take plain mappings and are tested without Streamlit.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import streamlit as st

from da3_core.app.text import md
from da3_core.config import Settings

log = logging.getLogger(__name__)

SHARED_KEYS = ("redirect_uri", "cookie_secret")
PROVIDER_KEYS = ("client_id", "client_secret", "server_metadata_url")
DEFAULT_PROVIDER = "default"  # st.login's name for the provider written in [auth] itself
_SECRETS_HELP = 'see .streamlit/secrets.toml.example and the README\'s "For teams: sign-in"'


@dataclass(frozen=True)
class AuthState:
    """What the secrets say about sign-in.

    Attributes:
        on: An ``[auth]`` section exists (complete or not).
        providers: The provider names `st.login` accepts (``"default"`` for the one
            written in ``[auth]`` itself), in file order.
        problem: Why the section cannot be used (what is missing and where), or ``""``.
    """

    on: bool
    providers: tuple[str, ...] = ()
    problem: str = ""

    @property
    def ready(self) -> bool:
        return self.on and not self.problem


def providers(section: Mapping[str, Any]) -> list[str]:
    """Provider names configured in an ``[auth]`` section: ``"default"`` when the section
    itself holds the provider keys, and each sub-table ``[auth.<name>]`` that does."""
    found = [DEFAULT_PROVIDER] if all(section.get(k) for k in PROVIDER_KEYS) else []
    for name, value in section.items():
        if isinstance(value, Mapping) and name != "client_kwargs" and all(value.get(k) for k in PROVIDER_KEYS):
            found.append(str(name))
    return found


def auth_state(secrets: Mapping[str, Any] | None) -> AuthState:
    """Read sign-in from the parsed secrets (None: there is no secrets file).

    Returns:
        Off without an ``[auth]`` section; on with its providers; on with a ``problem``
        when a key `st.login` needs is missing or a provider name has an underscore
        (Streamlit refuses those).
    """
    if not secrets or "auth" not in secrets:
        return AuthState(on=False)
    section = secrets["auth"]
    if not isinstance(section, Mapping):
        return AuthState(on=True, problem=f"[auth] in secrets.toml must be a table of settings; {_SECRETS_HELP}")
    missing = [k for k in SHARED_KEYS if not section.get(k)]
    if missing:
        return AuthState(
            on=True, problem=f"[auth] in secrets.toml lacks {', '.join(missing)}; add it ({_SECRETS_HELP})"
        )
    found = providers(section)
    if not found:
        partial = [k for k in PROVIDER_KEYS if not section.get(k)]
        return AuthState(
            on=True,
            problem=(
                f"[auth] in secrets.toml names no complete provider: add {', '.join(partial)} to [auth], or a table "
                f"[auth.<name>] with {', '.join(PROVIDER_KEYS)} ({_SECRETS_HELP})"
            ),
        )
    bad = [p for p in found if "_" in p]
    if bad:
        return AuthState(
            on=True,
            problem=f"provider name(s) {', '.join(bad)} in secrets.toml contain an underscore, "
            "which Streamlit does not allow; rename the table (e.g. [auth.my-idp])",
        )
    return AuthState(on=True, providers=tuple(found))


def identity_key(user: Mapping[str, Any]) -> str:
    """32 hex digits naming a signed-in user's folder, the same on every device.

    Built from the OpenID Connect issuer and subject (``iss``, ``sub``: together they name
    one account for good), or from the email when the provider sent no ``sub``. It is a
    hash, not a secret: it only keeps the folder name free of personal data.

    Raises:
        ValueError: ``user`` has neither ``sub`` nor ``email``.
    """
    sub = str(user.get("sub") or "").strip()
    if sub:
        material = "oidc\0" + str(user.get("iss") or "").strip() + "\0" + sub
    else:
        email = str(user.get("email") or "").strip().lower()
        if not email:
            raise ValueError("the sign-in provider sent neither a subject (sub) nor an email for this user")
        material = "email\0" + email
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:32]


def is_admin(user: Mapping[str, Any], admins: tuple[str, ...]) -> bool:
    """The user's email is in ``admins`` (case-insensitive), and the provider did not say it
    is unverified (``email_verified: false``)."""
    email = str(user.get("email") or "").strip().lower()
    if not email or user.get("email_verified") is False:
        return False
    return email in {a.strip().lower() for a in admins}


def user_label(user: Mapping[str, Any]) -> str:
    """How the sidebar names the user: name and email, whichever the provider sent."""
    name = str(user.get("name") or "").strip()
    email = str(user.get("email") or "").strip()
    if name and email and name != email:
        return f"{name} ({email})"
    return name or email or "signed-in user"


# --------------------------------------------------------------------------------------
# The Streamlit part
# --------------------------------------------------------------------------------------


def current_state() -> AuthState:
    """Sign-in as configured in this server's secrets (never raises: no file means off).

    A secrets file that exists but cannot be parsed counts as a problem, not as "off":
    Streamlit treats it like a missing file, which would open the app to everyone.
    """
    try:
        if not st.secrets.load_if_toml_exists():
            unreadable = [p for p in _secrets_paths() if os.path.exists(p)]
            if unreadable:
                log.error(
                    "secrets file(s) %s exist but could not be read (Streamlit logged why at start-up)", unreadable
                )
                return AuthState(
                    on=True,
                    problem="the secrets file could not be read (a TOML syntax error? the server "
                    "log says which file); fix it",
                )
            return AuthState(on=False)
        return auth_state(st.secrets.to_dict())
    except Exception as exc:  # noqa: BLE001 - a broken secrets file must show, not crash the page
        log.exception("could not read the secrets")
        return AuthState(on=True, problem=f"secrets.toml could not be read ({type(exc).__name__}: {exc}); fix the file")


def _secrets_paths() -> list[str]:
    from streamlit import config

    try:
        return [str(p) for p in config.get_option("secrets.files")]
    except Exception:  # noqa: BLE001 - an unknown option in some Streamlit version: nothing to check
        return []


def authlib_installed() -> bool:
    """Authlib, which `st.login` needs (``streamlit[auth]``), can be imported."""
    return importlib.util.find_spec("authlib") is not None


def auth_configured() -> bool:
    """An ``[auth]`` section is in the secrets (complete or not: an incomplete one is an
    error shown by `require_sign_in`, never an open app)."""
    return current_state().on


def signed_in_user() -> dict[str, Any] | None:
    """The signed-in user's claims (``st.user``), or None when sign-in is off or nobody is signed in."""
    if not auth_configured():
        return None
    user = st.user.to_dict()
    return dict(user) if user.get("is_logged_in") else None


def require_sign_in() -> dict[str, Any] | None:
    """The gate every page passes first.

    Returns:
        None when sign-in is off (today's behaviour), else the signed-in user's claims.
        A visitor who is not signed in gets the sign-in page and the script stops; so does
        everyone when the ``[auth]`` section is incomplete or Authlib is missing.
    """
    state = current_state()
    if not state.on:
        return None
    if state.problem:
        _stop_with(f"Sign-in is set up wrongly: {state.problem}. Then restart the app.")
    if not authlib_installed():
        _stop_with(
            "Sign-in is configured but Authlib is not installed: run `pip install -r requirements-app.txt` "
            "(it pins `streamlit[auth]`, which brings Authlib), then restart the app.",
            literal=False,
        )
    user = st.user.to_dict()
    if user.get("is_logged_in"):
        try:
            identity_key(user)
        except ValueError as exc:
            _stop_with(
                f"Signed in, but {exc}: ask the administrator to request the openid and email scopes "
                "from the provider (client_kwargs in secrets.toml).",
                sign_out=True,
            )
        return dict(user)
    sign_in_page(state.providers)
    st.stop()
    raise SystemExit  # unreachable: st.stop raises


def sign_in_page(names: tuple[str, ...]) -> None:
    """The page a visitor who is not signed in sees: one button per configured provider."""
    st.title("Depth Anything 3 dashboard")
    st.subheader("Sign in")
    st.markdown(
        "This dashboard is for signed-in team members. Your runs are kept under your account: "
        "you find them again from any browser or device, and nobody else sees them."
    )
    for name in names:
        label = "Sign in" if name == DEFAULT_PROVIDER or len(names) == 1 else f"Sign in with {name.capitalize()}"
        if st.button(label, key=f"au_login_{name}", type="primary"):
            st.login(None if name == DEFAULT_PROVIDER else name)
    st.caption(
        "You are sent to your organisation's sign-in page and back here. Trouble signing in? "
        "Ask the person who runs this dashboard."
    )


def sidebar_account(user: Mapping[str, Any] | None) -> None:
    """Who is signed in and a Sign out button (draw inside ``st.sidebar``); nothing when sign-in is off."""
    if user is None:
        return
    st.caption(f"Signed in as {md(user_label(user))}")
    if st.button("Sign out", key="au_logout"):
        st.logout()
        st.stop()  # the browser is on its way to /auth/logout: draw nothing more for this user


def require_admin(settings: Settings) -> None:
    """Let the page go on for admins; stop it with a message for everyone else.

    Allowed: everyone when sign-in is off (today's behaviour); with sign-in on, a user whose
    email is in ``DA3_ADMINS``. With sign-in on and ``DA3_ADMINS`` empty, nobody.
    """
    if not auth_configured():
        return
    user = signed_in_user()
    if user is not None and is_admin(user, settings.admins):
        return
    st.title("Runner")
    if not settings.admins:
        st.warning(
            "The Runner page is closed: sign-in is on and no admin is listed. To open it, set DA3_ADMINS "
            "to the admins' emails, comma-separated (DA3_ADMINS=you@example.com), and restart the app."
        )
    else:
        who = md(str((user or {}).get("email") or "this account"))
        st.warning(
            f"The Runner page is for admins only, and {who} is not one. Ask an admin to add your email "
            "to DA3_ADMINS if you need it. Your own runs are on the other pages."
        )
    st.stop()


def _stop_with(message: str, sign_out: bool = False, literal: bool = True) -> None:
    log.error("sign-in: %s", message)
    st.error(md(message) if literal else message)
    if sign_out and st.button("Sign out", key="au_logout_err"):
        st.logout()
    st.stop()
