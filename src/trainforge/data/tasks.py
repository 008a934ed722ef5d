"""Bundled tasks the project generates itself (seeded), so every demo and test runs offline."""

from __future__ import annotations

import calendar
import json
import random
import re
from typing import Callable

from trainforge.errors import ConfigError

MONTHS = list(calendar.month_name)[1:]
ORDINAL = {1: "st", 2: "nd", 3: "rd", 21: "st", 22: "nd", 23: "rd", 31: "st"}

DATE_FORMATS: list[Callable[[int, int, int], str]] = [
    lambda y, m, d: f"{MONTHS[m - 1]} {d}, {y}",
    lambda y, m, d: f"{d} {MONTHS[m - 1]} {y}",
    lambda y, m, d: f"{MONTHS[m - 1][:3]}. {d}{ORDINAL.get(d, 'th')}, {y}",
    lambda y, m, d: f"the {d}{ORDINAL.get(d, 'th')} of {MONTHS[m - 1]}, {y}",
    lambda y, m, d: f"{y}-{m:02d}-{d:02d}",
    lambda y, m, d: f"{MONTHS[m - 1]} {d}{ORDINAL.get(d, 'th')} {y}",
    lambda y, m, d: f"{d:02d}.{m:02d}.{y}",
]
SENTENCES = [
    "The invoice is due on {date}.",
    "We first met on {date} at the conference in Lyon.",
    "Her flight leaves on {date}, early in the morning.",
    "The contract was signed on {date} by both parties.",
    "Please send the report before {date}.",
    "On {date} the store reopened after renovation.",
    "The package was delivered on {date}, two days late.",
    "Our next team offsite is planned for {date}.",
    "He was born on {date} in a small town.",
    "The warranty expires on {date}.",
    "Registration closes on {date} at midnight.",
    "The museum exhibit opened to the public on {date}.",
]
DATES_INSTRUCTION = (
    'Extract the date mentioned in the text as JSON with integer fields "year", "month" and "day". '
    "Answer with the JSON only."
)


def random_date(rng: random.Random) -> tuple[int, int, int]:
    """A valid (year, month, day) between 1950 and 2035; draws from `rng` in a fixed order (seeded tasks)."""
    y, m = rng.randint(1950, 2035), rng.randint(1, 12)
    return y, m, rng.randint(1, calendar.monthrange(y, m)[1])


