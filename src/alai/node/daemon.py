"""The worker loop shared by `alai node start` and `alai worker`.

- Registers (PUT /v1/nodes/{name}) with its capabilities; again whenever the control
  plane has forgotten it (a heartbeat answered 404).
- Heartbeats from a thread of its own with its own HTTP client, so that nothing the
  runs do on the event loop can starve the lease renewals; the replies say which
  runs to stop (cancelled, overdue) and which are lost (another attempt has them).
- Claims with a long poll for as many runs as it has free slots; executes each in a
  task; posts its events in small batches, numbered, so that a retried post is
  stored once; completes it (completions finished together go in one call). A 409
  means the attempt was superseded: stop, write nothing more.
- Survives the control plane going away: every call is retried with backoff
  (0.5 s doubling up to 10 s); a run that finished meanwhile is completed when the
  control plane is back (or refused, if its lease lapsed and another took it).
- On SIGTERM/SIGINT it stops claiming, lets running runs finish for `grace` seconds,
  then gives the rest back (release: the attempt does not count); a second signal
  gives them back at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import structlog

from alai._version import __version__
from alai.node.executors import Outcome, RunSpec

log = structlog.get_logger("alai.node")
SERVER_ERROR_TRIES = 4  # a 500 is tried again this many times (backing off) before it is the answer
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 10.0
FLUSH_SECONDS = 0.05
COMPLETIONS_PER_CALL = 100
ERROR_MAX_CHARS = 10_000  # Completion.error's limit
COMPLETION_BYTES_PER_CALL = 4 * 2**20  # outputs can be long: a call stays well below that
CLAIM_WAIT_SECONDS = 20.0

Executor = Callable[[RunSpec, Callable[[str, dict[str, Any]], None]], Awaitable[Outcome]]


def storable(value: Any) -> Any:
    """`value` with NUL characters replaced (U+FFFD): PostgreSQL stores no NUL in text or
    jsonb, and a command's output (a binary file read by a tool) may hold some."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, dict):
        return {storable(key): storable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [storable(item) for item in value]
    return value


class Superseded(Exception):
    """The control plane gave this run's attempt to someone else (409)."""


@dataclass
class Config:
    server: str
    token: str
    name: str
    kind: str = "node"  # or "worker"
    concurrency: int = 4
    grace_seconds: float = 30.0
    claim_wait: float = CLAIM_WAIT_SECONDS


@dataclass(eq=False)
class Execution:
    spec: RunSpec
    deadline: float  # loop time
    task: asyncio.Task | None = None
    stop_as: str | None = None  # "cancelled" | "timed_out" | "lost" | "released"
    events: list[dict[str, Any]] = field(default_factory=list)
    seq: int = 0
    flushed: asyncio.Event = field(default_factory=asyncio.Event)


def default_name() -> str:
    host = socket.gethostname().split(".")[0].lower()
    return "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in host)[:64] or "node"


class Daemon:
    def __init__(self, config: Config, *, capabilities: Callable[[], Awaitable[list[str]]],
                 executor: Callable[[Execution, Callable[[str, dict[str, Any]], None]], Awaitable[Outcome]],
                 refresh_seconds: float = 15.0) -> None:
        self.config = config
        self._capabilities_source = capabilities
        self._execute = executor
        self._refresh_seconds = refresh_seconds
        self.capabilities: list[str] = []
        self.running: dict[tuple[int, int], Execution] = {}
        self._lock = threading.Lock()  # `running` is read by the heartbeat thread
        self._stopping = asyncio.Event()
        self._release_now = asyncio.Event()
        self._registered = asyncio.Event()
        # Few connections: httpx looks at every pooled connection on each request (its CPU
        # grew with the pool, measured by bench/dispatch.py); the claim's long poll holds one.
        self._http = httpx.AsyncClient(base_url=config.server, headers=self._headers(),
                                       timeout=httpx.Timeout(10.0, read=config.claim_wait + 15),
                                       limits=httpx.Limits(max_connections=8, max_keepalive_connections=8))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._beat_stop = threading.Event()
        self._needs_registration = threading.Event()
        self._lease_seconds = 3.0  # until the first heartbeat's reply says
        # Completions waiting for the next POST /v1/runs/completions (see _send_completions).
        self._completions: list[tuple[dict[str, Any], asyncio.Future]] = []
        self._completions_ready = asyncio.Event()

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.token}", "User-Agent": f"alai-node/{__version__}",
                "X-Alai-Node": self.config.name}

    # -- the main loop ------------------------------------------------------------------------

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        # asyncio takes signal handlers only on the main thread and not on Windows; a daemon
        # run elsewhere (embedded in a bench or a test, or on Windows) is stopped by its
        # owner calling request_stop().
        if threading.current_thread() is threading.main_thread() and sys.platform != "win32":
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, self.request_stop)
        self.capabilities = await self._capabilities_source()
        await self._register()
        beat = threading.Thread(target=self._heartbeat_thread, name="alai-heartbeat", daemon=True)
        beat.start()
        refresher = asyncio.create_task(self._refresh_capabilities())
        completer = asyncio.create_task(self._send_completions())
        try:
            await self._claim_loop()
            await self._drain()
        finally:
            refresher.cancel()
            completer.cancel()
            self._beat_stop.set()
            await asyncio.to_thread(beat.join, 5)
            await self._http.aclose()
        log.info("node stopped", node=self.config.name)

    def request_stop(self) -> None:
        if self._stopping.is_set():
            self._release_now.set()
            return
        log.info("stopping: no new runs; running ones get a grace period", grace_seconds=self.config.grace_seconds,
                 running=len(self.running))
        self._stopping.set()

    async def _retrying(self, what: str, call: Callable[[], Awaitable[httpx.Response]],
                        *, give_up: Callable[[], bool] = lambda: False) -> httpx.Response | None:
        """`call` until the control plane answers; None if `give_up` says so. Unavailable
        (502–504) and 429 are waited out however long they last; another server error
        is tried again a few times (a passing fault must not drop a run's completion),
        then answered — one that repeats (a value the database refuses) must not hold
        the node's completions or a run's events up for ever."""
        delay, server_errors = BACKOFF_FIRST, 0
        while True:
            try:
                response = await call()
                status = response.status_code
                if status >= 500 and status not in (502, 503, 504):
                    server_errors += 1
                if (status < 500 and status != 429) or server_errors > SERVER_ERROR_TRIES:
                    return response
                reason = f"HTTP {response.status_code}"
            except httpx.HTTPError as error:
                reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            if give_up():
                return None
            log.warning("control plane unreachable; retrying", call=what, reason=reason, retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    async def _register(self) -> None:
        body = {"kind": self.config.kind, "capabilities": self.capabilities,
                "max_concurrency": self.config.concurrency, "version": __version__, "hostname": socket.gethostname()}
        response = await self._retrying("register", lambda: self._http.put(f"/v1/nodes/{self.config.name}", json=body))
        assert response is not None
        if response.status_code >= 400:
            raise SystemExit(f"the control plane refused to register {self.config.name}: {_detail(response)}")
        self._registered.set()
        log.info("registered", node=self.config.name, server=self.config.server, capabilities=self.capabilities)

    async def _refresh_capabilities(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_seconds)
            with contextlib.suppress(Exception):
                fresh = await self._capabilities_source()
                if sorted(fresh) != sorted(self.capabilities):
                    log.info("capabilities changed", before=self.capabilities, after=fresh)
                    self.capabilities = fresh
                    await self._register()

    async def _claim_loop(self) -> None:
        delay = BACKOFF_FIRST
        while not self._stopping.is_set():
            if self._needs_registration.is_set():
                self._needs_registration.clear()
                await self._register()
            free = self.config.concurrency - len(self.running)
            if free <= 0:
                await self._wait_for_slot()
                continue
            stopping = asyncio.create_task(self._stopping.wait())
            claim = asyncio.create_task(self._http.post(
                f"/v1/nodes/{self.config.name}/claim", json={"capacity": free, "wait": self.config.claim_wait}))
            done, _ = await asyncio.wait({stopping, claim}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if claim not in done:
                claim.cancel()  # the server sees the hang-up and claims nothing more for us
                with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                    await claim
                return
            try:
                response = claim.result()
            except httpx.HTTPError as error:
                log.warning("claim failed; retrying", error=f"{type(error).__name__}: {error}", retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            if response.status_code == 404:
                await self._register()
                continue
            if response.status_code in (401, 403):
                raise SystemExit(f"the control plane refused this node's token: {_detail(response)}")
            if response.status_code >= 400:
                log.warning("claim refused; retrying", status=response.status_code, detail=_detail(response),
                            retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            delay = BACKOFF_FIRST
            for claimed in response.json():
                self._start(claimed)

    async def _wait_for_slot(self) -> None:
        tasks = [execution.task for execution in self.running.values() if execution.task is not None]
        stopping = asyncio.create_task(self._stopping.wait())
        await asyncio.wait([*tasks, stopping], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()

    async def _drain(self) -> None:
        tasks = [execution.task for execution in self.running.values() if execution.task is not None]
        if tasks:
            release = asyncio.create_task(self._release_now.wait())
            everything = asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.wait([everything, release], timeout=self.config.grace_seconds,
                               return_when=asyncio.FIRST_COMPLETED)
            release.cancel()
        for execution in list(self.running.values()):
            self._stop(execution, "released")
        tasks = [execution.task for execution in self.running.values() if execution.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=30)

    # -- one run ----------------------------------------------------------------------------

    def _start(self, claimed: dict[str, Any]) -> None:
        run, agent = claimed["run"], claimed["agent"]
        spec = RunSpec(run_id=run["id"], attempt=run["attempt"], agent=agent["name"], model=run.get("model"),
                       system_prompt=agent.get("system_prompt") or "", input=claimed["input"],
                       command=agent.get("command"), tools=agent.get("tools") or [], token=claimed.get("token"),
                       env=agent.get("env") or {}, server=self.config.server)
        assert self._loop is not None
        remaining = (datetime.fromisoformat(claimed["deadline"]) - datetime.now().astimezone()).total_seconds()
        execution = Execution(spec=spec, deadline=self._loop.time() + max(0.0, remaining))
        with self._lock:
            self.running[(spec.run_id, spec.attempt)] = execution
        execution.task = asyncio.create_task(self._execute_run(execution), name=f"run-{spec.run_id}")
        log.info("run started", run=spec.run_id, attempt=spec.attempt, agent=spec.agent, model=spec.model)

    def _stop(self, execution: Execution, why: str) -> None:
        if execution.stop_as is None:
            execution.stop_as = why
        if execution.task is not None and not execution.task.done() and execution.task is not asyncio.current_task():
            execution.task.cancel()

    async def _execute_run(self, execution: Execution) -> None:
        spec = execution.spec
        flusher = asyncio.create_task(self._flush_forever(execution))
        outcome: Outcome | None = None
        try:
            try:
                assert self._loop is not None
                async with asyncio.timeout_at(execution.deadline):
                    outcome = await self._execute(execution, lambda kind, data: self._emit(execution, kind, data))
            except TimeoutError:
                execution.stop_as = execution.stop_as or "timed_out"
            except asyncio.CancelledError:
                if execution.stop_as is None:
                    raise
            except Exception as error:  # a bug or an unexpected answer: the attempt fails, the node goes on
                log.exception("executor failed", run=spec.run_id)
                outcome = Outcome("failed", error=f"the executor failed: {type(error).__name__}: {error}")
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            await self._finish(execution, outcome)
        except Superseded:
            log.warning("attempt superseded; dropping it", run=spec.run_id, attempt=spec.attempt)
        finally:
            flusher.cancel()
            with self._lock:
                self.running.pop((spec.run_id, spec.attempt), None)

    def _emit(self, execution: Execution, kind: str, data: dict[str, Any]) -> None:
        execution.events.append({"seq": execution.seq, "kind": kind, "data": storable(data)})
        execution.seq += 1
        execution.flushed.set()

    async def _flush_forever(self, execution: Execution) -> None:
        while True:
            await execution.flushed.wait()
            execution.flushed.clear()
            await self._flush(execution)
            await asyncio.sleep(FLUSH_SECONDS)  # what arrives meanwhile goes in the next post

    async def _flush(self, execution: Execution) -> None:
        spec = execution.spec
        while execution.events:
            batch = execution.events[:500]
            response = await self._retrying(
                "events", lambda batch=batch: self._http.post(
                    f"/v1/runs/{spec.run_id}/attempts/{spec.attempt}/events", json={"events": batch}))
            assert response is not None
            if response.status_code == 409:
                self._stop(execution, "lost")
                raise Superseded
            if response.status_code >= 400:
                log.warning("events refused; dropped", run=spec.run_id, status=response.status_code,
                            detail=_detail(response))
            del execution.events[:len(batch)]

    async def _finish(self, execution: Execution, outcome: Outcome | None) -> None:
        spec = execution.spec
        path = f"/v1/runs/{spec.run_id}/attempts/{spec.attempt}"
        if execution.stop_as == "lost":
            raise Superseded
        if execution.stop_as != "released":
            await self._flush(execution)
        if execution.stop_as == "released":
            response = await self._retrying("release", lambda: self._http.post(f"{path}/release"),
                                            give_up=lambda: True)
            log.info("run given back", run=spec.run_id, status=response.status_code if response else "unreachable")
            return
        if execution.stop_as in ("cancelled", "timed_out"):
            body: dict[str, Any] = {"outcome": execution.stop_as,
                                    "error": "timed out" if execution.stop_as == "timed_out" else None}
        else:
            assert outcome is not None
            body = {"outcome": outcome.outcome, "output": outcome.output, "error": outcome.error,
                    "usage": outcome.usage}
        status, answer = await self._complete(spec, body)
        if status == 409:
            raise Superseded
        log.info("run finished", run=spec.run_id, attempt=spec.attempt, outcome=body["outcome"],
                 state=answer.get("state") if status < 400 else str(answer.get("detail") or answer)[:300])

    async def _complete(self, spec: RunSpec, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Completes an attempt through the next batch: (status, the run or the problem)."""
        assert self._loop is not None
        future = self._loop.create_future()
        body = storable(body)
        if body.get("error"):
            body = {**body, "error": body["error"][:ERROR_MAX_CHARS]}  # the server's limit, not a refusal
        self._completions.append(({"run_id": spec.run_id, "attempt": spec.attempt, **body}, future))
        self._completions_ready.set()
        return await future

    async def _complete_alone(self, item: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        body = {key: value for key, value in item.items() if key not in ("run_id", "attempt")}
        response = await self._retrying("complete", lambda: self._http.post(
            f"/v1/runs/{item['run_id']}/attempts/{item['attempt']}/complete", json=body))
        assert response is not None
        try:
            answer = response.json()
        except ValueError:
            answer = {"detail": response.text[:300]}
        return response.status_code, answer if isinstance(answer, dict) else {}

    async def _send_completions(self) -> None:
        """One POST /v1/runs/completions at a time with everything finished meanwhile: at
        a few runs a second each goes alone, as soon as it is done; under load one call
        (and one transaction on the server) ends many runs. Retried like every call; the
        server answers a repeated completion as it answered the first."""
        while True:
            await self._completions_ready.wait()
            self._completions_ready.clear()
            while self._completions:
                batch, size = [], 0
                for item, future in self._completions:
                    weight = len(item.get("output") or "") + len(item.get("error") or "") + 200
                    if batch and (len(batch) == COMPLETIONS_PER_CALL or size + weight > COMPLETION_BYTES_PER_CALL):
                        break
                    batch.append((item, future))
                    size += weight
                del self._completions[:len(batch)]
                items = [item for item, _ in batch]
                response = await self._retrying(
                    "complete", lambda items=items: self._http.post("/v1/runs/completions", json={"items": items}))
                assert response is not None
                if response.status_code == 200:
                    answers = [(a["status"], a.get("run") or a.get("problem") or {}) for a in response.json()["items"]]
                elif response.status_code == 422 and len(batch) > 1:  # one bad item: each alone, so only it fails
                    answers = [await self._complete_alone(item) for item in items]
                else:  # the call itself was refused (a revoked token, a bad item): every item says why
                    log.warning("completions refused", status=response.status_code, detail=_detail(response))
                    answers = [(response.status_code, {"detail": _detail(response)})] * len(batch)
                for (_, future), answer in zip(batch, answers, strict=True):
                    if not future.done():  # its run's task may have been cancelled meanwhile
                        future.set_result(answer)

    # -- the heartbeat thread ---------------------------------------------------------------

    def _heartbeat_thread(self) -> None:
        with httpx.Client(base_url=self.config.server, headers=self._headers(), timeout=5.0) as client:
            while not self._beat_stop.is_set():
                with self._lock:
                    held = [{"run_id": key[0], "attempt": key[1]} for key in self.running]
                try:
                    response = client.post(f"/v1/nodes/{self.config.name}/heartbeat", json={"running": held})
                    if response.status_code == 404:
                        self._needs_registration.set()
                    elif response.status_code < 400:
                        reply = response.json()
                        self._lease_seconds = float(reply["lease_seconds"])
                        if reply["cancel"] or reply["lost"]:
                            assert self._loop is not None
                            self._loop.call_soon_threadsafe(self._on_reply, reply)
                except httpx.HTTPError:
                    pass  # the claim loop reports the outage; leases are renewed when it is back
                # Three beats per lease: one lost beat never costs a lease.
                self._beat_stop.wait(max(0.2, min(self._lease_seconds / 3, 10.0)))

    def _on_reply(self, reply: dict[str, Any]) -> None:
        assert self._loop is not None
        for item in reply["lost"]:
            execution = self.running.get((item["run_id"], item["attempt"]))
            if execution is not None:
                log.warning("lease lost; stopping the run", run=item["run_id"], attempt=item["attempt"])
                self._stop(execution, "lost")
        for item in reply["cancel"]:
            execution = self.running.get((item["run_id"], item["attempt"]))
            if execution is not None:
                why = "timed_out" if self._loop.time() >= execution.deadline - 0.5 else "cancelled"
                log.info("stopping run", run=item["run_id"], reason=why)
                self._stop(execution, why)


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
        return str(body.get("detail") or body.get("title") or body)[:300]
    except ValueError:
        return response.text[:300]

