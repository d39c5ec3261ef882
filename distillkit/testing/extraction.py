"""Seeded JSON-extraction traffic: customer messages and the exact JSON a teacher extracts from them.

Each record is one request of a single extraction task (the fixed :data:`SYSTEM` prompt, one user
message) and the teacher's answer: a JSON object with the keys of :data:`FIELDS`, ``null`` for
what the message does not say. Values are written in many forms and normalised in the answer:

* amounts as ``45.20``, ``1,200.00`` or ``7`` (a JSON number in the answer);
* currencies as ISO codes, symbols or words (``$``, ``euros``, ``GBP``; the ISO code in the
  answer), or not at all (``null``); ``dollars`` alone means US dollars;
* dates as ``2026-03-04``, ``4 March 2026``, ``March 4, 2026``, ``March 4`` (this year, 2026),
  ``03/04/2026`` (month first) or ``4 Mar 2026`` (``YYYY-MM-DD`` in the answer);
* order ids as ``AB-12345``, ``#784512`` (``"784512"`` in the answer), ``ORD2026-0042`` or
  ``10048213``;
* the customer's name as an introduction or a signature; the intent, one of :data:`INTENTS`,
  from the template.

A share of requests is off-task (opening hours, jokes, the weather) with the same system prompt;
the teacher answers them :data:`OFF_TASK_ANSWER`. Standard library only.

Every text belongs to one split, decided by a hash of the text itself, so no train set shares a
message with any test set, whatever their seeds::

    train = extraction.messages(seed=0, n=400)
    test = extraction.messages(seed=0, n=200, split="test")
    with Simulator(answer=extraction.teacher(train + test)) as sim:
        ...
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from distillkit.testing.simulator.answers import AnswerFn, Reply

__all__ = [
    "AMOUNT_FORMS",
    "CURRENCIES",
    "CURRENCY_FORMS",
    "DATE_FORMS",
    "FIELDS",
    "INTENTS",
    "MONTHS",
    "NAME_FORMS",
    "OFF_TASK_ANSWER",
    "ORDER_FORMS",
    "SYSTEM",
    "THIS_YEAR",
    "Extraction",
    "Split",
    "fields_matching",
    "messages",
    "same_json",
    "split_of",
    "teacher",
]

#: The one system prompt of every request, on-task or not. Short: the student reads (and is
#: trained on) every token of it with every request.
SYSTEM = (
    "Extract JSON with keys name, amount, currency, date, order_id, intent. Currency as ISO code, "
    'date as YYYY-MM-DD, null if absent. If it is no such request, answer {"error": "not an extraction request"}.'
)
#: The keys of an on-task answer, in the order the teacher writes them.
FIELDS = ("name", "amount", "currency", "date", "order_id", "intent")
#: The teacher's answer to an off-task request.
OFF_TASK_ANSWER: Mapping[str, Any] = {"error": "not an extraction request"}
#: The intents of on-task requests.
INTENTS = ("refund", "double_charge", "missing_delivery", "cancel_order", "wrong_amount", "damaged_item")

#: How a field can be written (``absent``: not in the message, ``null`` in the answer).
NAME_FORMS = ("intro", "signature", "absent")
AMOUNT_FORMS = ("decimal", "thousands", "integer", "absent")
CURRENCY_FORMS = ("code", "symbol", "word", "absent")
DATE_FORMS = ("iso", "day_month_year", "month_day_year", "month_day", "slash", "abbreviated", "absent")
ORDER_FORMS = ("dash", "hash", "prefixed", "digits", "absent")

#: ISO code: (symbol or None, word).
CURRENCIES: Mapping[str, tuple[str | None, str]] = {
    "USD": ("$", "dollars"),
    "EUR": ("€", "euros"),
    "GBP": ("£", "pounds"),
    "JPY": ("¥", "yen"),
    "CHF": (None, "Swiss francs"),
    "CAD": ("C$", "Canadian dollars"),
    "AUD": ("A$", "Australian dollars"),
    "INR": ("₹", "rupees"),
}
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
#: The year a date written without one falls in.
THIS_YEAR = 2026

Split = Literal["train", "test"]

# Templates: ``[...]`` holds one optional field, left out with its words when the field is absent.
_TEMPLATES: Mapping[str, tuple[str, ...]] = {
    "refund": (
        "I returned my package[ on {date}] and still have not received my refund[ of {amount}][ for order {order}].",
        "Please refund my payment[ of {amount}][ for order {order}][ from {date}].",
        "[Order {order}: ]I would like my money back[, {amount}][, purchased {date}].",
        "Can I get a refund[ for {order}]? I paid[ {amount}][ on {date}] and the item does not fit.",
        "Where is my refund[ of {amount}]? I sent the item back[ on {date}][ (order {order})].",
    ),
    "double_charge": (
        "I was charged[ {amount}] twice[ on {date}][ for order {order}].",
        "My card shows two identical payments[ of {amount}][ from {date}][ for {order}]. Please remove one.",
        "You billed me two times[ for order {order}][, {amount} each][ on {date}].",
        "There is a duplicate charge[ of {amount}] on my statement[ dated {date}][ for order {order}].",
        "Why did I pay twice[ for order {order}]?[ Both payments were {amount}.][ They went through on {date}.]",
    ),
    "missing_delivery": (
        "My order[ {order}] has not arrived yet[, it was due {date}].",
        "The parcel[ for order {order}] never came[ although I paid {amount}][ on {date}].",
        "Tracking says delivered[ on {date}] but nothing is at my door.[ Order {order}.][ Value {amount}.]",
        "Still waiting for my delivery[ ({order})][, ordered {date}]. What is going on?",
        "Package missing![ Order {order}.][ Shipped {date}.][ I paid {amount}.]",
    ),
    "cancel_order": (
        "Please cancel my order[ {order}][ placed on {date}].",
        "I want to cancel[ order {order}] before it ships[ and get my {amount} back].",
        "Cancel[ {order}] please, I ordered it by mistake[ on {date}].",
        "I changed my mind about the purchase[ of {amount}][ from {date}][ (order {order})], please cancel it.",
        "Stop my order[ {order}] from being sent[, I placed it {date}].",
    ),
    "wrong_amount": (
        "I was charged[ {amount}] but the price was lower[ for order {order}].",
        "The total on my receipt[ for {order}] is wrong[: it says {amount}][, dated {date}].",
        "You took[ {amount}] instead of the advertised price[ on {date}][ for order {order}].",
        "My invoice[ from {date}] shows the wrong amount[, {amount}][, order {order}].",
    ),
    "damaged_item": (
        "The item[ from order {order}] arrived broken[ on {date}][; I paid {amount}].",
        "My package[ {order}] came damaged[ on {date}] and I want a replacement.",
        "Received a cracked screen[ on {date}][, order {order}][, cost {amount}].",
        "Everything in the box was smashed[ (order {order})].[ It cost {amount}.]",
    ),
}
_OFF_TASK_TEMPLATES = (
    "What time do you open on {day}?",
    "Are you open on {day}?",
    "Tell me a joke about {thing}.",
    "What is the weather like in {city} today?",
    "Can you recommend a good book about {thing}?",
    "Write a short poem about {thing}.",
    "How do I say {word} in {language}?",
    "Who won the football match in {city} last night?",
    "Do you have any jobs open in {city}?",
    "Is there a shop of yours near {city} station?",
    "Translate '{word}' into {language}.",
    "What is a good recipe with {food}?",
    "How tall is the tallest building in {city}?",
    "What should I cook with {food} tonight?",
    "Do you sell gift cards on {day}?",
)
_OFF_TASK_SLOTS: Mapping[str, tuple[str, ...]] = {
    "day": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday", "public holidays"),
    "thing": ("cats", "penguins", "the sea", "autumn", "robots", "coffee", "trains", "mountains", "bicycles", "rain"),
    "city": ("Paris", "Leeds", "Osaka", "Toronto", "Lyon", "Denver", "Porto", "Dublin", "Munich", "Perth"),
    "word": ("thank you", "good morning", "library", "umbrella", "friendship", "butterfly"),
    "language": ("French", "Spanish", "German", "Japanese", "Italian", "Dutch"),
    "food": ("lentils", "salmon", "mushrooms", "spinach", "chickpeas", "tofu", "leeks", "rice"),
}
_OFF_TASK_OPENINGS = ("", "Hi! ", "Quick question: ", "Hello. ", "Sorry to bother you. ")
_OPENINGS = ("", "", "Hi. ", "Hello, team. ", "Good morning. ", "Hello there! ")
_INTROS = ("This is {name}. ", "{name} here. ", "My name is {name}. ")
_SIGNATURES = (" Thanks, {name}", " - {name}", " Regards, {name}", " {name}")
_FIRST = (
    "Maria", "James", "Aisha", "Chen", "Lucas", "Priya", "Tom", "Fatima", "Olga", "Diego", "Hannah", "Kenji",
    "Sofia", "Omar", "Emma", "Noah", "Ines", "Ravi", "Grace", "Mateo", "Zoe", "Ahmed", "Lena", "Sam",
)  # fmt: skip
_LAST = (
    "Lopez", "Smith", "Khan", "Wang", "Martin", "Patel", "Brown", "Haddad", "Ivanova", "Garcia", "Muller",
    "Tanaka", "Rossi", "Farah", "Wilson", "Dubois", "Silva", "Sharma", "Kelly", "Nowak", "Berg", "Okafor",
)  # fmt: skip
_SEGMENT = re.compile(r"\[([^\[\]]*)\]")
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
# Chance that a field a template can hold is left out of the message.
_ABSENT = {"name": 0.25, "amount": 0.25, "currency": 0.12, "date": 0.3, "order": 0.25}


@dataclass(frozen=True)
class Extraction:
    """One request and the teacher's answer to it.

    Attributes:
        text: The user's message (the system prompt is always :data:`SYSTEM`).
        answer: The teacher's answer: :data:`FIELDS` (``None`` where absent) or :data:`OFF_TASK_ANSWER`.
        off_task: Whether the message is not an extraction request.
        forms: How each field of :data:`FIELDS` but ``intent`` is written (one of ``NAME_FORMS``,
            ``AMOUNT_FORMS`` ...); empty for an off-task request.
        template: Which template made the text, as ``"intent/index"`` or ``"off_task/index"``.
    """

    text: str
    answer: Mapping[str, Any]
    off_task: bool
    forms: Mapping[str, str]
    template: str

    @property
    def content(self) -> str:
        """The teacher's reply text: ``answer`` as JSON."""
        return json.dumps(self.answer)

    @property
    def chat(self) -> list[dict[str, str]]:
        """The request's ``messages``: the system prompt and the user's text."""
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": self.text}]


