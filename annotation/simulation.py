"""Simulated participants ("bots") for pilots: each goes through a study's real participant
pages over HTTP, as a browser would (study link, consent, practice, trials, catch trials, the
done page), with its own cookies, and answers from a model's embeddings.

Nothing here reads or writes the database: a bot knows only the pages it is served and a
``ModelView`` (the model's similarities, built by annotation/services/pilots.py), so what it
exercises is exactly what a participant exercises: assignment, quotas, idempotency keys,
expiry, quality control. Personas:

- ``honest``: rates by the rank of the pair's cosine similarity among the study's pairs,
  mapped onto the scale, plus Gaussian ``rating_noise`` (rounded, clipped); chooses by a
  softmax over standardised similarities with ``temperature``; arranges items by classical
  MDS of the model's dissimilarities (1 - cosine) plus ``placement_noise``, scaled to radius
  0.9; tags with the labels of the stimulus and its nearest neighbours. It notices catch
  trials (identical stimuli) and answers them as the study expects. With probability
  ``lapse_rate`` an answer (an item, in an arrangement) is random instead.
- ``speeder``: answers at random, faster than the study's minimum response time.
- ``catch_failer``: inattentive: answers at random at a normal pace and misses every catch
  trial (never gives the answer a catch trial expects).

Response times are the persona's simulated times, sent as the browser's measurement
(``rt_ms``); nobody sleeps. Half of the bots answer through htmx (the answer and the next
trial in one request), the others by plain form posts and redirects, as browsers without
JavaScript do.

``run_bots`` can be stopped: when its caller is interrupted (Ctrl-C, a worker shutting
down) or its ``keep_going`` check says no, every bot stops before its next request and the
bots not yet started never start, and ``run_bots`` returns (or raises) only once every bot's
thread has stopped, so that the pilot's clean-up never races its own bots.
"""

from __future__ import annotations

import http.cookiejar
import json
import math
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from email.message import Message
from html.parser import HTMLParser

import numpy as np

from evaluation.engine.arrangement import ArrangementError, simulate_arrangement

HONEST, SPEEDER, CATCH_FAILER = "honest", "speeder", "catch_failer"
PERSONAS = (HONEST, SPEEDER, CATCH_FAILER)
# The one name people read for each persona (reports, tables, the command's output).
PERSONA_LABELS = {
    HONEST: "honest",
    SPEEDER: "speeder",
    CATCH_FAILER: "inattentive (fails catch trials)",
}

ARENA_RADIUS = 0.9  # honest arrangements use the circle up to here (the rim is 1)
REFERENCE_PAIRS = 4000  # random pairs that set the similarity scale when a study has none
TAG_NEIGHBOURS = 3  # an honest tagger also uses its stimulus' nearest neighbours' labels
MAX_PAGES = 2000  # a session longer than this is a loop, not a study
RESPONSE_MS = {"arrangement": 2000, "tags": 6000}  # median time per trial
DEFAULT_RESPONSE_MS = 2500
# An arrangement takes time per item too: each is dragged into the arena and placed among
# the others, which takes a careful person several seconds (an assumption of these bots,
# not a measurement), so an honest bot's median is 2 s per trial plus 5 s per item shown.
# The study's minimum response time is per item shown too (services/arrangements.py): a
# floor of a second or two per item flags hurried arrangements, not careful ones.
ARRANGEMENT_MS_PER_ITEM = 5000
RESPONSE_SPREAD = 0.35  # SD of the log of a response time (log-normal around the median)
TOKEN_IN_PATH = re.compile(r"/p/([^/]+)/")
TICK_SECONDS = 15.0  # how often run_bots asks ``keep_going`` while its bots run
STOPPED = "stopped: the pilot ended before this bot was done"


def persona_label(persona: str) -> str:
    return PERSONA_LABELS.get(persona, persona)


