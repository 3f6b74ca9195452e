"""Three instances behind a real nginx, as a site on several machines runs: one PostgreSQL
reached through PgBouncer in transaction mode, one Redis, and nginx configured by the site
file `deploy/nginx-upstreams.conf` ships (tests/nginx.py changes only its ports).

Under a mixed load of reads, writes, votes and logins, one instance crashes (SIGKILL to its
whole process group) and comes back, then another is replaced as a rolling deploy does it:
taken out of nginx, stopped with SIGTERM, started, put back. Every write answered 2xx is
in the database at the end and every vote count matches its rows; no request fails during
the rolling deploy; during the crash, the only failures are those nginx's retry rules
allow (docs/balancer.md): a POST the dying instance had received answers nginx's 502, and
a DELETE that it had applied, passed on to the next instance, answers 404 there.

Runs on the PostgreSQL run (a scratch database beside TEST_DATABASE_URL) when TEST_REDIS_URL
is set (in the Redis database numbered after that URL's, emptied before and after), where
nginx is installed. Every request goes to 127.0.0.1; a client may connect from another
loopback address (127.0.0.2 and up), which is the address nginx forwards for it.
"""

import itertools
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.factories import (
    PASSWORD,
    assert_unauthorized,
    bearer,
    create_post,
    create_user,
    create_user_and_login,
    login,
)
from tests.nginx import Nginx, Passage, nginx_in_front
from tests.pgbouncer import pgbouncer
from tests.redis_server import emptied_next_database, requires_redis
from tests.servers import (
    ServerProcess,
    free_port,
    post_ids,
    requires_postgres,
    running_servers,
    scratch_database,
    vote_count_mismatches,
    vote_rows,
)

pytestmark = [
    requires_postgres("three instances share one PostgreSQL database"),
    requires_redis("three instances share one Redis"),
]

INSTANCES = 3
LOGIN_MAX_FAILURES = 5
LOGIN_MAX_FAILURES_PER_ADDRESS = 8
REQUEST_SECONDS = 60
"""A client's wait for one answer: a restarted instance takes requests as soon as gunicorn
listens, and answers them once its workers have started."""


@dataclass
class Site:
    nginx: Nginx
    instances: list[ServerProcess]
    database_url: str
    """Straight to PostgreSQL, not through PgBouncer: for the checks at the end."""

    def instance_at(self, address: str) -> ServerProcess:
        """The instance behind an upstream address of nginx's log (127.0.0.1:<port>)."""
        (found,) = [i for i in self.instances if address == upstream(i)]
        return found


def upstream(instance: ServerProcess) -> str:
    return f"127.0.0.1:{instance.port}"


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    with (
        emptied_next_database() as redis_url,
        scratch_database("balancer") as database_url,
        pgbouncer(make_url(database_url).database) as bouncer,
        running_servers(
            INSTANCES,
            bouncer.url,
            workers=2,
            REDIS_URL=redis_url,
            LOGIN_MAX_FAILURES=str(LOGIN_MAX_FAILURES),
            LOGIN_MAX_FAILURES_PER_ADDRESS=str(LOGIN_MAX_FAILURES_PER_ADDRESS),
            # gunicorn's default, said here: only nginx's hop is trusted.
            FORWARDED_ALLOW_IPS="127.0.0.1",
        ) as instances,
        nginx_in_front([instance.port for instance in instances]) as nginx,
    ):
        yield Site(nginx, instances, database_url)


def tag(request: httpx.Request) -> None:
    """Give each request an id of the client's own, which nginx's access log shows."""
    request.headers["X-Request-ID"] = uuid.uuid4().hex


def request_id(response: httpx.Response) -> str:
    return response.request.headers["X-Request-ID"]


def via_nginx(
    site: Site, address: str = "127.0.0.1", new_connections: bool = False
) -> httpx.Client:
    """A client of nginx, connecting from `address`; with `new_connections`, one
    connection per request, so nothing rides on a connection nginx may close."""
    return httpx.Client(
        base_url=site.nginx.url,
        timeout=REQUEST_SECONDS,
        transport=httpx.HTTPTransport(local_address=address),
        headers={"Connection": "close"} if new_connections else None,
        event_hooks={"request": [tag]},
    )


def direct(instance: ServerProcess, address: str = "127.0.0.1") -> httpx.Client:
    """A client of one instance, bypassing nginx, connecting from `address`."""
    return httpx.Client(
        base_url=instance.url,
        timeout=REQUEST_SECONDS,
        transport=httpx.HTTPTransport(local_address=address),
    )