def split_of(text: str) -> Split:
    """The split a message text belongs to (half each, by a hash of the text)."""
    return "test" if hashlib.sha256(text.encode()).digest()[0] & 1 else "train"


def messages(seed: int, n: int, *, split: Split = "train", off_task: float = 0.1) -> list[Extraction]:
    """``n`` distinct requests of ``split``, ``round(n * off_task)`` of them off-task, in a seeded order.

    Args:
        seed: The same seed and arguments give the same records.
        n: How many.
        split: ``"train"`` or ``"test"``: the two never share a text, whatever the seeds.
        off_task: The share of off-task requests.

    Raises:
        ValueError: ``n`` or ``off_task`` out of range, or too few distinct texts to draw from.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r}: use 'train' or 'test'")
    if n < 0 or not 0.0 <= off_task <= 1.0:
        raise ValueError(f"need n >= 0 and 0 <= off_task <= 1, got n={n}, off_task={off_task}")
    rng = random.Random(f"distillkit.extraction/{split}/{seed}")
    off = set(rng.sample(range(n), round(n * off_task)))
    seen: set[str] = set()
    out: list[Extraction] = []
    for i in range(n):
        make = _off_task if i in off else _on_task
        for _ in range(10_000):
            record = make(rng)
            if record.text not in seen and split_of(record.text) == split:
                break
        else:
            raise ValueError(f"too few distinct {split} texts for {n} requests")
        seen.add(record.text)
        out.append(record)
    return out


def teacher(records: Iterable[Extraction]) -> AnswerFn:
    """An answer function for :class:`~distillkit.testing.Simulator`: each record's answer, by its text.

    A request whose last user message is none of the records' texts raises :class:`LookupError`
    (the simulator then answers HTTP 500): a benchmark must not measure against an invented answer.
    """
    answers = {record.text: record.content for record in records}

    def answer(request: dict[str, Any]) -> Reply:
        users = [m for m in request.get("messages") or [] if isinstance(m, dict) and m.get("role") == "user"]
        text = users[-1].get("content") if users else None
        if not isinstance(text, str) or text not in answers:
            raise LookupError(f"no extraction record has the text {text!r}")
        return Reply(content=answers[text])

    return answer


def fields_matching(content: str | None, expected: Mapping[str, Any]) -> int:
    """How many of ``expected``'s keys a reply's JSON object has with an equal value (0 if not an object)."""
    try:
        got = json.loads(content or "")
    except ValueError:
        return 0
    if not isinstance(got, dict):
        return 0
    return sum(key in got and _same(got[key], value) for key, value in expected.items())


def same_json(content: str | None, expected: Mapping[str, Any]) -> bool:
    """Whether a reply's JSON object equals ``expected``: the same keys, equal values."""
    try:
        got = json.loads(content or "")
    except ValueError:
        return False
    return isinstance(got, dict) and set(got) == set(expected) and fields_matching(content, expected) == len(expected)


