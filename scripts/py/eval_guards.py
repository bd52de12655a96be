"""Prototype of cachet's hit guards: deterministic checks that refuse a semantic-cache
candidate whose question differs from the query in what makes the answer differ.

A research tool: the Rust implementation in `policies/src/guards/` follows it. Every
check is symmetric and passes a text against itself. `check(cached, query)` returns
None (no objection) or (guard name, detail). The word lists are general English, not
fitted to any data set's sentences.
"""

import re

# Function words, politeness, fillers and hedges: a change among them alone never
# changes the answer.
IGNORABLE = set(
    """a an the this that these those my your our their his her its me us you i we it
    they them he she is are was were be been being am do does did doing done have has
    had having can could would should shall will may might must to of for in on at by
    with about as into onto from than so and or but if then also too just really very
    please thanks thank cheers hi hello hey hiya morning um uh erm er ah oh okay ok yeah
    yes yep well like actually basically sorry bother anyway kindly what how when where
    which who whom whose why there here any get got way possible able usually typically
    normally generally currently still again s t d ll re ve m""".split()
)

NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
    "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17,
    "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40,
    "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
    "hundred": 100, "thousand": 1000, "million": 1000000, "single": 1,
    "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
    "ninth": 9, "tenth": 10, "twice": 2, "dozen": 12,
}
# Named days, months and relative days: two different ones name different dates.
DATE_WORDS = set(
    """monday tuesday wednesday thursday friday saturday sunday weekday weekend
    january february march april june july august september october november december
    today tomorrow yesterday tonight""".split()
)
DATE_STEMS = None  # filled below, once stem() exists

NEGATORS = set("not no never without none nothing nobody nowhere neither nor non".split())
NEG_PREFIXES = ("un", "non", "in", "im", "il", "ir", "dis")

# Opposite ends of one scale or action.
ANTONYM_GROUPS = [
    ("on", "off"), ("in", "out"), ("up", "down"), ("enable", "disable"),
    ("allow permit", "ban forbid prohibit block"),
    ("include", "exclude except"),
    ("add extra", "remove take without"),
    ("increase raise higher bigger larger extend boost more", "decrease reduce lower smaller shorten less fewer"),
    ("most highest maximum", "least lowest minimum"),
    ("best", "worst"), ("good better", "bad worse"),
    ("hot warm", "cold cool"), ("busy", "quiet"), ("open", "close shut"),
    ("start begin", "stop end finish"), ("accept", "decline reject refuse"),
    ("grant give", "revoke withdraw"), ("join enrol enroll subscribe", "leave withdraw quit unsubscribe"),
    ("buy purchase", "sell"), ("lend", "borrow"), ("send", "receive"),
    ("import", "export"), ("upload", "download"), ("deposit", "withdraw"),
    ("arrive arrival", "depart departure"), ("before", "after"),
    ("early earlier", "late later"), ("first", "last"), ("old older", "new newer young younger"),
    ("safe", "dangerous"), ("legal lawful lawfully", "illegal unlawful unlawfully"),
    ("public", "private hide hidden"), ("cheap cheapest", "expensive"),
    ("pass", "fail"), ("win", "lose"), ("eat", "avoid"), ("improve", "damage worsen harm"),
    ("working", "fault faulty broken"), ("success successful", "failure unsuccessful"),
    ("inside", "outside"), ("within during", "after outside"), ("always", "never"),
    ("all every", "some"), ("same", "next different"), ("full", "part"),
]

# Words that make a question about harm or avoidance: on one side only, the two questions
# ask opposite things ("what should I eat" vs "what could interfere").
HAZARD_WORDS = "avoid prevent interfere harm harmful damage dangerous risk risky unsafe".split()

# Mutually exclusive alternatives (scope); words in one class separated by "|".
CONTRAST_SETS = [
    "economy business first premium",
    "free basic standard plus premium pro|professional business enterprise team",
    "domestic international long short",
    "employed self contractor agency freelance|freelancer",
    "home international|overseas|foreign eu",
    "online paper postal",
    "personal|sole|individual business joint",
    "undergraduate postgraduate",
    "basic higher additional",
    "member nonmember",
    "puppy kitten dog cat rabbit",
    "landlord tenant|renter homeowner|owner",
    "hand|cabin checked|hold",
    "red blue green yellow black white orange purple pink grey|gray brown silver gold",
    "iphone android ios windows linux mac|macos",
    "adult child|children|kid|kids baby|babies|infant teenager student senior|pensioner",
    "men|man|male|mens women|woman|female|womens boy girl",
    "weekday weekend",
]