def wrong_login(email: str | None = None) -> dict[str, str]:
    email = email or f"nobody-{uuid.uuid4().hex[:12]}@example.com"
    return {"username": email, "password": "not the password"}


def assert_wrong_login(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    assert response.json() == {"detail": "Invalid Credentials"}


def assert_throttled(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json() == {"detail": "Too many failed logins; try again later"}
    assert 0 < int(response.headers["retry-after"]) <= 60


def test_the_instances_count_the_client_address_nginx_forwards(site: Site) -> None:
    """The per-address login limit counts each client's own address, as nginx sends it
    in X-Forwarded-For; a client can't pick another, through nginx or around it."""
    with via_nginx(site, "127.0.0.5") as client:
        for _ in range(LOGIN_MAX_FAILURES_PER_ADDRESS):
            assert_wrong_login(client.post("/login", data=wrong_login()))
        assert_throttled(client.post("/login", data=wrong_login()))
        # nginx replaces what a client says in X-Forwarded-For with the client's address.
        spoofed = {"X-Forwarded-For": "127.0.0.6"}
        assert_throttled(client.post("/login", data=wrong_login(), headers=spoofed))
    with via_nginx(site, "127.0.0.6") as other_client:
        assert_wrong_login(other_client.post("/login", data=wrong_login()))
    instance = site.instances[0]
    # An instance takes the header from FORWARDED_ALLOW_IPS (nginx's 127.0.0.1) only.
    with direct(instance, "127.0.0.6") as around_nginx:
        headers = {"X-Forwarded-For": "127.0.0.5"}
        assert_wrong_login(
            around_nginx.post("/login", data=wrong_login(), headers=headers)
        )
    with direct(instance, "127.0.0.1") as from_nginx_address:
        headers = {"X-Forwarded-For": "127.0.0.5"}
        response = from_nginx_address.post(
            "/login", data=wrong_login(), headers=headers
        )
        assert_throttled(response)


def test_failed_logins_spread_over_the_instances_are_counted_together(
    site: Site,
) -> None:
    with via_nginx(site, "127.0.0.3") as client:
        user = create_user(client)
        failures = []
        for _ in range(LOGIN_MAX_FAILURES):
            response = client.post("/login", data=wrong_login(user["email"]))
            assert_wrong_login(response)
            failures.append(request_id(response))
        refusals = []
        for _ in range(INSTANCES):
            right = {"username": user["email"], "password": PASSWORD}
            response = client.post("/login", data=right)
            assert_throttled(response)
            refusals.append(request_id(response))
    for counted in (failures, refusals):
        answered_by = {site.nginx.passage(id_).tried[-1] for id_ in counted}
        assert len(answered_by) > 1, f"one instance answered them all: {answered_by}"


def test_a_token_revoked_through_one_instance_is_refused_by_the_others(
    site: Site,
) -> None:
    with via_nginx(site) as client:
        user = create_user(client)
        headers, other_session = (
            login(client, user["email"]),
            login(client, user["email"]),
        )
        response = client.post("/logout", headers=headers)
        assert response.status_code == 204, response.text
    revoked_by = site.instance_at(site.nginx.passage(request_id(response)).tried[-1])
    others = [instance for instance in site.instances if instance is not revoked_by]
    assert len(others) == INSTANCES - 1
    for instance in others:
        with direct(instance) as client:
            assert_unauthorized(client.get("/users/me", headers=headers))
            assert client.get("/users/me", headers=other_session).status_code == 200


def test_a_post_that_meets_a_refused_connection_goes_to_the_next_instance(
    site: Site,
) -> None:
    """Nothing was sent, so nginx passes even a POST on: an instance that is down (here a
    port nothing listens on) costs no request."""
    nothing_listens = f"127.0.0.1:{free_port()}"
    ports = [int(nothing_listens.rpartition(":")[2])]
    ports += [instance.port for instance in site.instances[1:]]
    site.nginx.reload(upstreams=ports)
    try:
        with via_nginx(site) as client:
            _, headers = create_user_and_login(client)
            for _ in range(2 * INSTANCES):
                response = client.post("/posts/", json=POST, headers=headers)
                assert response.status_code == 201, response.text
                passage = site.nginx.passage(request_id(response))
                if passage.tried[0] == nothing_listens:
                    assert len(passage.tried) == 2, passage
                    assert passage.answers == ["502", "201"], passage
                    break
            else:
                raise AssertionError(f"nginx never tried {nothing_listens}")
    finally:
        site.nginx.reload()


POST = {"title": "Through nginx", "content": "Some content"}

CLIENTS = 6
SHARED_POSTS = 6
ANSWERS_PER_STEP = 40
"""Answers the clients get before each step, and while an instance is down."""
STEP_SECONDS = 120
"""At most, for those answers."""

WARM_UP, CRASH, AFTER_CRASH, ROLLING, AFTER_ROLLING = range(5)
STEPS = ("warm-up", "crash", "after the crash", "rolling deploy", "after it")


@dataclass
class Outcome:
    """A request that did not get the answer its client expected."""

    method: str
    path: str
    request_id: str
    steps: range
    """The steps of the run it overlapped, from when it was sent to when it was answered."""
    status: int | None
    by_nginx: bool
    """Answered by nginx itself (no X-Request-ID from the app), not passed from an app."""
    text: str

    def __str__(self) -> str:
        where = "nginx" if self.by_nginx else "app"
        during = ", ".join(STEPS[step] for step in self.steps)
        return (
            f"{self.method} {self.path} during {during}: "
            f"{self.status} from {where} {self.text[:200]}"
        )


@dataclass
class Load:
    """The clients' shared state: what they were answered, and what they wrote."""

    step: int = WARM_UP
    answered: int = 0
    stopping: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    unexpected: list[Outcome] = field(default_factory=list)
    votable: list[int] = field(default_factory=list)
    created: set[int] = field(default_factory=set)
    deleted: set[int] = field(default_factory=set)
    votes: set[tuple[int, int]] = field(default_factory=set)

    def send(
        self,
        client: httpx.Client,
        expected: int,
        method: str,
        path: str,
        **request: Any,
    ) -> httpx.Response | None:
        """The response, whatever its status (one other than `expected` is noted), or
        None when none came."""
        first = self.step
        try:
            response = client.request(method, path, **request)
        except httpx.TransportError as error:
            steps = range(first, self.step + 1)
            text = f"{type(error).__name__} {error}"
            self.note(Outcome(method, path, "", steps, None, False, text))
            return None
        with self.lock:
            self.answered += 1
        if response.status_code != expected:
            content_type = response.headers.get("content-type", "")
            made_by_nginx = "x-request-id" not in response.headers and (
                content_type.startswith("text/html")
            )
            self.note(
                Outcome(
                    method,
                    path,
                    request_id(response),
                    range(first, self.step + 1),
                    response.status_code,
                    made_by_nginx,
                    response.text,
                )
            )
        return response

    def note(self, outcome: Outcome) -> None:
        with self.lock:
            self.unexpected.append(outcome)

    def wait_for_answers(self, count: int, what: str) -> None:
        before = self.answered
        deadline = time.monotonic() + STEP_SECONDS
        while self.answered < before + count:
            assert time.monotonic() < deadline, (
                f"{self.answered - before} answers {what} in {STEP_SECONDS} s, "
                f"not {count}"
            )
            time.sleep(0.05)

    def pick_unvoted(self, voted: set[int]) -> int | None:
        with self.lock:
            candidates = [post for post in self.votable if post not in voted]
        return random.choice(candidates) if candidates else None


def answered(response: httpx.Response | None, *statuses: int) -> bool:
    return response is not None and response.status_code in statuses


def browse_write_and_vote(
    load: Load, client: httpx.Client, user: dict, token: str
) -> None:
    """One client's rounds, until told to stop: list, read, write a post and vote for
    another; every third round also writes and deletes a post, every fourth logs in."""
    headers = bearer(token)
    voted: set[int] = set()
    for round_ in itertools.count():
        if load.stopping.is_set():
            return
        load.send(client, 200, "GET", "/posts/", params={"limit": 10}, headers=headers)
        some_post = random.choice(load.votable[:SHARED_POSTS])
        load.send(client, 200, "GET", f"/posts/{some_post}", headers=headers)
        written = load.send(client, 201, "POST", "/posts/", json=POST, headers=headers)
        if written is not None and answered(written, 201):
            with load.lock:
                load.created.add(written.json()["id"])
                load.votable.append(written.json()["id"])
        target = load.pick_unvoted(voted)
        if target is not None:
            voted.add(target)  # whatever the answer: a vote in doubt is not sent again
            vote = {"post_id": target, "dir": 1}
            voting = load.send(
                client, 201, "POST", "/vote/", json=vote, headers=headers
            )
            if answered(voting, 201):
                with load.lock:
                    load.votes.add((user["id"], target))
        if round_ % 3 == 2:
            doomed = load.send(
                client, 201, "POST", "/posts/", json=POST, headers=headers
            )
            if doomed is not None and answered(doomed, 201):
                post_id = doomed.json()["id"]
                with load.lock:
                    load.created.add(post_id)
                path = f"/posts/{post_id}"
                # 404: gone already (a failure, unless nginx's rules allow it; see below).
                deleting = load.send(client, 204, "DELETE", path, headers=headers)
                if answered(deleting, 204, 404):
                    with load.lock:
                        load.deleted.add(post_id)
        if round_ % 4 == 3:
            form = {"username": user["email"], "password": PASSWORD}
            logged_in = load.send(client, 200, "POST", "/login", data=form)
            if logged_in is not None and answered(logged_in, 200):
                headers = bearer(logged_in.json()["access_token"])


def allowed_by_nginx_rules(outcome: Outcome, passage: Passage, crashed: str) -> bool:
    """A failure nginx's retry rules allow for a request in flight when `crashed` died:
    a POST it had received is not passed on (nginx answers 502, or 504 on a timeout),
    and a DELETE it had applied, passed on, answers 404 from the next instance."""
    if CRASH not in outcome.steps:
        return False
    if outcome.method == "POST" and outcome.by_nginx and outcome.status in (502, 504):
        return passage.tried == [crashed]
    if outcome.method == "DELETE" and not outcome.by_nginx and outcome.status == 404:
        return passage.tried[0] == crashed and len(passage.tried) > 1
    return False


def test_mixed_load_through_a_crash_and_a_rolling_deploy_keeps_every_write(
    site: Site,
) -> None:
    crashing, redeployed = site.instances[0], site.instances[1]
    crashed = upstream(crashing)
    load = Load()
    with via_nginx(site) as client:
        _, author = create_user_and_login(client)
        shared = [create_post(client, author)["id"] for _ in range(SHARED_POSTS)]
        load.votable = list(shared)
        accounts = [create_user(client) for _ in range(CLIENTS)]
        tokens = [login(client, account["email"]) for account in accounts]

    def run(number: int) -> None:
        # Each client from an address of its own: logins in flight at the crash that
        # count against an address without ever being taken back stay few per address.
        address = f"127.0.0.{20 + number}"
        with via_nginx(site, address, new_connections=True) as own:
            token = tokens[number]["Authorization"].removeprefix("Bearer ")
            browse_write_and_vote(load, own, accounts[number], token)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        load.wait_for_answers(ANSWERS_PER_STEP, "to warm up")
        load.step = CRASH
        crashing.kill()
        load.wait_for_answers(ANSWERS_PER_STEP, "with an instance crashed")
        crashing.start()
        load.step = AFTER_CRASH
        load.wait_for_answers(ANSWERS_PER_STEP, "after the crash")
        load.step = ROLLING
        site.nginx.reload(down=frozenset({redeployed.port}))
        redeployed.stop()
        load.wait_for_answers(ANSWERS_PER_STEP, "with an instance stopped")
        redeployed.start()
        site.nginx.reload()
        load.step = AFTER_ROLLING
        load.wait_for_answers(ANSWERS_PER_STEP, "after the rolling deploy")
    finally:
        load.stopping.set()
        joined_by = time.monotonic() + REQUEST_SECONDS + 30
        for thread in threads:
            thread.join(timeout=max(0, joined_by - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads)

    in_doubt: Counter[str] = Counter()
    failures = []
    for outcome in load.unexpected:
        passage = site.nginx.passage(outcome.request_id) if outcome.request_id else None
        if passage is None or not allowed_by_nginx_rules(outcome, passage, crashed):
            failures.append(outcome)
        elif outcome.method == "POST":
            in_doubt[outcome.path] += 1
    common = Counter(str(failure) for failure in failures).most_common(10)
    assert failures == [], (
        f"{len(failures)} of {load.answered} requests failed:\n"
        + "\n".join(f"{count} x {failure}" for failure, count in common)
        + f"\nnginx's error log:\n{site.nginx.log_text()[-3000:]}"
    )

    # Every write answered 2xx is there; none was applied twice (a write in doubt, one
    # nginx answered 502 for, may have been applied once).
    stored = post_ids(site.database_url)
    assert load.created - load.deleted <= stored
    assert not load.deleted & stored
    unknown_posts = {post for post in stored if post > max(shared)} - load.created
    assert len(unknown_posts) <= in_doubt["/posts/"]
    votes = vote_rows(site.database_url)
    assert load.votes <= votes
    voters = {account["id"] for account in accounts}
    unknown_votes = {vote for vote in votes if vote[0] in voters} - load.votes
    assert len(unknown_votes) <= in_doubt["/vote/"]
    assert vote_count_mismatches(site.database_url) == {}