def _same(a: Any, b: Any) -> bool:
    # JSON's 7 and 7.0 are one number, but true is not 1.
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return bool(a == b)


def _on_task(rng: random.Random) -> Extraction:
    intent = rng.choice(INTENTS)
    index = rng.randrange(len(_TEMPLATES[intent]))
    template = _TEMPLATES[intent][index]
    holds = set(_PLACEHOLDER.findall(template))
    answer: dict[str, Any] = dict.fromkeys(FIELDS)
    answer["intent"] = intent
    forms = dict.fromkeys(("name", "amount", "currency", "date", "order_id"), "absent")
    values: dict[str, str] = {}
    if "amount" in holds and rng.random() >= _ABSENT["amount"]:
        values["amount"], answer["amount"], answer["currency"], forms["amount"], forms["currency"] = _money(rng)
    if "date" in holds and rng.random() >= _ABSENT["date"]:
        values["date"], answer["date"], forms["date"] = _date(rng)
    if "order" in holds and rng.random() >= _ABSENT["order"]:
        values["order"], answer["order_id"], forms["order_id"] = _order(rng)

    def segment(match: re.Match[str]) -> str:
        names = _PLACEHOLDER.findall(match.group(1))
        return match.group(1) if all(name in values for name in names) else ""

    body = _SEGMENT.sub(segment, template).format(**values)
    intro = signature = ""
    if rng.random() >= _ABSENT["name"]:
        name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
        answer["name"] = name
        if rng.random() < 0.5:
            forms["name"], intro = "intro", rng.choice(_INTROS).format(name=name)
        else:
            forms["name"], signature = "signature", rng.choice(_SIGNATURES).format(name=name)
    text = rng.choice(_OPENINGS) + intro + body + signature
    return Extraction(text, answer, False, forms, f"{intent}/{index}")


