"""A small synchronous client for the control plane's HTTP API.

Errors (the contract the CLI relies on):

    ClientError                  anything that stops a call; str() is one line for people
    ├── ServerUnreachable        no connection, or it timed out
    └── ApiError                 the server answered with a problem (4xx/5xx); .problem
"""

from __future__ import annotations

from typing import Any

import httpx

from alai._version import __version__
from alai.client.profiles import Profile
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
        try:
            renewed = login.refresh(current, self._http)
        except login.LoginError as error:
            raise ClientError(str(error)) from None
        # Saved before use: the old refresh token is already spent at the server.
        credentials.save(self.profile.name, renewed)
        self.profile.login = renewed
        self._http.headers["Authorization"] = f"Bearer {renewed.access_token}"

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        login = self.profile.login
        if login is not None and login.expires_within(30):  # type: ignore[attr-defined]
            self._refresh_login()
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
        except httpx.TimeoutException:
            raise ServerUnreachable(
                f"{self.profile.server} did not answer within {self.profile.timeout:g} s; "
                "is it overloaded or behind a slow network? (raise ALAI_TIMEOUT to wait longer)"
            ) from None
        except httpx.TransportError as error:
            hint = "is `alai serve` running?" if _is_local(self.profile.server) else "check the URL with `alai config show`"
            raise ServerUnreachable(f"cannot reach {self.profile.server} ({_reason(error)}): {hint}") from None

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
