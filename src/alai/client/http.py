"""A small synchronous client for the control plane's HTTP API.

Errors (the contract the CLI relies on), from `request` and `stream` alike:

    ClientError                  anything that stops a call; str() is one line for people
    ├── ServerUnreachable        no connection, or it timed out, or a streamed body broke off
    └── ApiError                 the server answered with a problem (4xx/5xx); .problem
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import httpx

from alai._version import __version__
from alai.client.profiles import Profile

if TYPE_CHECKING:
    from alai.wire.problem import Problem


class ClientError(Exception):
    pass


class ServerUnreachable(ClientError):
    pass


class ApiError(ClientError):
    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.status = problem.status
        super().__init__(self._one_line(problem))

    @staticmethod
    def _one_line(problem: Problem) -> str:
        text = problem.detail or problem.title
        if problem.status == 401:
            return f"{text} (HTTP 401)"
        return f"{text} (HTTP {problem.status}{', request ' + problem.request_id if problem.request_id else ''})"


def _problem_from(response: httpx.Response) -> Problem:
    from alai.wire.problem import Problem  # only on errors: pydantic costs a command 0.1 s to import

    try:
        body = response.json()
        if isinstance(body, dict) and "status" in body and "title" in body:
            return Problem.model_validate(body)
    except ValueError:
        pass
    text = response.text.strip().splitlines()[0][:200] if response.text.strip() else response.reason_phrase
    return Problem(title=response.reason_phrase or "Error", status=response.status_code, detail=text)


class Client:
    def __init__(self, profile: Profile, *, transport: httpx.BaseTransport | None = None) -> None:
        self.profile = profile
        headers = {"User-Agent": f"alai-cli/{__version__}", "Accept": "application/json"}
        if profile.token:
            headers["Authorization"] = f"Bearer {profile.token}"
        self._http = httpx.Client(
            base_url=profile.server, headers=headers, timeout=profile.timeout, transport=transport,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _refresh_login(self) -> None:
        from alai.client import credentials, login

        current = self.profile.login
        assert isinstance(current, credentials.Login)
        with credentials.locked():
            # Another process may have renewed it meanwhile: its refresh token is the
            # live one now (ours is spent), and its access token may still be fresh.
            stored = credentials.load(self.profile.name, current.server)
            if stored is not None and stored.refresh_token != current.refresh_token and not stored.expires_within(30):
                renewed = stored
            else:
                # Its own plain client: the token endpoint (maybe the IdP's host) must not
                # receive our bearer token.
                with httpx.Client(timeout=self.profile.timeout) as plain:
                    try:
                        renewed = login.refresh(stored or current, plain)
                    except login.LoginError as error:
                        raise ClientError(str(error)) from None
                # Saved before use: the old refresh token is already spent at the server.
                credentials.save(self.profile.name, renewed)
        self.profile.login = renewed
        self._http.headers["Authorization"] = f"Bearer {renewed.access_token}"

    def _login_renewed_if_expiring(self) -> object | None:
        """The login in use (None with a plain token), renewed first if it is about to expire."""
        login = self.profile.login
        if login is not None and login.expires_within(30):  # type: ignore[attr-defined]
            self._refresh_login()
        return login

    def bearer(self, *, renew: bool = False) -> str | None:
        """The bearer token to send now: a login's access token is renewed first when it
        is about to expire, or when `renew` (the server refused it)."""
        login = self.profile.login
        if login is not None and (renew or login.expires_within(30)):  # type: ignore[attr-defined]
            self._refresh_login()
        header = self._http.headers.get("Authorization")
        return header.partition(" ")[2] if header else None

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        login = self._login_renewed_if_expiring()
        response = self._send(method, path, **kwargs)
        if response.status_code == 401 and login is not None:
            self._refresh_login()
            response = self._send(method, path, **kwargs)
        if response.status_code >= 400:
            raise ApiError(_problem_from(response))
        return response

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise self._unreachable(error) from None

    @contextmanager
    def stream(self, method: str, path: str, *, params: dict[str, Any] | None = None,
               headers: dict[str, str] | None = None, read_timeout: float | None = None) -> Iterator[httpx.Response]:
        """The response, its body to be read inside the block as it arrives (Server-Sent Events).

        Errors as from `request`, its login renewal included. A connection that breaks
        while the body is read raises ServerUnreachable with the reason alone: the
        caller knows what it was reading. `read_timeout` is how long the body may stay
        silent (default: the profile's timeout).
        """
        timeout = (httpx.Timeout(self.profile.timeout, read=read_timeout) if read_timeout is not None
                   else httpx.USE_CLIENT_DEFAULT)
        login = self._login_renewed_if_expiring()
        response = self._open_stream(method, path, params, headers, timeout, read_timeout)
        if response.status_code == 401 and login is not None:
            response.close()
            self._refresh_login()
            response = self._open_stream(method, path, params, headers, timeout, read_timeout)
        try:
            if response.status_code >= 400:
                try:
                    response.read()
                except httpx.TransportError as error:
                    raise self._unreachable(error, read_timeout) from None
                raise ApiError(_problem_from(response))
            try:
                yield response
            except httpx.TransportError as error:
                raise ServerUnreachable(_reason(error)) from None
        finally:
            response.close()

    def _open_stream(self, method: str, path: str, params: dict[str, Any] | None, headers: dict[str, str] | None,
                     timeout: Any, read_timeout: float | None) -> httpx.Response:
        # Built afresh each time: after a refresh the client carries the new token.
        request = self._http.build_request(method, path, params=params, headers=headers, timeout=timeout)
        try:
            return self._http.send(request, stream=True)
        except httpx.TransportError as error:
            raise self._unreachable(error, read_timeout) from None

    def _unreachable(self, error: httpx.TransportError, read_timeout: float | None = None) -> ServerUnreachable:
        server = self.profile.server
        if isinstance(error, httpx.ReadTimeout) and read_timeout is not None:
            # Not the profile's timeout, so ALAI_TIMEOUT would not help.
            return ServerUnreachable(f"{server} did not answer within {read_timeout:g} s; "
                                     "is it overloaded or behind a slow network?")
        if isinstance(error, httpx.TimeoutException):
            return ServerUnreachable(
                f"{server} did not answer within {self.profile.timeout:g} s; "
                "is it overloaded or behind a slow network? (raise ALAI_TIMEOUT to wait longer)"
            )
        hint = "is `alai serve` running?" if _is_local(server) else "check the URL with `alai config show`"
        return ServerUnreachable(f"cannot reach {server} ({_reason(error)}): {hint}")

    def get_json(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs).json()


def _is_local(server: str) -> bool:
    from alai.client.profiles import is_loopback

    return is_loopback(server)


def _reason(error: Exception) -> str:
    text = str(error).strip()
    if "Connection refused" in text or "ConnectError" in type(error).__name__ and not text:
        return "connection refused"
    return text.splitlines()[0][:120] if text else type(error).__name__