# Near-synonyms: a one-word change between members of a group keeps the answer.
SYNONYM_GROUPS = [
    "start begin commence", "end finish", "update change amend edit modify alter",
    "make submit file lodge send", "get obtain receive request", "store shop",
    "grade result mark score", "mute silence", "fix repair mend", "buy purchase",
    "cancel terminate end", "close shut", "cost price charge fee", "phone call ring telephone",
    "big large", "small little", "quick fast", "help assist support", "show display",
    "delete remove erase", "book reserve", "choose pick select", "need require",
    "find locate", "reply respond answer", "use utilise utilize", "allowed permitted",
    "kid child", "car vehicle", "holiday vacation", "parcel package", "shipping delivery postage",
    "cleaning clean", "guest visitor", "email mail", "payment pay", "pm evening tonight",
    "am morning",
]


def split_words(text: str) -> list[tuple[str, bool, bool]]:
    """Words as (lower-case form, capitalised mid-sentence or acronym, sentence-initial).

    Digits and letters are split apart ("10MB" -> "10", "mb"); hyphens split words.
    """
    text = text.replace("’", "'")
    out = []
    initial = True
    letters = [c for c in text if c.isalpha()]
    shouted = bool(letters) and sum(c.isupper() for c in letters) / len(letters) > 0.6
    for m in re.finditer(r"\d+(?:[.,:]\d+)*|[A-Za-z]+(?:'[A-Za-z]+)?|[.?!%]", text):
        w = m.group(0)
        if w in ".?!":
            initial = True
            continue
        if w == "%":
            w = "percent"
        cap = False
        if w[0].isalpha() and not shouted:
            acronym = len(w) >= 2 and w.isupper()
            cap = acronym or (w[0].isupper() and not initial and w != "I" and not w.startswith("I'"))
        out.append((w, cap, initial))
        initial = False
    return out


def expand(word: str) -> list[str]:
    t = word.lower()
    if t == "cannot":
        return ["can", "not"]
    if t.endswith("n't"):
        base = t[:-3]
        return [{"ca": "can", "wo": "will", "sha": "shall"}.get(base, base), "not"]
    if "'" in t:
        return [t.partition("'")[0]]
    return [t]


def tokens(text: str) -> list[str]:
    return [t for w, _, _ in split_words(text) for t in expand(w)]



def entities(text: str) -> list[str]:
    return [expand(w)[0] for w, cap, _ in split_words(text) if cap and w.lower() not in ("ok",)]


def acronyms(text: str) -> set[str]:
    return {w.lower() for w, cap, _ in split_words(text) if cap and len(w) >= 2 and w.isupper()}


def spelled_out(acronym: str, ts: list[str]) -> bool:
    """True when consecutive words of ts start with the acronym's letters (PAC: porting
    authorisation code)."""
    n = len(acronym)
    return any(all(ts[i + k].startswith(acronym[k]) for k in range(n)) for i in range(len(ts) - n + 1))


def stem(t: str) -> str:
    """A light suffix stripper: plurals, -ing, -ed, final e, doubled final consonant."""
    for suf in ("ings", "ing", "ies", "es", "ed", "s"):
        if len(t) > len(suf) + 2 and t.endswith(suf):
            t = t[: -len(suf)] + ("y" if suf == "ies" else "")
            break
    if len(t) > 3 and t.endswith("e"):
        t = t[:-1]
    if len(t) > 3 and t[-1] == t[-2] and t[-1] not in "aeiousl":
        t = t[:-1]
    return t


def date_stems():
    global DATE_STEMS
    if DATE_STEMS is None:
        DATE_STEMS = {stem(w) for w in DATE_WORDS}
    return DATE_STEMS


def edit_distance(a: str, b: str) -> int:
    """Damerau-Levenshtein distance (optimal string alignment)."""
    la, lb = len(a), len(b)
    d = [[0] * (lb + 1) for _ in range(la + 1)]
    for i in range(la + 1):
        d[i][0] = i
    for j in range(lb + 1):
        d[0][j] = j
    for i in range(1, la + 1):
        for j in range(1, lb + 1):
            c = 0 if a[i - 1] == b[j - 1] else 1
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + c)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[la][lb]