# --- What a bot knows -----------------------------------------------------------------------
class ModelView:
    """A model's view of a dataset's stimuli: unit embedding vectors by stimulus id, the
    spread of similarities that puts a pair on a rating scale (the study's own pairs, or
    random pairs), and the stimuli's labels and texts for tagging."""

    def __init__(
        self,
        vectors: np.ndarray,
        stimulus_ids: Sequence[int],
        *,
        labels: Mapping[int, str] | None = None,
        texts: Mapping[int, str] | None = None,
        reference_pairs: Sequence[tuple[int, int]] = (),
        seed: int = 0,
    ) -> None:
        matrix = np.asarray(vectors, dtype=np.float32)
        if matrix.ndim != 2 or len(matrix) != len(stimulus_ids):
            raise ValueError(
                f"The embeddings have shape {matrix.shape}, but the dataset has "
                f"{len(stimulus_ids)} stimuli: they must have one row per stimulus."
            )
        if not np.isfinite(matrix).all():
            raise ValueError("The embeddings hold NaN or infinite values.")
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        self._unit = matrix / np.where(norms > 0, norms, 1.0)
        self._row = {int(pk): row for row, pk in enumerate(stimulus_ids)}
        self._ids = [int(pk) for pk in stimulus_ids]
        self.labels = {int(k): v for k, v in (labels or {}).items()}
        self.texts = {int(k): v for k, v in (texts or {}).items()}
        self._neighbours: dict[int, list[int]] = {}
        pairs = [(a, b) for a, b in reference_pairs if a != b and a in self._row and b in self._row]
        if not pairs and len(self._ids) >= 2:
            rng = np.random.default_rng(seed)
            rows = rng.integers(0, len(self._ids), size=(REFERENCE_PAIRS, 2))
            pairs = [(self._ids[i], self._ids[j]) for i, j in rows if i != j]
        reference = np.sort(self._similarities(pairs)) if pairs else np.zeros(1)
        self._reference = reference
        self.mean = float(reference.mean())
        self.spread = float(reference.std()) or 1.0

    def knows(self, *stimuli: int) -> bool:
        return all(s in self._row for s in stimuli)

    def similarity(self, a: int, b: int) -> float:
        return float(self._unit[self._row[a]] @ self._unit[self._row[b]])

    def _similarities(self, pairs: Sequence[tuple[int, int]]) -> np.ndarray:
        first = self._unit[[self._row[a] for a, _ in pairs]]
        second = self._unit[[self._row[b] for _, b in pairs]]
        return np.einsum("ij,ij->i", first, second).astype(np.float64)

    def standardised(self, similarity: float) -> float:
        """In standard deviations of the reference similarities (the temperature's unit)."""
        return (similarity - self.mean) / self.spread

    def rank(self, similarity: float) -> float:
        """Where a similarity falls among the reference pairs, from 0 to 1 (mid-rank)."""
        low = np.searchsorted(self._reference, similarity, side="left")
        high = np.searchsorted(self._reference, similarity, side="right")
        return float((low + high) / 2 / len(self._reference))

    def dissimilarities(self, stimuli: Sequence[int]) -> np.ndarray:
        unit = self._unit[[self._row[s] for s in stimuli]].astype(np.float64)
        matrix = np.clip(1.0 - unit @ unit.T, 0.0, None)
        np.fill_diagonal(matrix, 0.0)
        return matrix

    def neighbours(self, stimulus: int, k: int = TAG_NEIGHBOURS) -> list[int]:
        """The ``k`` stimuli the model finds most similar to this one (cached: a tagger
        asks about the same stimuli again and again)."""
        found = self._neighbours.get(stimulus)
        if found is None:
            scores = self._unit @ self._unit[self._row[stimulus]]
            order = np.argsort(-scores)
            found = [self._ids[i] for i in order[: k + 1] if self._ids[i] != stimulus][:k]
            self._neighbours[stimulus] = found
        return found

    def tag_words(self, stimulus: int) -> list[str]:
        """Tags an honest participant would give, best first: the stimulus' own label, its
        nearest neighbours' labels, else words of its text."""
        words = [self.labels.get(stimulus, "")]
        if self.knows(stimulus):
            words += [self.labels.get(s, "") for s in self.neighbours(stimulus)]
        words += [w for w in re.findall(r"[^\W\d_]{4,}", self.texts.get(stimulus, ""))[:3]]
        cleaned = [" ".join(w.split()).lower() for w in words if w and w.strip()]
        return list(dict.fromkeys(cleaned)) or ["thing"]

    def random_words(self, rng: np.random.Generator, count: int) -> list[str]:
        """Tags of an inattentive participant: labels of random other stimuli."""
        pool = sorted({v.lower() for v in self.labels.values() if v}) or ["thing", "stuff"]
        return [pool[int(i)] for i in rng.integers(0, len(pool), size=count)]