def dates_json(n: int, seed: int) -> list[dict]:
    """Free-text dates in seven formats → {"year": .., "month": .., "day": ..}. Chat rows, exactly checkable."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        y, m, d = random_date(rng)
        text = rng.choice(SENTENCES).format(date=rng.choice(DATE_FORMATS)(y, m, d))
        answer = json.dumps({"year": y, "month": m, "day": d})
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"{DATES_INSTRUCTION}\nText: {text}"},
                    {"role": "assistant", "content": answer},
                ]
            }
        )
    return rows


def dates_json_reward(prompt: str, completion: str) -> float:
    """A program reward for dates-json answers, graded so that RL has a slope to climb: 0.25 for a complete JSON
    object, +0.25 for each `"year"` / `"month"` / `"day"` key with an integer in range, found even in a cut-short
    answer (1.0 = well-formed, not necessarily the right date)."""
    text = completion.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()
    try:
        score = 0.25 if isinstance(json.loads(text), dict) else 0.0
    except json.JSONDecodeError:
        score = 0.0
    for key, (lo, hi) in {"year": (1, 9999), "month": (1, 12), "day": (1, 31)}.items():
        found = re.search(rf'"{key}"\s*:\s*(\d+)', text)
        score += 0.25 if found and lo <= int(found.group(1)) <= hi else 0.0
    return score


# Support tickets: each topic has its own phrases; a ticket is a template filled with one or two topic phrases,
# product names and filler, so a bag of words separates the topics but single words can mislead.
TICKET_TOPICS: dict[str, list[str]] = {
    "billing": [
        "I was charged twice",
        "the invoice amount is wrong",
        "I need a refund",
        "my card was declined",
        "the subscription price went up",
        "please cancel the extra charge",
        "the receipt shows a wrong tax",
        "I want to change my payment method",
    ],
    "shipping": [
        "my parcel has not arrived",
        "the tracking number does not work",
        "the delivery is late",
        "the box arrived damaged",
        "can I change the delivery address",
        "the courier left it at the wrong door",
        "shipping costs were too high",
        "the order is stuck in customs",
    ],
    "technical": [
        "the app crashes on start",
        "I get an error code 500",
        "the page does not load",
        "sync stopped working",
        "the update broke the login screen",
        "the device will not connect to wifi",
        "the export button does nothing",
        "notifications no longer appear",
    ],
    "account": [
        "I cannot reset my password",
        "please delete my account",
        "I want to change my email address",
        "my account was locked",
        "two factor codes never arrive",
        "someone else logged into my profile",
        "how do I merge two accounts",
        "my username is already taken",
    ],
}
TICKET_PRODUCTS = [
    "the Nimbus plan",
    "the Atlas router",
    "order 4471",
    "the mobile app",
    "my Pro license",
    "the desktop client",
    "the starter kit",
    "the family bundle",
]
TICKET_TEMPLATES = [
    "Hello, {a} for {product}. Can you help?",
    "{a}. This is about {product}.",
    "Hi team, regarding {product}: {a}, and honestly I am getting frustrated.",
    "Quick question about {product} - {a}.",
    "Since yesterday {a}. I use {product}.",
    "Good morning. {a}. Thanks in advance.",
]
TICKET_TWO = [
    "Two problems with {product}: {a}, and also {b}.",
    "{a}. On top of that {b}. This concerns {product}.",
]
# The same topics in another domain (a hospital's patient portal): different words, same labels.
SHIFT_TOPICS: dict[str, list[str]] = {
    "billing": [
        "my insurance claim was rejected",
        "the co-payment was billed twice",
        "the hospital bill lists a scan I never had",
        "I need an itemised statement for my insurer",
        "the clinic charged me a no-show fee",
    ],
    "shipping": [
        "my prescription refill never came in the post",
        "the pharmacy courier missed me",
        "the medication package arrived opened",
        "the home test kit is lost in the mail",
        "the insulin delivery was not refrigerated",
    ],
    "technical": [
        "the patient portal shows a blank screen",
        "the video consultation keeps freezing",
        "lab results will not download",
        "the appointment booking form throws an error",
        "the health app drains my battery",
    ],
    "account": [
        "I cannot log into the patient portal",
        "please link my child's record to my login",
        "my date of birth is wrong in my profile",
        "the portal locked me out after a password change",
        "I want to close my patient account",
    ],
}
SHIFT_PRODUCTS = ["Dr. Rao's clinic", "my last check-up", "the cardiology ward", "ref. PT-2290", "the pharmacy app"]
SHIFT_TEMPLATES = [
    "Dear patient services, {a} ({product}).",
    "Regarding {product}: {a}. Please advise.",
    "{a}, concerning {product}. Kind regards.",
    "Hello, {a}. I was told to write here about {product}.",
]


def _tickets(
    n: int, seed: int, topics: dict[str, list[str]], products: list[str], templates: list[str], multi: bool
) -> list[dict]:
    rng = random.Random(seed)
    names = list(topics)
    rows = []
    for _ in range(n):
        if multi and rng.random() < 0.4:
            labels = sorted(rng.sample(names, 2))
            a, b = (rng.choice(topics[t]) for t in rng.sample(labels, 2))
            text = rng.choice(TICKET_TWO).format(a=a, b=b, product=rng.choice(products))
        else:
            labels = [rng.choice(names)]
            text = rng.choice(templates).format(a=rng.choice(topics[labels[0]]), product=rng.choice(products))
        text = text[0].upper() + text[1:]
        rows.append({"text": text, "labels": labels} if multi else {"text": text, "label": labels[0]})
    return rows


def support_tickets(n: int, seed: int) -> list[dict]:
    """Customer-support tickets → one topic of billing / shipping / technical / account."""
    return _tickets(n, seed, TICKET_TOPICS, TICKET_PRODUCTS, TICKET_TEMPLATES, multi=False)


def support_tickets_multi(n: int, seed: int) -> list[dict]:
    """The same tickets, 40% of them raising two topics: rows carry a `labels` list."""
    return _tickets(n, seed, TICKET_TOPICS, TICKET_PRODUCTS, TICKET_TEMPLATES, multi=True)


def support_tickets_shift(n: int, seed: int) -> list[dict]:
    """The same four labels in another domain (a hospital's patient portal), for domain adaptation."""
    return _tickets(n, seed, SHIFT_TOPICS, SHIFT_PRODUCTS, SHIFT_TEMPLATES, multi=False)


# Triage: each ticket also says how urgent it is (a phrase per urgency level) and carries the hours a fix took,
# which follow from the topic and the urgency (plus noise): a second classification target and a regression target.
URGENCY_PHRASES: dict[str, list[str]] = {
    "low": ["No rush on this.", "Whenever you find the time.", "This can wait until next week."],
    "normal": ["Please look into it.", "Let me know what you find.", "I would appreciate an update."],
    "high": ["This is urgent!", "Please fix this ASAP, we are losing money.", "Our whole team is blocked right now."],
}
TOPIC_HOURS = {"billing": 6.0, "shipping": 30.0, "technical": 16.0, "account": 3.0}
URGENCY_FACTOR = {"low": 2.0, "normal": 1.0, "high": 0.4}


def support_tickets_triage(n: int, seed: int) -> list[dict]:
    """Support tickets with three targets: `label` (topic), `urgency` (low / normal / high, said in the text) and
    `hours` to resolve (a number: the topic's base hours × an urgency factor + noise)."""
    rng = random.Random(seed + 1)  # apart from the ticket stream, so the texts match `support-tickets`
    rows = []
    for row in support_tickets(n, seed):
        urgency = rng.choice(list(URGENCY_PHRASES))
        hours = TOPIC_HOURS[row["label"]] * URGENCY_FACTOR[urgency] + rng.gauss(0, 1.0)
        rows.append(
            {
                "text": f"{row['text']} {rng.choice(URGENCY_PHRASES[urgency])}",
                "label": row["label"],
                "urgency": urgency,
                "hours": round(max(hours, 0.5), 1),
            }
        )
    return rows


# Constrained answers: short profiles, and questions whose answer must meet a constraint a program checks
# (a JSON object with exactly the requested keys, or a word limit). The chosen answer meets it, the rejected
# one is a plausible answer that does not.
FIRST_NAMES = [
    "Alice",
    "Bruno",
    "Chen",
    "Dara",
    "Emil",
    "Fatima",
    "Goran",
    "Hana",
    "Ivo",
    "Julia",
    "Kofi",
    "Lena",
    "Mateo",
    "Nora",
    "Omar",
    "Petra",
    "Quinn",
    "Rosa",
    "Sven",
    "Tara",
]
CITIES = ["Paris", "Lagos", "Osaka", "Lima", "Oslo", "Cairo", "Denver", "Porto", "Hanoi", "Quito", "Perth", "Riga"]
JOBS = ["baker", "nurse", "pilot", "teacher", "plumber", "chemist", "florist", "lawyer", "welder", "librarian"]
PROFILE_TEMPLATES = [
    "{name} is {age} years old, lives in {city} and works as a {job}.",
    "Born {age} years ago, {name} now works as a {job} in {city}.",
    "{name}, a {job} aged {age}, moved to {city} last spring.",
    "In {city} you can meet {name}, who is {age} and earns a living as a {job}.",
]
PROFILE_KEYS = ["name", "age", "city", "job"]


def _json_keys_pair(rng: random.Random, profile: dict, text: str) -> tuple[str, str, str, dict]:
    keys = sorted(rng.sample(PROFILE_KEYS, rng.randint(2, 3)), key=PROFILE_KEYS.index)
    quoted = " and ".join(", ".join(f'"{k}"' for k in keys).rsplit(", ", 1))
    prompt = f"Reply with only a JSON object with exactly the keys {quoted}.\nText: {text}"
    chosen = json.dumps({k: profile[k] for k in keys})
    others = [k for k in PROFILE_KEYS if k not in keys]
    rejected = rng.choice(
        [
            f"{profile['name']} is a {profile['job']} from {profile['city']}.",  # prose, no JSON
            json.dumps({k: profile[k] for k in keys[:-1]}),  # a key missing
            json.dumps({k: profile[k] for k in PROFILE_KEYS if k in keys or k == others[0]}),  # an extra key
            f"Here is the JSON: {chosen}",  # text around the object
        ]
    )
    return prompt, chosen, rejected, {"kind": "json_keys", "keys": keys}


def _max_words_pair(rng: random.Random, profile: dict, text: str) -> tuple[str, str, str, dict]:
    limit = rng.randint(3, 6)
    field, question = rng.choice([("job", "what does {name} do for a living"), ("city", "where does {name} live")])
    question = question.format(**profile)
    prompt = f"In at most {limit} words, {question}?\nText: {text}"
    sentence = (
        f"{profile['name']} is a {profile['job']}."
        if field == "job"
        else f"{profile['name']} lives in {profile['city']}."
    )
    if len(sentence.split()) > limit:
        # The full sentence is the near miss a tuned model makes (one word over): the pair teaches exactly that.
        chosen = f"A {profile['job']}." if field == "job" else f"In {profile['city']}."
        rejected = sentence
    else:
        chosen = sentence
        rejected = f"According to the text, {profile['name']}, who is {profile['age']} years old, " + (
            f"works as a {profile['job']} in {profile['city']}."
            if field == "job"
            else f"lives in {profile['city']} and works as a {profile['job']}."
        )
    return prompt, chosen, rejected, {"kind": "max_words", "max_words": limit}


def constrained_answers(n: int, seed: int) -> list[dict]:
    """Preference pairs whose prompts carry a checkable constraint: `satisfies` scores any model's answers."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        profile = {
            "name": rng.choice(FIRST_NAMES),
            "age": rng.randint(19, 75),
            "city": rng.choice(CITIES),
            "job": rng.choice(JOBS),
        }
        text = rng.choice(PROFILE_TEMPLATES).format(**profile)
        prompt, chosen, rejected, constraint = rng.choice([_json_keys_pair, _max_words_pair])(rng, profile, text)
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "constraint": constraint})
    return rows


def satisfies(row: dict, answer: str) -> bool:
    """Whether an answer meets the constraint of its prompt row (`row["constraint"]`)."""
    constraint = row["constraint"]
    answer = answer.strip()
    if constraint["kind"] == "json_keys":
        try:
            value = json.loads(answer)
        except json.JSONDecodeError:
            return False
        return isinstance(value, dict) and sorted(value) == sorted(constraint["keys"])
    if constraint["kind"] == "max_words":
        return 0 < len(answer.split()) <= constraint["max_words"]
    raise ValueError(f"unknown constraint kind {constraint['kind']!r}")


def reverse_letters(n: int, seed: int) -> list[dict]:
    """Strings of 3-8 letters from a-j → the same letters reversed (a sequence-to-sequence task)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        word = "".join(rng.choice("abcdefghij") for _ in range(rng.randint(3, 8)))
        rows.append({"source": word, "target": word[::-1]})
    return rows


def dates_iso(n: int, seed: int) -> list[dict]:
    """A date in one of seven formats (e.g. "March 5, 2021") → ISO 8601 ("2021-03-05")."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        y, m, d = random_date(rng)
        rows.append({"source": rng.choice(DATE_FORMATS)(y, m, d), "target": f"{y}-{m:02d}-{d:02d}"})
    return rows


def _function(name: str, description: str, properties: dict, required: list[str]) -> dict:
    parameters = {"type": "object", "properties": properties, "required": required}
    return {"type": "function", "function": {"name": name, "description": description, "parameters": parameters}}


UNITS = {  # unit → the words a prompt uses for it; conversions go between the units of one pair
    "km": ["km", "kilometers"],
    "miles": ["miles"],
    "kg": ["kg", "kilograms"],
    "pounds": ["pounds", "lbs"],
    "celsius": ["degrees Celsius", "°C"],
    "fahrenheit": ["degrees Fahrenheit", "°F"],
    "liters": ["liters", "litres"],
    "gallons": ["gallons"],
}
UNIT_PAIRS = [("km", "miles"), ("kg", "pounds"), ("celsius", "fahrenheit"), ("liters", "gallons")]
TOOL_SPECS = [
    _function(
        "get_weather",
        "Current weather in a city.",
        {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        ["city"],
    ),
    _function(
        "convert_units",
        "Convert a value from one unit to another.",
        {"value": {"type": "number"}, "from_unit": {"enum": list(UNITS)}, "to_unit": {"enum": list(UNITS)}},
        ["value", "from_unit", "to_unit"],
    ),
    _function(
        "get_calendar_events",
        "The user's events on a date (YYYY-MM-DD).",
        {"date": {"type": "string"}},
        ["date"],
    ),
]
NO_TOOL_CHATS = [  # prompts that need no tool, with their answers
    ("Hi there!", "Hello! How can I help you today?"),
    ("What is the capital of France?", "The capital of France is Paris."),
    ("What is 7 times 8?", "7 times 8 is 56."),
    ("Thanks, that's all for now.", "You're welcome! Have a great day."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote Romeo and Juliet."),
    ("How many days are in a leap year?", "A leap year has 366 days."),
    ("What is a kilometer?", "A kilometer is a unit of length equal to 1,000 meters."),
    ("Can you tell me a fun fact?", "Octopuses have three hearts."),
    ("What does a calendar show?", "A calendar shows the days, weeks and months of a year."),
    ("Which planet is known as the Red Planet?", "Mars is known as the Red Planet."),
]


def _weather(rng: random.Random) -> tuple[str, dict]:
    city = rng.choice(CITIES)
    unit = rng.choice([None, None, "celsius", "fahrenheit"])
    ask = rng.choice(
        ["What's the weather in {city}?", "Is it raining in {city} right now?", "How warm is it in {city} today?"]
    ).format(city=city)
    if unit:
        ask = ask[:-1] + f", in {unit}?"
    return ask, {"city": city, **({"unit": unit} if unit else {})}


def _conversion(rng: random.Random) -> tuple[str, dict]:
    source, target = rng.sample(rng.choice(UNIT_PAIRS), 2)
    value = rng.choice([rng.randint(1, 500), round(rng.uniform(0.5, 100), 1)])
    ask = rng.choice(["Convert {v} {a} to {b}.", "How many {b} is {v} {a}?", "What is {v} {a} in {b}?"])
    text = ask.format(v=value, a=rng.choice(UNITS[source]), b=rng.choice(UNITS[target]))
    return text, {"value": value, "from_unit": source, "to_unit": target}


def _calendar(rng: random.Random) -> tuple[str, dict]:
    y, m, d = rng.randint(2025, 2027), rng.randint(1, 12), rng.randint(1, 28)
    day = rng.choice([DATE_FORMATS[0], DATE_FORMATS[1], DATE_FORMATS[4]])(y, m, d)
    ask = rng.choice(["What's on my calendar on {day}?", "Do I have meetings on {day}?", "Show my schedule for {day}."])
    return ask.format(day=day), {"date": f"{y}-{m:02d}-{d:02d}"}


TOOL_ASKS = {
    "get_weather": _weather,
    "convert_units": _conversion,
    "get_calendar_events": _calendar,
}


def tool_calls(n: int, seed: int) -> list[dict]:
    """Requests to a tool-using assistant (OpenAI chat rows with `tools`): one call (55%), two parallel calls to
    different functions (20%), or a prompt that needs no tool (25%). The answer is the calls, with JSON arguments
    that follow exactly from the prompt (units, cities, dates normalized), so every metric is exact."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        draw = rng.random()
        if draw < 0.25:
            prompt, answer = rng.choice(NO_TOOL_CHATS)
            reply: dict = {"role": "assistant", "content": answer}
        else:
            names = rng.sample(list(TOOL_ASKS), 2 if draw >= 0.8 else 1)
            asks = [(name, *TOOL_ASKS[name](rng)) for name in names]
            prompt = " Also, ".join(
                text if i == 0 else text[0].lower() + text[1:] for i, (_, text, _) in enumerate(asks)
            )
            calls = [
                {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
                for i, (name, _, args) in enumerate(asks, start=1)
            ]
            reply = {"role": "assistant", "tool_calls": calls}
        rows.append({"messages": [{"role": "user", "content": prompt}, reply], "tools": TOOL_SPECS})
    return rows


# Arithmetic word problems: one operation (add, take away, multiply) on small numbers, each row with its
# reference `answer` (RL rewards check it exactly; no answer is negative). The prompt holds one worked example (a
# 135M model follows a shown format far more often than a described one); it adds, so a model that copies the
# example rather than reading the problem gets the other two operations wrong, which is the skill RL has to teach.
# The assistant's turn works the problem the same way, so SFT can train on the same rows.
ARITHMETIC_INSTRUCTION = (
    "Solve the problem. Write the calculation inside <think></think>, then only the final number inside "
    "<answer></answer>."
)
ARITHMETIC_EXAMPLE = [
    {
        "role": "user",
        "content": f"{ARITHMETIC_INSTRUCTION}\nProblem: Ana has 4 pens and gets 3 more. How many pens does Ana have now?",
    },
    {"role": "assistant", "content": "<think>4 + 3 = 7</think>\n<answer>7</answer>"},
]
ITEMS = ["apples", "marbles", "stickers", "books", "coins", "pencils", "cookies", "stamps", "shells", "cards"]
# operation → (problem, its calculation, its answer)
ARITHMETIC_PROBLEMS: dict[str, tuple[str, str, Callable[[int, int], int]]] = {
    "add": (
        "{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?",
        "{a} + {b}",
        lambda a, b: a + b,
    ),
    "take away": (
        "{name} has {a} {item} and gives away {b}. How many {item} are left?",
        "{a} - {b}",
        lambda a, b: a - b,
    ),
    "multiply": (
        "{name} buys {b} boxes with {a} {item} in each box. How many {item} is that in all?",
        "{a} * {b}",
        lambda a, b: a * b,
    ),
}


def arithmetic(n: int, seed: int) -> list[dict]:
    """One-operation word problems (sum, difference, product) on small numbers with exact integer answers."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        template, calculation, solve = rng.choice(list(ARITHMETIC_PROBLEMS.values()))
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        if "-" in calculation:  # nobody gives away more than they have
            a += b
        problem = template.format(name=rng.choice(FIRST_NAMES), a=a, b=b, item=rng.choice(ITEMS))
        expression = calculation.format(a=a, b=b)
        answer = str(solve(a, b))
        rows.append(
            {
                "messages": [
                    *ARITHMETIC_EXAMPLE,
                    {"role": "user", "content": f"{ARITHMETIC_INSTRUCTION}\nProblem: {problem}"},
                    {
                        "role": "assistant",
                        "content": f"<think>{expression} = {answer}</think>\n<answer>{answer}</answer>",
                    },
                ],
                "answer": answer,
            }
        )
    return rows


TASKS: dict[str, tuple[str, Callable[[int, int], list[dict]]]] = {
    "dates-iso": ("seq2seq", dates_iso),
    "reverse-letters": ("seq2seq", reverse_letters),
    "constrained-answers": ("preference", constrained_answers),
    "dates-json": ("chat", dates_json),
    "arithmetic": ("chat", arithmetic),
    "tool-calls": ("chat", tool_calls),
    "support-tickets": ("classification", support_tickets),
    "support-tickets-multi": ("classification", support_tickets_multi),
    "support-tickets-shift": ("classification", support_tickets_shift),
    "support-tickets-triage": ("classification", support_tickets_triage),
}


def generate_task(name: str, n: int, seed: int) -> tuple[str, list[dict]]:
    """(format, rows) of a bundled task."""
    if name not in TASKS:
        raise ConfigError(f"Unknown bundled task `data.task` = {name!r}; expected one of {', '.join(TASKS)}.")
    fmt, make = TASKS[name]
    return fmt, make(n, seed)