def negative_of(a: str, b: str) -> bool:
    """True when b is a prefix-negated form of a (unmute, illegal, dislike)."""
    return len(a) >= 3 and any(b.startswith(p) and b[len(p):] == a for p in NEG_PREFIXES)


def same_word(a: str, b: str) -> bool:
    """Equal, equal stems, or a typo apart (not for numbers or negated forms)."""
    if a == b or stem(a) == stem(b):
        return True
    va, vb = number_value(a), number_value(b)
    if va is not None or vb is not None:
        return va == vb
    n = min(len(a), len(b))
    # Short words only forgive a dropped or doubled letter (aply, debt), never a
    # changed one (Mary, Mark).
    short_ok = n == 4 and len(a) != len(b) and a[0] == b[0]
    if (n >= 5 or short_ok) and edit_distance(a, b) <= (2 if n >= 8 else 1):
        return not (negative_of(a, b) or negative_of(b, a))
    return False


def number_value(w: str):
    if w[0].isdigit():
        return w.replace(",", "")
    v = NUMBER_WORDS.get(w)
    return None if v is None else str(v)


def canon(x: float) -> str:
    return str(int(x)) if x == int(x) else str(x)


def numbers(text: str) -> tuple[list[float], list[str]]:
    """Numeric values (digits and number words) and the am/pm markers after them."""
    words = [w.lower() for w, _, _ in split_words(text)]
    vals, meridiem = [], []
    for i, w in enumerate(words):
        if w[0].isdigit() or w in NUMBER_WORDS:
            v = w.replace(",", "") if w[0].isdigit() else str(NUMBER_WORDS[w])
            # A span in weeks is compared in days ("two weeks" = "14 days").
            if i + 1 < len(words) and words[i + 1] in ("week", "weeks"):
                try:
                    v = canon(float(v) * 7)
                except ValueError:
                    pass
            vals.append(v)
            if w[0].isdigit() and i + 1 < len(words) and words[i + 1] in ("am", "pm"):
                meridiem.append(words[i + 1])
    return sorted(vals), sorted(meridiem)


def check(a: str, b: str, enabled=("numbers", "dates", "negation", "entities", "roles", "antonyms", "contrast", "minimal")):
    ta, tb = tokens(a), tokens(b)
    sa, sb = {stem(t) for t in ta}, {stem(t) for t in tb}
    if "numbers" in enabled:
        (na, ma), (nb, mb) = numbers(a), numbers(b)
        # "a", "an" and "one" all say one: a lone 1 on one side is no conflict.
        if [v for v in na if v != "1"] != [v for v in nb if v != "1"]:
            return ("numbers", f"{na} vs {nb}")
        if ma and mb and ma != mb:
            return ("numbers", f"{ma} vs {mb}")
    if "dates" in enabled:
        da, db = sa & date_stems(), sb & date_stems()
        if da and db and da != db:
            return ("dates", f"{sorted(da)} vs {sorted(db)}")
    if "negation" in enabled:
        if sum(t in NEGATORS for t in ta) % 2 != sum(t in NEGATORS for t in tb) % 2:
            return ("negation", "one side is negated")
        for w in set(ta) - set(tb):
            for v in set(tb) - set(ta):
                if negative_of(w, v) or negative_of(v, w):
                    return ("negation", f"{w} vs {v}")
    if "entities" in enabled:
        ea, eb = entities(a), entities(b)
        la, lb = sa, sb
        aa, ab = acronyms(a), acronyms(b)
        ea = [stem(e) for e in ea if not (e in aa and spelled_out(e, tb))]
        eb = [stem(e) for e in eb if not (e in ab and spelled_out(e, ta))]
        for e in ea:
            if not any(same_word(e, t) for t in lb):
                return ("entities", f"{e} only in cached")
        for e in eb:
            if not any(same_word(e, t) for t in la):
                return ("entities", f"{e} only in query")
        order_a = [e for e in ea if e in eb]
        order_b = [e for e in eb if e in ea]
        if len(set(order_a)) > 1 and dedup(order_a) != dedup(order_b):
            return ("entities", "order differs")
    if "roles" in enabled:
        ra, rb = roles(ta), roles(tb)
        for w, role in ra.items():
            if rb.get(w, role) != role:
                return ("roles", f"{w} is a {role} on one side only")
    if "antonyms" in enabled:
        for left, right in ANTONYM_GROUPS:
            L, R = {stem(w) for w in left.split()}, {stem(w) for w in right.split()}
            if ((sa & L) - sb and (sb & R) - sa) or ((sa & R) - sb and (sb & L) - sa):
                return ("antonyms", f"{left.split()[0]} vs {right.split()[0]}")
        hz = {stem(w) for w in HAZARD_WORDS}
        if bool(sa & hz) != bool(sb & hz):
            return ("antonyms", "harm or avoidance on one side only")
    if "contrast" in enabled:
        for group in CONTRAST_SETS:
            ca, cb = classes(group, sa), classes(group, sb)
            if ca - cb and cb - ca:
                return ("contrast", f"{sorted(ca - cb)} vs {sorted(cb - ca)}")
    if "minimal" in enabled:
        r = minimal(ta, tb)
        if r:
            return r
    return None