@dataclass(frozen=True)
class BotSettings:
    """How the honest bots answer, and what the planted ones are measured against."""

    rating_noise: float = 0.5  # SD of Gaussian noise on a rating, in scale points
    temperature: float = 0.5  # softmax temperature over standardised similarities
    placement_noise: float = 0.15  # SD of placement noise, as a share of the spread
    lapse_rate: float = 0.02  # probability that an answer (arrangement: an item) is random
    min_response_ms: int = 0  # the study's: speeders answer faster than this
    timeout: float = 60.0  # seconds per HTTP request


class Stopped(Exception):
    """The pilot was stopped: a bot makes no further request."""


@dataclass
class BotResult:
    """What happened to one bot, as the bot saw it."""

    number: int
    persona: str
    participant: str = ""  # the participant token (from the private link)
    answered: int = 0
    practice: int = 0
    catch_trials: int = 0
    lapses: int = 0
    requests: int = 0
    finished: bool = False  # reached the done page
    completion_code: str = ""
    refused: str = ""  # why the study link did not start a session
    error: str = ""
    problems: list[str] = field(default_factory=list)  # trial pages that said what was wrong


# --- HTTP ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Page:
    status: int
    url: str
    headers: Message
    text: str


class Browser:
    """A cookie jar and an opener: one participant's browser. No proxies: the bots talk to
    the study's own server. Once ``stop`` is set it sends nothing more."""

    def __init__(self, timeout: float, stop: threading.Event | None = None) -> None:
        self.timeout = timeout
        self.stop = stop
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPCookieProcessor(self.jar)
        )
        self.requests = 0

    def get(self, url: str, headers: Mapping[str, str] | None = None) -> Page:
        return self._open(urllib.request.Request(url, headers=dict(headers or {})))

    def post(
        self, url: str, fields: Mapping[str, str], headers: Mapping[str, str] | None = None
    ) -> Page:
        data = urllib.parse.urlencode(fields).encode()
        request = urllib.request.Request(url, data=data, headers=dict(headers or {}))
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
        return self._open(request)

    def cookie(self, name: str) -> str:
        return next((c.value or "" for c in self.jar if c.name == name), "")

    def _open(self, request: urllib.request.Request) -> Page:
        if self.stop is not None and self.stop.is_set():
            raise Stopped(STOPPED)
        self.requests += 1
        try:
            with self.opener.open(request, timeout=self.timeout) as response:
                body = response.read().decode("utf-8", errors="replace")
                return Page(response.status, response.geturl(), response.headers, body)
        except urllib.error.HTTPError as exc:  # 4xx/5xx: the page still says why
            body = exc.read().decode("utf-8", errors="replace")
            return Page(exc.code, exc.geturl() or request.full_url, exc.headers, body)


# --- Reading pages ---------------------------------------------------------------------------
@dataclass
class TrialForm:
    """What a trial page shows and how it is answered."""

    kind: str = ""
    practice: bool = False
    action: str = ""
    hidden: dict[str, str] = field(default_factory=dict)
    stimuli: list[int] = field(default_factory=list)  # shown (pairs, tags), in order
    reference: int | None = None  # 2AFC
    choices: list[int] = field(default_factory=list)  # buttons name="chosen"
    scale: list[int] = field(default_factory=list)  # buttons name="value"
    arena: list[int] = field(default_factory=list)  # arena items, in the trial's order
    tags: list[tuple[int, str]] = field(default_factory=list)  # (tag id, text) to rate
    asks_tags: bool = False
    submit: dict[str, str] = field(default_factory=dict)  # the arena's Done button

    @property
    def trial(self) -> str:
        return self.hidden.get("trial", "")


