"""The built-in issuer's HTML: the sign-in page and the error page. Everything escaped."""

from __future__ import annotations

from html import escape

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;background:#f4f5f7;margin:0;display:flex;
min-height:100vh;align-items:center;justify-content:center;color:#1d2330}
main{background:#fff;padding:2rem 2.25rem;border-radius:10px;box-shadow:0 2px 12px rgba(0,0,0,.08);width:22rem}
h1{font-size:1.25rem;margin:0 0 .25rem}p{margin:.25rem 0 1rem;color:#566}
label{display:block;font-size:.85rem;margin:.75rem 0 .25rem}
input[type=text],input[type=password]{width:100%;box-sizing:border-box;padding:.55rem;border:1px solid #c8ccd4;
border-radius:6px;font-size:1rem}
button{margin-top:1.25rem;width:100%;padding:.6rem;border:0;border-radius:6px;background:#2757d6;color:#fff;
font-size:1rem;cursor:pointer}.error{color:#b3261e;background:#fdecea;padding:.5rem .75rem;border-radius:6px}
"""


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport "
            f"content='width=device-width,initial-scale=1'><title>{escape(title)}</title><style>{STYLE}</style>"
            f"</head><body><main>{body}</main></body></html>")


def login_page(*, params: dict[str, str], client_name: str, error: str | None = None, username: str = "") -> str:
    hidden = "".join(
        f'<input type="hidden" name="{escape(name)}" value="{escape(value)}">' for name, value in params.items()
    )
    message = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    body = (
        f"<h1>Sign in to alai</h1><p>{escape(client_name)} is asking to act on your behalf.</p>{message}"
        f'<form method="post" action="/oauth/authorize">{hidden}'
        f'<label for="username">Username or email</label>'
        f'<input type="text" id="username" name="username" autocomplete="username" value="{escape(username)}" '
        f"required autofocus>"
        f'<label for="password">Password</label>'
        f'<input type="password" id="password" name="password" autocomplete="current-password" required>'
        f'<button type="submit" id="sign-in">Sign in</button></form>'
    )
    return _page("Sign in to alai", body)


def error_page(message: str) -> str:
    return _page("alai sign-in error", f"<h1>Cannot sign in</h1><p class='error'>{escape(message)}</p>")