def dedup(xs):
    out = []
    for x in xs:
        if not out or out[-1] != x:
            out.append(x)
    return out


def classes(group: str, stems: set[str]) -> set[int]:
    return {i for i, cls in enumerate(group.split()) if any(stem(w) in stems for w in cls.split("|"))}


def align(ta, tb):
    """Longest common subsequence under `same_word`; returns matched index pairs."""
    n, m = len(ta), len(tb)
    L = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            L[i][j] = L[i + 1][j + 1] + 1 if same_word(ta[i], tb[j]) else max(L[i + 1][j], L[i][j + 1])
    i = j = 0
    pairs = []
    while i < n and j < m:
        if same_word(ta[i], tb[j]) and L[i][j] == L[i + 1][j + 1] + 1:
            pairs.append((i, j))
            i += 1
            j += 1
        elif L[i + 1][j] >= L[i][j + 1]:
            i += 1
        else:
            j += 1
    return pairs


def abbreviates(short, long) -> bool:
    """One side is an acronym of the other ("fa" for "factor authentication")."""
    return len(short) == 1 and len(long) >= 2 and len(short[0]) == len(long) and all(
        w.startswith(c) for c, w in zip(short[0], long)
    )


def synonyms(xs, ys) -> bool:
    if abbreviates(xs, ys) or abbreviates(ys, xs):
        return True
    if len(xs) != 1 or len(ys) != 1:
        return False
    x, y = stem(xs[0]), stem(ys[0])
    return any(x in g and y in g for g in ({stem(w) for w in grp.split()} for grp in SYNONYM_GROUPS))


def scope_word(w: str) -> bool:
    s = stem(w)
    return any(s == stem(x) for grp in CONTRAST_SETS for cls in grp.split() for x in cls.split("|"))


def minimal(ta, tb):
    return minimal_directed(ta, tb) or minimal_directed(tb, ta)


def minimal_directed(ta, tb):
    """A minimal pair: the same sentence frame with one slot changed. The changed slot
    is what the question is about, so a substitution refuses unless the two words are
    near-synonyms, and an insertion refuses when it narrows the scope."""
    pairs = align(ta, tb)
    bounds = [(-1, -1)] + pairs + [(len(ta), len(tb))]
    hunks = []
    for (i0, j0), (i1, j1) in zip(bounds, bounds[1:]):
        xa = [t for t in ta[i0 + 1:i1] if t not in IGNORABLE]
        xb = [t for t in tb[j0 + 1:j1] if t not in IGNORABLE]
        if xa or xb:
            hunks.append((xa, xb))
    matched_content = sum(ta[i] not in IGNORABLE for i, _ in pairs)
    if len(hunks) != 1 or matched_content == 0:
        return None
    xa, xb = hunks[0]
    if xa and xb:
        if synonyms(xa, xb):
            return None
        return ("minimal", f"{xa} vs {xb}")
    inserted = xa or xb
    if any(scope_word(w) for w in inserted):
        return ("minimal", f"scope word {inserted} on one side only")
    return None


SOURCE = {"from", "off", "out"}
GOAL = {"to", "into", "onto"}


def roles(ts):
    """Direction of movement: the first content word after a source or goal preposition."""
    out = {}
    for i, t in enumerate(ts):
        role = "source" if t in SOURCE else "goal" if t in GOAL else None
        if role is None:
            continue
        for u in ts[i + 1:i + 4]:
            if u not in IGNORABLE:
                out.setdefault(stem(u), role)
                break
    return out