class _PageParser(HTMLParser):
    """Collects what a bot needs from a participant page (entry, trial, done), with the
    standard library's tolerant parser: forms and their inputs, the stimuli shown (their
    ``data-stimulus``), answer buttons, tags to rate, error messages, the completion code."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.form = TrialForm()
        self.forms: list[dict[str, str]] = []  # each form's action and hidden/named inputs
        self.arena: list[tuple[int, int]] = []  # (data-index, stimulus)
        self.errors: list[str] = []
        self.code = ""
        self._capture: tuple[str, str, list[str]] | None = None  # (what, end tag, text)
        self._tag_ids: set[int] = set()  # tags with rating buttons
        self._noscript = 0  # what a browser with JavaScript does not show

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        classes = set(a.get("class", "").split())
        if tag == "noscript":
            self._noscript += 1
        if self._noscript:
            return
        if tag == "div" and a.get("id") == "trial":
            self.form.kind = a.get("data-kind", "")
        if tag == "form":
            self.forms.append({"__action__": a.get("action", "")})
        if "data-stimulus" in a and a["data-stimulus"].isdigit():
            self._stimulus(int(a["data-stimulus"]), classes, a)
        if tag == "input" and self.forms:
            self._input(a)
        if tag == "button" and a.get("name"):
            self._button(a)
        if "errors" in classes:
            self._capture = ("error", tag, [])
        elif tag == "span" and "tag" in classes and a.get("id", "").startswith("tag-"):
            self._capture = (a["id"], "span", [])
        elif a.get("id") == "completion-code":
            self._capture = ("code", tag, [])

    def _stimulus(self, stimulus: int, classes: set[str], a: dict[str, str]) -> None:
        if "arena-item" in classes:
            self.arena.append((int(a.get("data-index", len(self.arena)) or 0), stimulus))
        elif "reference" in classes:
            self.form.reference = stimulus
        elif "stimulus" in classes:
            self.form.stimuli.append(stimulus)

    def _input(self, a: dict[str, str]) -> None:
        name, kind = a.get("name", ""), a.get("type", "text")
        if not name:
            return
        if kind == "hidden":
            self.forms[-1][name] = a.get("value", "")
        elif name == "new_tags":
            self.form.asks_tags = True
        elif kind == "radio" and name.startswith("tag_") and name[4:].isdigit():
            self._tag_ids.add(int(name[4:]))

    def _button(self, a: dict[str, str]) -> None:
        name, value = a["name"], a.get("value", "")
        if name == "value" and _is_int(value):
            self.form.scale.append(int(value))
        elif name == "chosen" and value.isdigit():
            self.form.choices.append(int(value))
        elif name == "done":
            self.form.submit = {name: value}

    def handle_data(self, data: str) -> None:
        if self._capture is not None:
            self._capture[2].append(data)
        if "· practice" in data:
            self.form.practice = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "noscript":
            self._noscript = max(0, self._noscript - 1)
        if self._capture is None or tag != self._capture[1]:
            return
        what, _, parts = self._capture
        text = " ".join("".join(parts).split())
        if what == "error":
            self.errors.append(text)
        elif what == "code":
            self.code = text
        else:
            self.form.tags.append((int(what.removeprefix("tag-")), text))
        self._capture = None

    def result(self) -> TrialForm:
        form = self.form
        trial_forms = [f for f in self.forms if "trial" in f]
        if trial_forms:
            chosen = dict(trial_forms[-1])
            form.action = chosen.pop("__action__")
            form.hidden = chosen
        form.arena = [stimulus for _, stimulus in sorted(self.arena, key=lambda p: p[0])]
        form.tags = [(pk, text) for pk, text in form.tags if pk in self._tag_ids]
        return form


def _is_int(text: str) -> bool:
    return bool(re.fullmatch(r"-?\d+", text))


def read_page(html: str) -> _PageParser:
    parser = _PageParser()
    parser.feed(html)
    parser.close()
    return parser


# --- Answering -------------------------------------------------------------------------------
class Bot:
    """One simulated participant: its persona, its random stream, its browser."""

    def __init__(
        self,
        number: int,
        persona: str,
        view: ModelView,
        settings: BotSettings,
        rng: np.random.Generator,
        *,
        htmx: bool,
        stop: threading.Event | None = None,
    ) -> None:
        if persona not in PERSONAS:
            raise ValueError(f"Unknown persona {persona!r}; one of {', '.join(PERSONAS)}.")
        self.persona, self.view, self.settings, self.rng, self.htmx = (
            persona,
            view,
            settings,
            rng,
            htmx,
        )
        self.result = BotResult(number=number, persona=persona)
        self.browser = Browser(settings.timeout, stop)

    # The session ------------------------------------------------------------------------
    def run(self, entry_url: str) -> BotResult:
        """Take part from the study link to the done page; never raises (the result says
        what went wrong)."""
        try:
            page = self._consent(entry_url)
            if page is not None:
                self._trials(page)
        except Stopped:
            self.result.error = STOPPED
        except Exception as exc:  # a bot's failure is a finding of the pilot, not a crash
            self.result.error = f"{type(exc).__name__}: {exc}"
        self.result.requests = self.browser.requests
        return self.result

    def _consent(self, entry_url: str) -> Page | None:
        page = self.browser.get(entry_url)
        if page.status in (403, 409, 503):
            self.result.refused = _refusal(page)
            return None
        if page.status != 200:
            raise RuntimeError(f"the study link answered HTTP {page.status}")
        if TOKEN_IN_PATH.search(urllib.parse.urlsplit(page.url).path):
            return self._started(page)  # a session this browser holds already
        parsed = read_page(page.text)
        fields = {k: v for k, v in (parsed.forms[0] if parsed.forms else {}).items()}
        fields.pop("__action__", None)
        fields.setdefault("csrfmiddlewaretoken", self.browser.cookie("csrftoken"))
        fields["consent"] = "on"
        answer = self.browser.post(entry_url, fields, {"Referer": entry_url})
        if answer.status in (403, 409, 503):
            self.result.refused = _refusal(answer)
            return None
        if not TOKEN_IN_PATH.search(urllib.parse.urlsplit(answer.url).path):
            said = "; ".join(read_page(answer.text).errors) or f"HTTP {answer.status}"
            raise RuntimeError(f"consent did not start a session ({said})")
        return self._started(answer)

    def _started(self, page: Page) -> Page:
        match = TOKEN_IN_PATH.search(urllib.parse.urlsplit(page.url).path)
        assert match is not None
        self.result.participant = match.group(1)
        return page

    def _trials(self, page: Page) -> None:
        url = page.url
        refused = ""  # the trial whose last answer the server refused
        for _ in range(MAX_PAGES):
            if urllib.parse.urlsplit(url).path.rstrip("/").endswith("/done"):
                self.result.finished = True
                self.result.completion_code = read_page(page.text).code
                return
            if page.status not in (200, 400):
                raise RuntimeError(f"{url} answered HTTP {page.status}")
            parsed = read_page(page.text)
            form = parsed.result()
            if not form.trial:
                raise RuntimeError(f"{url} shows neither a trial nor the end of the session")
            if parsed.errors:
                self.result.problems.append(parsed.errors[0])
                if refused == form.trial:
                    raise RuntimeError(f"the server refused two answers: {parsed.errors[0]}")
                refused = form.trial
            page, url = self._submit(url, form)
        raise RuntimeError(f"no end after {MAX_PAGES} pages")

    def _submit(self, url: str, form: TrialForm) -> tuple[Page, str]:
        fields = {**form.hidden, **self.answer(form), "rt_ms": str(self.response_time(form))}
        fields.setdefault("csrfmiddlewaretoken", self.browser.cookie("csrftoken"))
        action = urllib.parse.urljoin(url, form.action or url)
        headers = {"Referer": url, "X-CSRFToken": fields["csrfmiddlewaretoken"]}
        self.result.answered += 1
        self.result.practice += form.practice
        if not self.htmx:
            page = self.browser.post(action, fields, headers)
            return page, page.url
        page = self.browser.post(action, fields, {**headers, "HX-Request": "true"})
        redirect = page.headers.get("HX-Redirect") if page.headers else None
        if redirect:  # the session is over: htmx goes to the done page
            done = urllib.parse.urljoin(url, redirect)
            return self.browser.get(done), done
        return page, url  # the next trial, in place

    # Answers ----------------------------------------------------------------------------
    def answer(self, form: TrialForm) -> dict[str, str]:
        """The form fields that answer this trial, as this persona would."""
        catch = is_catch(form)
        self.result.catch_trials += catch and not form.practice
        honest = self.persona == HONEST
        lapse = (
            honest and form.kind != "arrangement" and self.rng.random() < self.settings.lapse_rate
        )
        self.result.lapses += lapse
        attentive = honest and not lapse
        if form.kind == "pairs":
            return {"value": str(self._rating(form, attentive, catch))}
        if form.kind in ("triplets", "2afc"):
            return {"chosen": str(self._choice(form, attentive, catch))}
        if form.kind == "arrangement":
            placements = self._arrangement(form.arena, honest)
            return {**form.submit, "arrangement": json.dumps(placements)}
        return self._tags(form, attentive)

    def _rating(self, form: TrialForm, attentive: bool, catch: bool) -> int:
        scale = sorted(form.scale)
        if not scale:
            raise RuntimeError("a pair trial without rating buttons")
        a, b = [*form.stimuli, 0, 0][:2]
        if attentive and catch:
            return scale[-1]  # the same stimulus twice: as similar as can be
        if attentive and self.view.knows(a, b):
            low, high = scale[0], scale[-1]
            point = low + self.view.rank(self.view.similarity(a, b)) * (high - low)
            point += self.rng.normal(0.0, self.settings.rating_noise)
            return int(min(high, max(low, round(point))))
        options = scale[:-1] if self.persona == CATCH_FAILER and catch else scale
        return int(options[self.rng.integers(len(options))])

    def _choice(self, form: TrialForm, attentive: bool, catch: bool) -> int:
        options = form.choices
        if not options:
            raise RuntimeError("a choice trial without options")
        expected = catch_answer(form)
        if attentive and expected is not None:
            return expected
        if attentive and self._knows_choice(form):
            scores = np.array(self._choice_scores(form))
            weights = np.exp((scores - scores.max()) / max(self.settings.temperature, 1e-6))
            return int(options[self.rng.choice(len(options), p=weights / weights.sum())])
        if self.persona == CATCH_FAILER and expected is not None:
            wrong = [o for o in options if o != expected] or options
            return int(wrong[self.rng.integers(len(wrong))])
        return int(options[self.rng.integers(len(options))])

    def _knows_choice(self, form: TrialForm) -> bool:
        shown = [*form.choices, *([form.reference] if form.reference is not None else [])]
        return self.view.knows(*shown)

    def _choice_scores(self, form: TrialForm) -> list[float]:
        """How strongly each option should be chosen, in standard deviations of similarity:
        2AFC, its similarity to the reference; odd-one-out, how similar the other two are."""
        view, options = self.view, form.choices
        if form.kind == "2afc" and form.reference is not None:
            return [view.standardised(view.similarity(form.reference, o)) for o in options]
        scores = []
        for index in range(len(options)):
            rest = [o for i, o in enumerate(options) if i != index]
            scores.append(view.standardised(view.similarity(rest[0], rest[1])))
        return scores

    def _arrangement(self, shown: list[int], honest: bool) -> list[list[float | int]]:
        if len(shown) < 2:
            raise RuntimeError("an arrangement trial with fewer than two items")
        unique = list(dict.fromkeys(shown))
        if honest and len(unique) >= 2 and self.view.knows(*unique):
            positions = self._mds(unique)
            spots = {s: positions[i] for i, s in enumerate(unique)}
            points = np.array([spots[s] for s in shown])  # copies go on top of each other
        else:
            points = self._random_points(len(shown))
            if self.persona == CATCH_FAILER:
                points = self._apart(shown, points)
        moves = [1 + int(self.rng.poisson(0.3)) if honest else 1 for _ in shown]
        return [
            [stimulus, round(float(x), 5), round(float(y), 5), move]
            for stimulus, (x, y), move in zip(shown, points, moves, strict=True)
        ]

    def _mds(self, unique: list[int]) -> np.ndarray:
        """Classical MDS of the model's dissimilarities plus placement noise, centred and
        scaled into the arena; each item is dropped at random with the lapse rate."""
        truth = self.view.dissimilarities(unique)
        try:
            points = simulate_arrangement(
                truth, list(range(len(unique))), self.settings.placement_noise, self.rng
            )
        except ArrangementError:
            points = self._random_points(len(unique))
        for index in range(len(unique)):
            if self.rng.random() < self.settings.lapse_rate:
                self.result.lapses += 1
                points[index] = self._random_points(1)[0] * _radius(points)
        return _fit_in_arena(points, self.rng)

    def _random_points(self, count: int) -> np.ndarray:
        angle = self.rng.uniform(0, 2 * math.pi, count)
        radius = ARENA_RADIUS * np.sqrt(self.rng.uniform(0, 1, count))
        return np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)

    def _apart(self, shown: list[int], points: np.ndarray) -> np.ndarray:
        """An inattentive participant leaves the copies of a catch item far apart."""
        first: dict[int, int] = {}
        for index, stimulus in enumerate(shown):
            if stimulus not in first:
                first[stimulus] = index
                continue
            for _ in range(100):
                if np.linalg.norm(points[index] - points[first[stimulus]]) > ARENA_RADIUS:
                    break
                points[index] = self._random_points(1)[0]
        return points

    def _tags(self, form: TrialForm, attentive: bool) -> dict[str, str]:
        stimulus = form.stimuli[0] if form.stimuli else 0
        own = self.view.tag_words(stimulus) if attentive else self.view.random_words(self.rng, 2)
        fields: dict[str, str] = {}
        for tag_id, text in form.tags:
            fields[f"tag_{tag_id}"] = self._tag_rating(
                " ".join(text.split()).lower(), own, attentive
            )
        shown = {" ".join(text.split()).lower() for _, text in form.tags}
        fresh = [w for w in own if w not in shown]
        if fresh and (not form.tags or self.rng.random() < 0.3):
            fields["new_tags"] = ", ".join(fresh[: 1 + int(self.rng.integers(2))])
        elif not form.tags:
            fields["new_tags"] = own[0]
        return fields

    def _tag_rating(self, text: str, own: list[str], attentive: bool) -> str:
        if not attentive:
            return str(["1", "2", "3", "4", "5", "flag"][self.rng.integers(6)])
        if text in own:
            return "5" if self.rng.random() < 0.7 else "4"
        return "flag" if self.rng.random() < 0.5 else str(1 + int(self.rng.integers(2)))

    def response_time(self, form: TrialForm) -> int:
        """The simulated time to answer, in ms: a speeder's is a tenth to a half of the
        study's minimum (an arrangement's minimum is per item shown: times the items); the
        others' are log-normal around a plausible median for the task (an arrangement's
        grows with its items: ARRANGEMENT_MS_PER_ITEM)."""
        items = len(form.arena) if form.kind == "arrangement" else 1
        if self.persona == SPEEDER:
            floor = (self.settings.min_response_ms or 500) * max(1, items)
            return max(1, int(self.rng.uniform(0.1, 0.5) * floor))
        median = RESPONSE_MS.get(form.kind, DEFAULT_RESPONSE_MS)
        if form.kind == "arrangement":
            median += ARRANGEMENT_MS_PER_ITEM * items
        pace = 0.8 if self.persona == CATCH_FAILER else 1.0
        return int(median * pace * self.rng.lognormal(0.0, RESPONSE_SPREAD))


def is_catch(form: TrialForm) -> bool:
    """A trial with a stimulus shown twice: the study's catch trials (a pair of identical
    stimuli, a triplet with two copies, a 2AFC whose reference is a candidate, an arena
    with a duplicated item)."""
    if form.kind == "pairs":
        return len(form.stimuli) == 2 and form.stimuli[0] == form.stimuli[1]
    if form.kind == "arrangement":
        return len(set(form.arena)) < len(form.arena)
    return catch_answer(form) is not None


def catch_answer(form: TrialForm) -> int | None:
    """The answer a catch trial of a choice study expects, or None for a regular trial."""
    if form.kind == "2afc" and form.reference in form.choices:
        return form.reference
    if form.kind == "triplets" and len(set(form.choices)) == 2:
        return next(c for c in form.choices if form.choices.count(c) == 1)
    return None


def _radius(points: np.ndarray) -> float:
    centred = points - points.mean(axis=0)
    return float(np.sqrt((centred**2).sum(axis=1)).max()) or 1.0


def _fit_in_arena(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Centred, scaled so that the farthest item lies at ARENA_RADIUS."""
    centred = points - points.mean(axis=0)
    radius = float(np.sqrt((centred**2).sum(axis=1)).max())
    if radius < 1e-9:  # no structure at all (identical embeddings): spread at random
        angle = rng.uniform(0, 2 * math.pi, len(points))
        return ARENA_RADIUS * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return centred * (ARENA_RADIUS / radius)