def _money(rng: random.Random) -> tuple[str, int | float, str | None, str, str]:
    """(text, amount, ISO code or None, amount form, currency form)."""
    code = rng.choice(list(CURRENCIES))
    whole_only = code == "JPY"  # yen have no cents
    form = rng.choice(("thousands", "integer") if whole_only else ("decimal", "thousands", "integer"))
    if form == "decimal":
        cents = rng.randrange(100, 100_000)
        written = f"{cents / 100:.2f}"
    elif form == "thousands":
        cents = rng.randrange(1_000, 100_000) * 100 if whole_only else rng.randrange(100_000, 1_000_000)
        written = f"{cents // 100:,}" if whole_only else f"{cents // 100:,}.{cents % 100:02d}"
    else:
        cents = rng.randrange(1, 1000) * 100
        written = str(cents // 100)
    amount: int | float = cents // 100 if cents % 100 == 0 else cents / 100
    symbol, word = CURRENCIES[code]
    style = rng.choice(("code", "symbol", "word"))
    if rng.random() < _ABSENT["currency"]:
        return written, amount, None, form, "absent"
    if style == "symbol" and symbol is not None:
        return f"{symbol}{written}", amount, code, form, "symbol"
    if style == "word":
        return f"{written} {word}", amount, code, form, "word"
    text = f"{code} {written}" if rng.random() < 0.5 else f"{written} {code}"
    return text, amount, code, form, "code"


def _date(rng: random.Random) -> tuple[str, str, str]:
    """(text, ISO date, form)."""
    form = rng.choice(DATE_FORMS[:-1])
    year = THIS_YEAR if form == "month_day" else rng.choice((THIS_YEAR - 1, THIS_YEAR))
    month, day = rng.randrange(1, 13), rng.randrange(1, 29)
    name = MONTHS[month - 1]
    written = {
        "iso": f"{year}-{month:02d}-{day:02d}",
        "day_month_year": f"{day} {name} {year}",
        "month_day_year": f"{name} {day}, {year}",
        "month_day": f"{name} {day}",
        "slash": f"{month:02d}/{day:02d}/{year}",
        "abbreviated": f"{day} {name[:3]} {year}",
    }[form]
    return written, f"{year}-{month:02d}-{day:02d}", form


def _order(rng: random.Random) -> tuple[str, str, str]:
    """(text, order id in the answer, form)."""
    form = rng.choice(ORDER_FORMS[:-1])
    if form == "dash":
        letters = "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(2))
        order = f"{letters}-{rng.randrange(10_000, 100_000)}"
        return order, order, form
    if form == "hash":
        digits = str(rng.randrange(100_000, 1_000_000))
        return f"#{digits}", digits, form
    if form == "prefixed":
        order = f"ORD{rng.choice((THIS_YEAR - 1, THIS_YEAR))}-{rng.randrange(1, 10_000):04d}"
        return order, order, form
    order = str(rng.randrange(10_000_000, 100_000_000))
    return order, order, form


def _off_task(rng: random.Random) -> Extraction:
    index = rng.randrange(len(_OFF_TASK_TEMPLATES))
    template = _OFF_TASK_TEMPLATES[index]
    values = {slot: rng.choice(_OFF_TASK_SLOTS[slot]) for slot in _PLACEHOLDER.findall(template)}
    text = rng.choice(_OFF_TASK_OPENINGS) + template.format(**values)
    return Extraction(text, dict(OFF_TASK_ANSWER), True, {}, f"off_task/{index}")
