"""Who may see what on the dashboard, decided on the server before any page runs (docs/security.md).

Without a secret (``FASTDIFF_DASHBOARD_SECRET`` unset) the dashboard serves loopback only and everyone
who reaches it is the machine's user: every page, no login. With a secret:

- the pages need a login (the secret, compared in constant time); it is remembered for 12 hours by a
  cookie holding an HMAC-signed issue time (changing the secret logs everyone out);
- a share link ``/?exp=ID&key=K`` shows that one experiment read-only without a login. ``K`` is an
  HMAC of the experiment id under the secret, so a link grants exactly one experiment: another id, a
  dropped key or a dropped ``exp`` gets the login page. Changing the secret revokes every link.

Bound beyond loopback without a secret, the dashboard serves nothing (``fastdiff up`` refuses earlier).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import streamlit as st

from app.connection import plain
from store import ids

SESSION_KEY = "access.logged_in"
COOKIE_SET = "access.cookie_set"
COOKIE = "fastdiff_login"
LOGIN_TTL_S = 12 * 3600
FAILED_LOGIN_DELAY_S = 1.0


@dataclass(frozen=True)
class Access:
    """What this browser session may do: every page ('full') or one experiment read-only ('shared')."""

    mode: str
    exp_id: str | None = None


def secret() -> str | None:
    from workers.settings import load_settings

    return load_settings().dashboard_secret


def share_key(secret_: str, exp_id: str) -> str:
    return hmac.new(secret_.encode(), f"share:{exp_id}".encode(), hashlib.sha256).hexdigest()[:32]


def share_link(exp_id: str) -> str:
    """The read-only link to one experiment (relative to the dashboard's root)."""
    s = secret()
    params = {"exp": ids.check(exp_id, "exp_id")} | ({"key": share_key(s, exp_id)} if s else {})
    return "/?" + urlencode(params)


def absolute(link: str, page_url: str | None) -> str:
    """``link`` (relative to the dashboard's root) as a full URL on the host the browser used
    (``page_url``: st.context.url, which carries the page's path); the relative link without one."""
    if not page_url:
        return link
    parts = urlsplit(page_url)
    return f"{parts.scheme}://{parts.netloc}{link}"


def share_panel(exp_id: str) -> None:
    """The experiment's read-only link, what it opens, and the full URL with a copy button (st.code has
    one) in a popover: the browser draws a popover's content only when it opens, and a code box loads
    Streamlit's syntax highlighter (a 1.5 MB chunk that a page load would otherwise evaluate;
    docs/bench-dashboard.md)."""
    url = absolute(share_link(exp_id), st.context.url)
    st.markdown(f"**Share** — [open the shared view]({url}): read-only, this experiment only, no controls; "
                "anyone with the link can open it.")
    with st.popover("Copy the link", icon=":material/content_copy:"):
        st.caption("The full link; the button at the right of the box copies it.")
        st.code(url, language=None, wrap_lines=True)


def _refuse(title: str, message: str) -> None:
    st.title(title)
    st.error(message, icon=":material/lock:")
    st.stop()


def login_token(secret_: str, issued: int | None = None, nonce: str | None = None) -> str:
    """A login cookie's value: when it was issued, a nonce, and an HMAC of both under the secret."""
    issued = int(time.time()) if issued is None else issued
    nonce = secrets.token_hex(8) if nonce is None else nonce
    mac = hmac.new(secret_.encode(), f"login:{issued}:{nonce}".encode(), hashlib.sha256).hexdigest()[:32]
    return f"{issued}.{nonce}.{mac}"


def valid_login(secret_: str, token: str | None) -> bool:
    try:
        issued, nonce, _ = (token or "").split(".")
        fresh = 0 <= time.time() - int(issued) <= LOGIN_TTL_S
    except ValueError:
        return False
    return fresh and hmac.compare_digest(token.encode(), login_token(secret_, int(issued), nonce).encode())


def _login(secret_: str) -> None:
    st.title("fastdiff")
    with st.form("access.login"):
        given = st.text_input("Dashboard secret", type="password", key="access.secret")
        if st.form_submit_button("Log in"):
            if hmac.compare_digest(given.encode(), secret_.encode()):
                st.session_state[SESSION_KEY] = True
                st.rerun()
            time.sleep(FAILED_LOGIN_DELAY_S)  # slows guessing; the secret's length does the rest
            st.error("That is not the dashboard's secret.")
    st.caption("This dashboard needs its secret (FASTDIFF_DASHBOARD_SECRET). A share link opens one experiment "
               "without it.")
    st.stop()


def _remember_login(secret_: str) -> None:
    """Set the login cookie in the browser (once per session), so a reload or a new tab needs no login."""
    if st.session_state.get(COOKIE_SET) or valid_login(secret_, st.context.cookies.get(COOKIE)):
        return
    st.html(f"<script>document.cookie = '{COOKIE}={login_token(secret_)}; path=/; max-age={LOGIN_TTL_S}; "
            "samesite=strict';</script>", unsafe_allow_javascript=True)
    st.session_state[COOKIE_SET] = True


def gate() -> Access:
    """Decide this request's access from the server's settings and the URL; render the login or the
    refusal and stop the script when it gets none."""
    from workers.settings import is_loopback

    secret_ = secret()
    host = st.get_option("server.address") or "0.0.0.0"  # unset: Streamlit listens on every interface
    served = bool(st.context.headers)  # no HTTP request under AppTest: nothing listens
    if secret_ is None and served and not is_loopback(host):
        _refuse("Not served", f"This dashboard listens on {host} without a secret; set FASTDIFF_DASHBOARD_SECRET "
                              "or serve it on 127.0.0.1 (docs/security.md).")
    exp = st.query_params.get("exp")
    if exp is not None:
        if not ids.is_id(exp, "exp_id"):
            _refuse("Link not valid", f"exp={plain(ids.shown(exp))} is not an experiment id.")
        if secret_ is not None and not hmac.compare_digest(st.query_params.get("key", "").encode(),
                                                            share_key(secret_, exp).encode()):
            _refuse("Link not valid", "This share link is not valid for this experiment (or the dashboard's secret "
                                      "changed). Ask its owner for a new one.")
        return Access("shared", exp)
    if secret_ is not None:
        if not (st.session_state.get(SESSION_KEY) or valid_login(secret_, st.context.cookies.get(COOKIE))):
            _login(secret_)
        _remember_login(secret_)
    return Access("full")