def _refusal(page: Page) -> str:
    reasons = {
        403: "the study link did not admit the pilot (the study is not open to it)",
        409: "the participant id had started already",
        503: "no place was free: every item had all the participants it needs",
    }
    return reasons.get(page.status, f"HTTP {page.status}")


# --- A pilot's bots --------------------------------------------------------------------------
def run_bots(
    entry_url: str,
    personas: Sequence[str],
    view: ModelView,
    settings: BotSettings,
    *,
    seed: int = 0,
    concurrency: int = 8,
    on_result: Callable[[BotResult], None] | None = None,
    keep_going: Callable[[], bool] | None = None,
    tick_seconds: float = TICK_SECONDS,
) -> list[BotResult]:
    """Send one bot per persona through the study link, ``concurrency`` at a time (so that
    they race for items as real participants do); their results in bot order.

    ``on_result`` hears of each bot as it ends, and ``keep_going`` is asked every
    ``tick_seconds`` while bots run (both in the calling thread): when it answers False the
    bots stop before their next request (their results say so). Anything raised meanwhile
    in the calling thread (KeyboardInterrupt included, or an error of ``on_result``) stops
    the bots too, and is raised again once all of them have stopped."""
    stop = threading.Event()
    bots = [
        Bot(
            number,
            persona,
            view,
            settings,
            np.random.default_rng([seed, number]),
            htmx=number % 2 == 0,
            stop=stop,
        )
        for number, persona in enumerate(personas, start=1)
    ]
    results: dict[int, BotResult] = {}
    pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="pilot")
    try:
        pending: set[Future[BotResult]] = {pool.submit(bot.run, entry_url) for bot in bots}
        asked = time.monotonic()
        while pending:
            done, pending = wait(pending, timeout=tick_seconds, return_when=FIRST_COMPLETED)
            for future in done:
                result = future.result()
                results[result.number] = result
                if on_result is not None:
                    on_result(result)
            if keep_going is None or stop.is_set() or time.monotonic() - asked < tick_seconds:
                continue
            asked = time.monotonic()
            if pending and not keep_going():
                stop.set()
    except BaseException:
        stop.set()
        raise
    finally:
        # Bots not started are dropped; the running ones end at their next request (at
        # most one HTTP timeout away). Waits for them even when interrupted.
        _shutdown(pool)
    return [results[bot.result.number] for bot in bots]


def _shutdown(pool: ThreadPoolExecutor) -> None:
    """Wait for every bot thread to stop, even through a second Ctrl-C (the bots are
    stopping already; their clean-up must not start before they have)."""
    while True:
        try:
            pool.shutdown(wait=True, cancel_futures=True)
            return
        except KeyboardInterrupt:
            continue
