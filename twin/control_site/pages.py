"""The dashboard's page shell, sign-in page and signature dialog: what every page shares.

Every page is one server-rendered response with its own styles (a control room may
be offline from the internet). Every value a site or a person wrote is escaped.
An act on a site (hold a batch, suspend or reinstate a site) is a button that opens
a confirmation dialog asking for the reason and the user's password again, as the
operator station's signature dialog does (21 CFR 11.200(a)(1)(i): each signing
after the first in a session still takes the password); without script the
button is a link to the same form on a page of its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from twin.station.sessions import Session

__all__ = [
    "STYLE",
    "act_button",
    "confirm_page",
    "fmt",
    "local_path",
    "login_page",
    "page",
    "table",
]

STYLE = """body{font:14px system-ui,sans-serif;margin:0;color:#222}
header{background:#1f3a5f;color:#fff;padding:.5em 1.5em;display:flex;gap:1em;align-items:center}
header a{color:#fff;font-weight:bold}header form{margin-left:auto}main{padding:0 1.5em 1.5em}
table{border-collapse:collapse;margin:.4em 0}td,th{padding:3px 8px;border-bottom:1px solid #ddd;
text-align:left;vertical-align:top}th{background:#f0f3f7}th a{color:#222}
.bad{color:#b00;font-weight:bold}.warn{color:#a60}.ok{color:#080}.muted{color:#666}
.attention{background:#fff3f0}.idle{color:#555;background:#f7f7f7}
svg{background:#fafafa;margin:4px 0}svg.trend{max-width:100%;height:auto}
.flash-ok{background:#e3f5e1;padding:.5em 1em;border:1px solid #27ae60}
.flash-error{background:#fbe3e1;padding:.5em 1em;border:1px solid #c0392b}
a.act{display:inline-block;padding:.25em .8em;margin:.1em;border:1px solid #1f3a5f;
border-radius:3px;background:#eef3fa;color:#1f3a5f;text-decoration:none;font-weight:600}
a.act.danger{border-color:#b00;background:#fbe3e1;color:#900}
dialog{min-width:30em}label{display:block;margin:.5em 0}
input[type=text],input[type=password]{width:100%;box-sizing:border-box}
form.filters{margin:.5em 0}form.filters label{display:inline-block;margin-right:1em}
button{padding:.35em 1em}.nowrap{white-space:nowrap}h3{margin:.8em 0 0;font-size:15px}"""

#: The confirmation dialog: opened by any ``a.act`` button, filled from its data.
_DIALOG_SCRIPT = """<script>(function(){
document.addEventListener('click',function(e){
 const b=e.target.closest('a.act[data-action]');
 if(!b)return;
 e.preventDefault();
 const d=document.getElementById('sign'),f=d.querySelector('form');
 f.action=b.dataset.action;
 d.querySelector('.what').textContent=b.dataset.what;
 d.querySelector('.effect').textContent=b.dataset.effect||'';
 f.elements['next'].value=location.pathname+location.search;
 f.elements['reason'].value='';f.elements['password'].value='';
 d.showModal();f.elements['reason'].focus();
});
})();</script>"""


def fmt(value: Any) -> str:
    """A value for a table cell: numbers to a readable precision, text escaped."""
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) >= 1e4 else f"{value:.2f}"
    return "-" if value is None else escape(str(value))


def table(
    head: Sequence[str], rows: Iterable[Sequence[str]], table_id: str, empty: str = "none"
) -> str:
    """A table of already-escaped cells, with a header row; a sentence when empty."""
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    if not body:
        return f"<p id='{table_id}' class='muted'>{escape(empty)}</p>"
    heads = "".join(f"<th>{escape(h)}</th>" for h in head)
    return f"<table id='{table_id}'><thead><tr>{heads}</tr></thead><tbody>{body}</tbody></table>"


def csrf_field(session: Session) -> str:
    return f"<input type='hidden' name='csrf' value='{escape(session.csrf)}'>"


def page(title: str, body: str, session: Session | None) -> str:
    """A whole page: who is signed in (and a sign-out), the outcome of the last act, the body."""
    who = flashes = ""
    if session is not None:
        who = (
            f"<span id='user'>signed in as {escape(session.user)}</span>"
            f"<form method='post' action='/logout'>{csrf_field(session)}"
            "<button type='submit'>Sign out</button></form>"
        )
        flashes = "".join(
            f"<p class='flash-{escape(kind)}' role='status'>{escape(text)}</p>"
            for kind, text in session.flash
        )
        session.flash.clear()
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<header><a href='/'>poc-twin control site</a>{who}</header>"
        f"<main>{flashes}{body}</main></body></html>"
    )


def login_page(error: str = "", next_url: str = "/", no_users: bool = False) -> str:
    """The sign-in form: the only page shown without a session."""
    message = f"<p class='flash-error' role='alert'>{escape(error)}</p>" if error else ""
    if no_users:
        message += (
            "<p class='flash-error'>This control site has no users, so nobody can sign in: "
            "add one with <code>poc-twin control-site add-user FILE NAME</code> and serve "
            "with <code>--users FILE</code>.</p>"
        )
    body = (
        f"<h1>Sign in</h1>{message}<form method='post' action='/login'>"
        f"<input type='hidden' name='next' value='{escape(next_url)}'>"
        "<label>User <input type='text' name='user' autocomplete='username' autofocus "
        "required></label><label>Password <input type='password' name='password' "
        "autocomplete='current-password' required></label>"
        "<button type='submit'>Sign in</button></form>"
    )
    return page("Sign in — poc-twin control site", body, None)


def act_button(label: str, action: str, what: str, effect: str, *, danger: bool = False) -> str:
    """A button for an act: opens the confirmation dialog (a page of its own without script)."""
    cls = "act danger" if danger else "act"
    return (
        f"<a class='{cls}' role='button' href='{escape(action)}' data-action='{escape(action)}' "
        f"data-what='{escape(what)}' data-effect='{escape(effect)}'>{escape(label)}</a>"
    )


def _sign_form(session: Session, action: str, next_url: str) -> str:
    return (
        f"<form method='post' action='{escape(action)}'>{csrf_field(session)}"
        f"<input type='hidden' name='next' value='{escape(next_url)}'>"
        f"<p>Signing as <b>{escape(session.user)}</b>: your password signs this act, and the "
        "request is recorded with your name and reason before it is sent.</p>"
        "<label>Reason (goes into the batch record) <input type='text' name='reason' "
        "maxlength='1000' required></label>"
        "<label>Password <input type='password' name='password' "
        "autocomplete='current-password' required></label>"
        "<button type='submit' class='confirm'>Sign and send</button> "
    )


def sign_dialog(session: Session) -> str:
    """One dialog for every act button on the page, plus the script that opens it."""
    return (
        "<dialog id='sign'><h2>Confirm: <span class='what'></span></h2>"
        "<p class='effect'></p>"
        f"{_sign_form(session, '', '/')}"
        "<button type='button' onclick=\"this.closest('dialog').close()\">Cancel</button>"
        f"</form></dialog>{_DIALOG_SCRIPT}"
    )


def confirm_page(session: Session, action: str, what: str, effect: str, back: str) -> str:
    """The confirmation as a page of its own (a browser without script, or a bookmark)."""
    body = (
        f"<h1>Confirm: {escape(what)}</h1><p class='effect'>{escape(effect)}</p>"
        f"{_sign_form(session, action, back)}"
        f"<a href='{escape(back)}'>Cancel</a></form>"
    )
    return page(f"Confirm: {what}", body, session)


def local_path(url: object, default: str = "/") -> str:
    """Where to go after signing in or acting: a path of this control site only."""
    text = str(url or "")
    ok = text.startswith("/") and not text.startswith("//") and "\\" not in text
    return text if ok else default
